"""Resource-server mode: the client of an identity provider's JWK Set (RFC 7517 §5).

The tokens of an API behind Auth0, Okta, Keycloak, Entra or Cognito are signed by keys the
API only knows from the provider's published JWK Set. :class:`JWKSClient` keeps that set:

* **HTTPS only** (plain ``http`` for ``127.0.0.1``/``localhost``/``::1`` only, for tests),
  also across redirects; one deadline over the whole fetch; a bounded response size (the
  fetching itself is :func:`.fetch.fetch`, shared with the status list client).
* **Cached**, and refreshed when the response's ``Cache-Control: max-age`` (else
  ``JWT_SHIELD_JWKS_CACHE_TTL``) runs out, never more often than ``JWT_SHIELD_JWKS_MIN_REFETCH``.
* **Refetched for an unknown** ``kid`` (a rotation at the provider) at most once per
  ``JWT_SHIELD_JWKS_MIN_REFETCH`` seconds, so tokens with random ``kid``\\ s cannot turn the
  API into a request cannon against the provider.
* **Never more than one thread waits** on the network: the thread that wins the fetch lock
  fetches; every other thread goes on with the cached keys at once.
* **The provider down**: cached keys keep working; with no usable key at all every token is
  refused with 503 (:class:`~flask_jwt_shield.errors.KeysUnavailable`) — signature checks
  never fail open, whatever ``JWT_SHIELD_FAIL_MODE`` says.
* **Key hygiene**: an entry that is not a public signing key the configuration allows (``use``
  other than ``sig``, an ``alg`` not allowed — encryption algorithms included —, ``oct``,
  private members, RSA under 2048 bits, a ``kid`` used twice, anything unparseable) is
  skipped on its own and logged at WARNING with its ``kid`` and the reason; the good keys
  beside it keep working. A key without ``alg`` serves each allowed algorithm of its ``kty``.
* Optional **OpenID Connect discovery**: the ``jwks_uri`` of
  ``ISSUER/.well-known/openid-configuration`` (whose ``issuer`` must be ISSUER exactly,
  OpenID Connect Discovery 1.0 §4.3).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
import typing as t

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from .config import ShieldConfig
from .config import check_url as check_url  # re-exported: tests import it from here
from .errors import InvalidToken
from .errors import KeysUnavailable
from .fetch import FetchError
from .fetch import fetch
from .jose import ALGORITHMS
from .jose import EC_CURVES
from .jose import EDDSA_CURVES
from .jose import KEY_TYPES
from .jose import PRIVATE_MEMBERS
from .jose import RESOURCE_SERVER_ALGORITHMS
from .jose import RSA_MIN_BITS
from .jose import JOSEError
from .jose import json_document
from .keys import Key
from .masking import mask_url

logger = logging.getLogger("flask_jwt_shield")

# What a key of each type may serve here: RS*/PS* (RSA), ES256/ES384 (EC), EdDSA (OKP).
_KTY_ALGORITHMS = {
    kty: tuple(alg for alg, of in KEY_TYPES.items() if of == kty and alg in RESOURCE_SERVER_ALGORITHMS)
    for kty in ("RSA", "EC", "OKP")
}
_MAX_BYTES = 512 * 1024  # the biggest real JWK Sets are a few KiB
_MAX_KEYS = 100
_MAX_TTL = 86_400.0  # a max-age of a year would pin a compromised key
_FIRST_RETRY = 1.0  # after a failed fetch: 1 s, 2 s, 4 s ... up to MIN_REFETCH


class JWKSError(Exception):
    """A JWK Set or discovery document could not be fetched or is not one."""


def _cache_seconds(cache_control: str | None) -> float | None:
    """``max-age`` of a ``Cache-Control`` value (0 for ``no-store``/``no-cache``), or ``None``."""
    if not cache_control:
        return None
    max_age: float | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            try:
                max_age = float(int(value.strip().strip('"')))
            except ValueError:
                continue
    return max_age


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    """A JWK Set entry that is not used, and why."""

    kid: str | None
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one fetched JWK Set, by ``(kid, alg)``."""

    keys: dict[tuple[str, str], Key]
    kids: frozenset[str]
    skipped: tuple[Skipped, ...] = ()
    #: What the usable entries say, to tell a changed set from the same one fetched again.
    fingerprint: frozenset[str] = frozenset()


