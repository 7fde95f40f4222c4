"""Token Status Lists in resource-server mode: the Relying Party's side of
draft-ietf-oauth-status-list ("Verification and Processing", "Validation Rules").

A token from the configured issuer may carry ``status: {status_list: {idx, uri}}``. After
the token itself verified (signature, type, claims, times: the draft's rules put those
first), :meth:`StatusListClient.check` looks its index up in the Status List Token found at
``uri``:

* **Warm path**: a dict lookup by ``uri``, one float comparison, a bit lookup. No lock.
* **Which URIs**: only under ``JWT_SHIELD_STATUS_LIST_ALLOWED_URIS`` (by default the issuer's
  origin), also across redirects, so a token cannot make this server fetch any URL it names.
* **Fetching**: :func:`~flask_jwt_shield.fetch.fetch`, the JWK Set's hygiene (HTTPS, one
  deadline, a size bound); one fetch per URI at a time -- the thread that wins the URI's
  lock fetches, every other thread goes on with what is cached and never waits.
* **The Status List Token** (draft §"Status List Token in JWT Format"): header ``typ``
  ``statuslist+jwt``, an allowed ``alg``, a ``kid`` of the issuer's JWK Set and a valid
  signature; ``sub`` equal to the token's ``uri``; ``iat`` (not in the future, never older
  than the list in hand: an old list replayed by a cache cannot undo a revocation); ``exp``
  not passed; ``ttl`` a positive number; ``iss``, when present, the configured issuer;
  ``status_list`` decoded with a bound on its decompressed size.
* **Caching** (draft §"Status List Update Interval and Caching"): refetched ``ttl`` after
  the fetch, ``ttl`` raised to ``JWT_SHIELD_STATUS_LIST_MIN_TTL`` and cut to
  ``JWT_SHIELD_STATUS_LIST_MAX_TTL`` (the maximum when the list has none), never later than
  its ``exp``. HTTP caching headers are ignored: the draft gives ``exp`` and ``ttl``
  precedence.
* **The issuer unreachable**: the list in hand serves for ``JWT_SHIELD_STATUS_LIST_MAX_STALE``
  seconds past its refresh time (never past its ``exp``), retried after 1, 2, 4 ... seconds
  up to the minimum ttl; then :class:`StatusListUnavailable`, which the pipeline turns into
  the configured fail mode.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import typing as t
import urllib.parse
from collections.abc import Mapping

from ..config import ShieldConfig
from ..errors import InvalidToken
from ..errors import KeysUnavailable
from ..errors import RevokedToken
from ..fetch import FetchError
from ..fetch import fetch
from ..jose import JOSEError
from ..jose import b64decode
from ..jose import segment_object
from ..jose import signature_valid
from ..jose import split_compact
from ..masking import mask_url
from .codec import INVALID
from .codec import SUSPENDED
from .codec import VALID
from .codec import StatusList
from .codec import StatusListError

if t.TYPE_CHECKING:
    from ..jwks import JWKSClient

logger = logging.getLogger("flask_jwt_shield")

#: The media type of a Status List Token in JWT format (draft §"Status List Request").
MEDIA_TYPE = "application/statuslist+jwt"
# The header typ, with its media-type spelling (RFC 7515 §4.1.9); compared case-insensitively.
_TYPES = frozenset({"statuslist+jwt", "application/statuslist+jwt"})
_MAX_LISTS = 100  # distinct lists kept; a real issuer uses a handful
_MAX_URI = 2048
_MAX_REDIRECTS = 5
_FIRST_RETRY = 1.0  # after a failed fetch: 1 s, 2 s, 4 s ... up to the minimum ttl
_IAT_TOLERANCE = 1.0  # as for access tokens: an iat a hair ahead of this clock


class StatusListUnavailable(Exception):
    """No usable Status List Token for ``uri``: never fetched, or past its stale bound or its
    ``exp`` while the issuer cannot be reached. The pipeline applies the fail mode."""

    def __init__(self, uri: str, error: str, retry_after: int) -> None:
        super().__init__(error)
        self.uri = uri
        self.error = error
        self.retry_after = retry_after


class StatusListTokenError(Exception):
    """A fetched Status List Token that is not acceptable; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class CachedList:
    """One verified Status List Token, as the warm path reads it."""

    statuses: StatusList
    #: When to fetch again (``ttl`` after the fetch, clamped; never after ``exp``).
    refresh_at: float
    #: Until when it may still serve while no fresh one can be fetched.
    usable_until: float
    #: Its ``iat``: a later fetch must not be older.
    iat: float
    #: The list's bytes, width and mask, for the warm path's inlined lookup.
    data: bytes = b""
    bits: int = 1
    mask: int = 1