def parse_jwks(document: t.Any, allowed: frozenset[str]) -> KeySet:
    """The usable signing keys of a JWK Set document; each other entry in ``skipped``.

    Raises :class:`JWKSError` when ``document`` is not a JWK Set at all.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSError("the document is not a JWK Set (no 'keys' list)")
    entries: list[t.Any] = document["keys"]
    if len(entries) > _MAX_KEYS:
        raise JWKSError(f"the JWK Set has {len(entries)} keys; more than {_MAX_KEYS} is not a real one")
    counts: dict[str, int] = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("kid"), str):
            counts[entry["kid"]] = counts.get(entry["kid"], 0) + 1
    keys: dict[tuple[str, str], Key] = {}
    skipped: list[Skipped] = []
    used: set[str] = set()
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        kid = kid if isinstance(kid, str) else None
        try:
            if kid is not None and counts[kid] > 1:
                # Two keys under one name: which one signed is for the attacker to choose.
                raise JWKSError("duplicate kid (every entry with this kid is skipped)")
            for key in _prepare(entry, kid, allowed):
                keys[(key.kid, key.alg)] = key
            used.add(json.dumps(entry, sort_keys=True, default=str))
        except JWKSError as exc:
            skipped.append(Skipped(kid, str(exc)))
    return KeySet(keys, frozenset(kid for kid, _ in keys), tuple(skipped), frozenset(used))


def _prepare(entry: t.Any, kid: str | None, allowed: frozenset[str]) -> list[Key]:
    if not isinstance(entry, dict):
        raise JWKSError("not a JSON object")
    if kid is None:
        raise JWKSError("no 'kid' (tokens could not name this key)")
    kty = entry.get("kty")
    if kty == "oct":
        raise JWKSError("symmetric (oct) key in a public JWK Set")
    private = [m for m in PRIVATE_MEMBERS if m in entry]
    if private:
        raise JWKSError(f"private key material ({', '.join(private)}) in a public JWK Set")
    use = entry.get("use")
    if use is not None and use != "sig":
        raise JWKSError(f"use is {use!r}, not 'sig'")
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise JWKSError(f"key_ops {ops!r} do not include 'verify'")
    if kty not in _KTY_ALGORITHMS:
        raise JWKSError(f"unsupported kty {kty!r}")
    alg = entry.get("alg")
    if alg is not None:
        if alg not in allowed:
            raise JWKSError(f"alg {alg!r} is not an allowed signing algorithm")
        if alg not in _KTY_ALGORITHMS[kty]:
            raise JWKSError(f"alg {alg!r} does not fit kty {kty!r}")
        algs = [alg]
    else:
        # RFC 7517 §4.4: alg is optional; the key then serves what the config allows for its type.
        algs = [a for a in _KTY_ALGORITHMS[kty] if a in allowed]
        if kty == "EC":
            algs = [a for a in algs if EC_CURVES[a] == entry.get("crv")]
        if not algs:
            raise JWKSError(f"no allowed algorithm for a {kty} key (crv {entry.get('crv')!r})")
    prepared: list[Key] = []
    for name in algs:
        algorithm = ALGORITHMS[name]
        if kty == "EC" and entry.get("crv") != EC_CURVES[name]:
            raise JWKSError(f"curve {entry.get('crv')!r} does not fit {name}")
        if kty == "OKP" and entry.get("crv") not in EDDSA_CURVES:
            raise JWKSError(f"curve {entry.get('crv')!r} is not an EdDSA curve")
        try:
            public = algorithm.from_jwk(entry)
        except Exception as exc:  # noqa: BLE001 - PyJWT and cryptography raise several types on garbage
            raise JWKSError(f"unparseable {kty} key ({type(exc).__name__})") from None
        if isinstance(public, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) or hasattr(public, "public_key"):
            raise JWKSError("private key material in a public JWK Set")
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < RSA_MIN_BITS:
            raise JWKSError(f"RSA key of {public.key_size} bits; at least {RSA_MIN_BITS} are required")
        prepared.append(Key(kid, name, algorithm, None, public, symmetric=False))
    return prepared


class JWKSClient:
    """The cached JWK Set of one identity provider. Thread-safe.

    :param url: the JWK Set URL, or ``None`` with ``discovery`` set.
    :param issuer: the issuer, for discovery (``ISSUER/.well-known/openid-configuration``).
    :param allowed: the signing algorithms the configuration allows.
    :param cache_ttl: seconds a set is kept when the response sets no ``Cache-Control``.
    :param min_refetch: the least seconds between two fetches, whatever triggers them.
    :param timeout: seconds for each network wait; twice this bounds a whole fetch (connect,
        TLS, status line, headers, body and redirects together).
    """

    def __init__(
        self,
        url: str | None,
        *,
        allowed: frozenset[str],
        issuer: str | None = None,
        discovery: bool = False,
        cache_ttl: float = 300.0,
        min_refetch: float = 30.0,
        timeout: float = 3.0,
    ) -> None:
        if url is None and not (discovery and issuer):
            raise ValueError("give a JWK Set URL, or an issuer with discovery=True")
        if url is not None:
            check_url(url, "JWK Set URL")
        if issuer is not None and discovery:
            check_url(issuer, "issuer")
        outside = set(allowed) - RESOURCE_SERVER_ALGORITHMS
        if outside or not allowed:
            raise ValueError(f"a resource server verifies asymmetric algorithms only, not {sorted(outside)}")
        self.url = url
        self.issuer = issuer
        self.discovery = discovery
        self.allowed = frozenset(allowed)
        self.cache_ttl = float(cache_ttl)
        self.min_refetch = float(min_refetch)
        self.timeout = float(timeout)
        #: Bumped whenever the usable keys change: callers drop what they cached for old ones.
        self.generation = 0
        #: Fetches tried (successful or not), for tests and monitoring.
        self.fetches = 0
        #: Why the last fetch failed, or ``None`` after a success.
        self.last_error: str | None = None
        self._set: KeySet | None = None
        self._jwks_url: str | None = url
        self._expires_at = -math.inf  # when the cached set is due for a refresh
        self._last_attempt = -math.inf
        self._retry_at = -math.inf  # after a failure: no new attempt before this
        #: No scheduled refresh before this instant (the later of the two above): the hot
        #: path compares one float instead of calling :meth:`refresh_if_due`.
        self.next_check = -math.inf
        self._failures = 0
        self._logged: set[Skipped] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: ShieldConfig) -> JWKSClient:
        """The client of resource-server mode (``JWT_SHIELD_JWKS_URL`` or discovery)."""
        return cls(
            config.remote.jwks_url,
            allowed=frozenset(config.keys.allowed_algorithms or ()),
            issuer=config.keys.issuer,
            discovery=config.remote.oidc_discovery,
            cache_ttl=config.remote.jwks_cache_ttl,
            min_refetch=config.remote.jwks_min_refetch,
            timeout=config.remote.jwks_timeout,
        )

    # -- what the verifier asks ---------------------------------------------------------

    def key(self, kid: str, alg: str) -> Key:
        """The key ``kid`` for ``alg``.

        Raises :class:`~flask_jwt_shield.errors.InvalidToken` for a ``kid`` the provider
        does not publish (after a refetch, where one is allowed) or a key that does not
        serve ``alg``, and :class:`~flask_jwt_shield.errors.KeysUnavailable` while no usable
        key is known.
        """
        self.refresh_if_due()
        keys = self._set
        if keys is not None:
            found = keys.keys.get((kid, alg))
            if found is not None:
                return found
            if kid in keys.kids:
                raise InvalidToken("The token's algorithm does not match its key.", reason="bad-alg")
        # Unknown kid: the provider may have rotated. Refetch, but only so often.
        if self._fetch_if_free(self._refetch_allowed):
            keys = self._set
            if keys is not None:
                found = keys.keys.get((kid, alg))
                if found is not None:
                    return found
                if kid in keys.kids:
                    raise InvalidToken("The token's algorithm does not match its key.", reason="bad-alg")
        if keys is None or not keys.keys:
            raise self.unavailable()
        raise InvalidToken("The token's key is unknown.", reason="unknown-kid")

    def refresh_if_due(self) -> None:
        """Refresh the set when its cache time ran out (one thread fetches, none waits)."""
        self._fetch_if_free(self._due)

    def _due(self) -> bool:
        now = time.time()
        return now >= self._expires_at and now >= self._retry_at

    def _refetch_allowed(self) -> bool:
        now = time.time()
        return now - self._last_attempt >= self.min_refetch and now >= self._retry_at

    def unavailable(self) -> KeysUnavailable:
        """The 503 for "no usable key", with a ``Retry-After`` for the next attempt."""
        wait = max(1, math.ceil(self._retry_at - time.time())) if self._failures else 1
        return KeysUnavailable(retry_after=wait)

    @property
    def key_set(self) -> KeySet | None:
        """The keys in use, or ``None`` before the first successful fetch."""
        return self._set

    # -- fetching -------------------------------------------------------------------------

    def _fetch_if_free(self, wanted: t.Callable[[], bool]) -> bool:
        """Fetch now if ``wanted()`` and no other thread is fetching; True when fetched."""
        if not wanted():
            return False
        if not self._lock.acquire(blocking=False):
            return False  # another thread is on it: go on with what is cached, don't wait
        try:
            # Asked again under the lock: the thread before us may have just fetched.
            if not wanted():
                return False
            self._last_attempt = time.time()
            self.fetches += 1
            try:
                keys, ttl = self._download()
            except JWKSError as exc:
                self.last_error = str(exc)
                self._failures += 1
                backoff = min(self.min_refetch, _FIRST_RETRY * 2 ** (self._failures - 1))
                self._retry_at = time.time() + max(backoff, 0.0)
                self.next_check = max(self._expires_at, self._retry_at)
                state = "keeping the cached keys" if self._set is not None else "no keys yet: requests get 503"
                where = mask_url(self._jwks_url or self.issuer or "")
                logger.warning("JWK Set fetch from %s failed (%s); %s", where, exc, state)
                return True
            self._failures = 0
            self.last_error = None
            self._retry_at = -math.inf
            self._log_skipped(keys)
            if self._set is None or self._set.fingerprint != keys.fingerprint:
                self.generation += 1
            self._set = keys
            self._expires_at = time.time() + ttl
            self.next_check = self._expires_at
            return True
        finally:
            self._lock.release()

    def _download(self) -> tuple[KeySet, float]:
        if self._jwks_url is None:
            self._jwks_url = self._discover()
        document, cache_control = self._get_json(self._jwks_url)
        keys = parse_jwks(document, self.allowed)
        max_age = _cache_seconds(cache_control)
        ttl = self.cache_ttl if max_age is None else max_age
        # Never sooner than MIN_REFETCH (a "no-cache" set must not mean a fetch per request),
        # never later than a day (a compromised key removed at the provider must go).
        return keys, min(max(ttl, self.min_refetch), _MAX_TTL)

    def _discover(self) -> str:
        assert self.issuer is not None
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document, _ = self._get_json(url)
        if not isinstance(document, dict):
            raise JWKSError("the discovery document is not a JSON object")
        if document.get("issuer") != self.issuer:
            # OpenID Connect Discovery 1.0 §4.3: the issuer must match exactly.
            raise JWKSError(f"the discovery document names issuer {document.get('issuer')!r}, not {self.issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise JWKSError("the discovery document has no 'jwks_uri'")
        try:
            return check_url(jwks_uri, "jwks_uri")
        except ValueError as exc:
            raise JWKSError(str(exc)) from None

    def _get_json(self, url: str) -> tuple[t.Any, str | None]:
        try:
            fetched = fetch(url, timeout=self.timeout, max_bytes=_MAX_BYTES)
        except FetchError as exc:
            raise JWKSError(str(exc)) from None
        try:
            return json_document(fetched.body), fetched.cache_control
        except JOSEError:
            raise JWKSError("the response is not JSON") from None

    def _log_skipped(self, keys: KeySet) -> None:
        # Each unusable entry is logged once per process, not at every refresh.
        for entry in keys.skipped:
            if entry not in self._logged and len(self._logged) < 1000:
                self._logged.add(entry)
                logger.warning("JWK Set entry skipped: kid %r: %s", entry.kid, entry.reason)