class _Source:
    """The fetching state of one status list URI (touched under its lock only)."""

    __slots__ = ("failures", "last_error", "lock", "retry_at", "uri")

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.lock = threading.Lock()
        self.failures = 0
        self.retry_at = -math.inf
        self.last_error: str | None = None


def _prefix_parts(prefix: str) -> tuple[str, str, str]:
    parts = urllib.parse.urlsplit(prefix)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path


class StatusListClient:
    """The cached Status List Tokens of one issuer. Thread-safe.

    :param keys: the issuer's JWK Set (:class:`~flask_jwt_shield.jwks.JWKSClient`), whose
        keys verify the Status List Tokens as they verify the access tokens.
    :param prefixes: the URI prefixes a token's ``uri`` must start with.
    """

    def __init__(
        self,
        keys: JWKSClient,
        *,
        prefixes: t.Iterable[str],
        issuer: str | None = None,
        min_ttl: float = 10.0,
        max_ttl: float = 300.0,
        max_stale: float = 60.0,
        max_bytes: int = 4 * 1024 * 1024,
        timeout: float = 3.0,
        leeway: float = 0.0,
    ) -> None:
        self.keys = keys
        self.prefixes = tuple(prefixes)
        self._prefixes = tuple(_prefix_parts(p) for p in self.prefixes)
        self.issuer = issuer
        self.min_ttl = float(min_ttl)
        self.max_ttl = float(max_ttl)
        self.max_stale = float(max_stale)
        self.max_bytes = int(max_bytes)
        self.timeout = float(timeout)
        self.leeway = float(leeway)
        #: Fetches tried (successful or not), for tests and monitoring.
        self.fetches = 0
        # uri -> the verified list; replaced whole, read without a lock.
        self._lists: dict[str, CachedList] = {}
        self._sources: dict[str, _Source] = {}

    @classmethod
    def from_config(cls, config: ShieldConfig, keys: JWKSClient) -> StatusListClient:
        """The client of resource-server mode, from the ``JWT_SHIELD_STATUS_LIST_*`` keys."""
        remote = config.remote
        return cls(
            keys,
            prefixes=remote.status_list_allowed_uris,
            issuer=config.keys.issuer,
            min_ttl=remote.status_list_min_ttl,
            max_ttl=remote.status_list_max_ttl,
            max_stale=remote.status_list_max_stale,
            max_bytes=remote.status_list_max_bytes,
            timeout=remote.jwks_timeout,
            leeway=config.keys.leeway,
        )

    # -- what the pipeline asks ---------------------------------------------------------

    def check(self, claims: Mapping[str, t.Any]) -> None:
        """Refuse the verified token of ``claims`` unless its status is ``VALID``.

        :raises InvalidToken: a ``status`` claim that is malformed, names no status list, a
            URI outside the allowed prefixes, or an index outside its list (draft: "MUST be
            rejected").
        :raises RevokedToken: any status other than ``VALID`` (``INVALID``, ``SUSPENDED``,
            an application's value).
        :raises StatusListUnavailable: no usable list (the fail mode decides).
        """
        status = claims.get("status")
        if status is None:
            return
        # isinstance(dict), not Mapping: verified claims are dicts, and an ABC check costs
        # more than the rest of this warm path (benchmarks/RESULTS.md, the status list row).
        reference = status.get("status_list") if isinstance(status, dict) else None
        if not isinstance(reference, dict):
            raise _malformed(status)
        uri = reference.get("uri")
        idx = reference.get("idx")
        if type(idx) is not int or idx < 0 or type(uri) is not str:  # bool is no index
            raise _malformed(status)
        cached = self._lists.get(uri)
        if cached is None or time.time() >= cached.refresh_at:
            cached = self._resolve(uri)
        # StatusList.__getitem__, inlined: the draft's bit order, least significant first.
        position = idx * cached.bits
        try:
            value = (cached.data[position >> 3] >> (position & 7)) & cached.mask
        except IndexError:
            raise InvalidToken(
                "The token's status list index is outside its status list.", reason="status-list-index"
            ) from None
        if value != VALID:
            raise _revoked(uri, idx, value)

    # -- the cold path ------------------------------------------------------------------

    def _resolve(self, uri: str) -> CachedList:
        """The list for ``uri`` when none is cached or it is due: fetch it if no other thread
        is fetching it, else (or on failure) serve the one in hand within its stale bound."""
        source = self._sources.get(uri)
        if source is None:
            self.check_uri(uri)
            if len(self._sources) >= _MAX_LISTS:
                self._forget_oldest()
            source = self._sources.setdefault(uri, _Source(uri))
        if source.lock.acquire(blocking=False):
            try:
                # Asked again under the lock: the thread before us may have just fetched.
                cached = self._lists.get(uri)
                now = time.time()
                if (cached is None or now >= cached.refresh_at) and now >= source.retry_at:
                    self._refresh(source, cached)
            finally:
                source.lock.release()
        cached = self._lists.get(uri)
        if cached is not None and time.time() < cached.usable_until:
            return cached
        wait = max(1, math.ceil(source.retry_at - time.time())) if source.failures else 1
        error = source.last_error or "the status list is being fetched"
        if cached is not None:
            error = f"the status list is out of date ({error})"
        raise StatusListUnavailable(uri, error, wait)

    def _forget_oldest(self) -> None:
        try:
            oldest = next(iter(self._sources))
            del self._sources[oldest]
            self._lists.pop(oldest, None)
        except (KeyError, RuntimeError, StopIteration):  # another thread got there first
            pass

    def check_uri(self, uri: str) -> None:
        """Refuse a status list URI outside the allowed prefixes (:class:`InvalidToken`)."""
        if not self._allowed(uri):
            raise InvalidToken("The token names a status list this server does not fetch.", reason="status-list-uri")

    def _allowed(self, uri: str) -> bool:
        if len(uri) > _MAX_URI:
            return False
        try:
            parts = urllib.parse.urlsplit(uri)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return False
        if parts.username is not None or parts.password is not None or parts.fragment:
            return False
        # No dot segments, plain or escaped: the server would resolve them out of the prefix.
        segments = urllib.parse.unquote(parts.path).split("/")
        if "." in segments or ".." in segments or "\\" in parts.path:
            return False
        scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
        for p_scheme, p_netloc, p_path in self._prefixes:
            if scheme == p_scheme and netloc == p_netloc:
                if p_path.endswith("/") and parts.path.startswith(p_path):
                    return True
                if parts.path == p_path or parts.path.startswith(p_path + "/"):
                    return True
        return False

    def _redirect_allowed(self, url: str) -> None:
        if not self._allowed(url):
            raise ValueError(f"redirect to {mask_url(url)}, outside the allowed status list URIs")

    def _refresh(self, source: _Source, cached: CachedList | None) -> None:
        """Fetch and verify ``source``'s list (its lock held); on failure keep what is cached."""
        uri = source.uri
        self.fetches += 1
        try:
            fetched = fetch(
                uri,
                timeout=self.timeout,
                max_bytes=self.max_bytes,
                accept=MEDIA_TYPE,
                allow=self._redirect_allowed,
                max_redirects=_MAX_REDIRECTS,
            )
            fresh = self.verify(uri, fetched.body, previous=cached)
        except (FetchError, StatusListTokenError) as exc:
            source.last_error = str(exc)
            source.failures += 1
            backoff = min(self.min_ttl, _FIRST_RETRY * 2 ** min(source.failures - 1, 30))
            source.retry_at = time.time() + backoff
            state = "keeping the list in hand" if cached is not None else "no list yet"
            logger.warning("Status list fetch from %s failed (%s); %s", mask_url(uri), exc, state)
            return
        source.failures = 0
        source.last_error = None
        source.retry_at = -math.inf
        self._lists[uri] = fresh

    # -- the Status List Token ----------------------------------------------------------

    def verify(self, uri: str, body: bytes, *, previous: CachedList | None = None) -> CachedList:
        """Verify the Status List Token ``body`` fetched from ``uri``.

        :raises StatusListTokenError: with the reason.
        """
        try:
            token = body.strip().decode("ascii")
            header_segment, payload_segment, signature_segment = split_compact(token)
            header = segment_object(header_segment)
        except (UnicodeDecodeError, JOSEError):
            raise StatusListTokenError("the response is not a JWT") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _TYPES:
            raise StatusListTokenError(f"header typ is {typ!r}, not 'statuslist+jwt'")
        if "crit" in header:
            raise StatusListTokenError("the token uses an unsupported critical extension")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.keys.allowed:
            raise StatusListTokenError(f"alg {alg!r} is not allowed")
        if not isinstance(kid, str) or not kid or len(kid) > 255:
            raise StatusListTokenError("no 'kid' in the header")
        try:
            key = self.keys.key(kid, alg)
        except (InvalidToken, KeysUnavailable) as exc:
            raise StatusListTokenError(f"no key to verify it ({exc.reason})") from None
        try:
            signature = b64decode(signature_segment)
        except JOSEError:
            raise StatusListTokenError("the response is not a JWT") from None
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
        if not signature_valid(key.algorithm, key.verifying, signing_input, signature):
            raise StatusListTokenError("the signature is invalid")
        try:
            claims = segment_object(payload_segment)
        except JOSEError:
            raise StatusListTokenError("the payload is not a JSON object") from None
        return self._cached(uri, claims, previous)

    def _cached(self, uri: str, claims: dict[str, t.Any], previous: CachedList | None) -> CachedList:
        now = time.time()
        if claims.get("sub") != uri:
            # Draft: sub MUST equal the uri of the Referenced Token, so that a list signed
            # for another URI cannot stand in for this one.
            raise StatusListTokenError("its 'sub' is not the URI it was fetched from")
        if self.issuer is not None and "iss" in claims and claims["iss"] != self.issuer:
            raise StatusListTokenError("its 'iss' is not the configured issuer")
        iat = _number(claims, "iat", required=True)
        exp = _number(claims, "exp", required=False)
        nbf = _number(claims, "nbf", required=False)
        ttl = _number(claims, "ttl", required=False)
        assert iat is not None
        if iat > now + self.leeway + _IAT_TOLERANCE:
            raise StatusListTokenError("it was issued in the future")
        if nbf is not None and nbf > now + self.leeway:
            raise StatusListTokenError("it is not valid yet")
        if exp is not None and now >= exp + self.leeway:
            raise StatusListTokenError("it expired")
        if ttl is not None and ttl <= 0:
            raise StatusListTokenError("its 'ttl' is not a positive number")
        if previous is not None and iat < previous.iat:
            # A cache or a replay serving an older list would undo the revocations since.
            raise StatusListTokenError("it is older than the list in hand")
        try:
            statuses = StatusList.from_json(claims.get("status_list"), max_bytes=self.max_bytes)
        except StatusListError as exc:
            raise StatusListTokenError(str(exc)) from None
        # Draft §"Expiration and Caching": the ttl within bounds this server chose.
        cache_for = min(max(ttl if ttl is not None else self.max_ttl, self.min_ttl), self.max_ttl)
        end = exp + self.leeway if exp is not None else math.inf
        refresh_at = min(now + cache_for, end)
        return CachedList(
            statuses,
            refresh_at,
            min(refresh_at + self.max_stale, end),
            iat,
            bytes(statuses.data),
            statuses.bits,
            (1 << statuses.bits) - 1,
        )

    # -- for operators and tests --------------------------------------------------------

    def last_error(self, uri: str) -> str | None:
        """Why the last fetch of ``uri`` failed, or ``None``."""
        source = self._sources.get(uri)
        return source.last_error if source is not None else None

    def cached(self, uri: str) -> CachedList | None:
        """The list in hand for ``uri``, if any."""
        return self._lists.get(uri)


def _number(claims: Mapping[str, t.Any], name: str, *, required: bool) -> float | None:
    value: t.Any = claims.get(name)
    if value is None and not required:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or abs(value) >= 2**53:
        raise StatusListTokenError(f"its '{name}' claim is missing or not a number")
    return float(value)


def _malformed(status: object) -> InvalidToken:
    if isinstance(status, dict) and "status_list" not in status:
        # A status mechanism this server cannot check: accepting the token would make its
        # revocation ineffective here without anyone noticing.
        return InvalidToken(
            "The token's status claim names no status list this server can check.", reason="status-unsupported"
        )
    return InvalidToken("The token's status claim is malformed.", reason="status-malformed")


_STATUS_WORDS = {INVALID: "revoked", SUSPENDED: "suspended"}


def _revoked(uri: str, idx: int, value: int) -> RevokedToken:
    word = _STATUS_WORDS.get(value)
    if word is not None:
        error = RevokedToken(f"The access token was {word} by its issuer (status list).", reason=f"{word}-status-list")
    else:
        error = RevokedToken(
            f"The access token's status is not valid (status list, status 0x{value:02X}).", reason="status-list-status"
        )
    error.detail = {"status_list": mask_url(uri), "idx": idx, "status_value": value}
    return error
