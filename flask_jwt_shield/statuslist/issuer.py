"""The shield as Status Issuer and Status Provider (draft-ietf-oauth-status-list).

With ``JWT_SHIELD_STATUS_LIST`` on, every access token the shield issues gets an index in
the app's one status list and carries it: ``status: {status_list: {idx, uri}}``. Every
revocation sets the bits of the live tokens it covers, and :class:`StatusIssuer` renders
the list as a signed Status List Token for the endpoint (:mod:`.endpoint`).

Where the state lives. Indices, their holders and the bits are in the store
(:meth:`Store.status_claim <flask_jwt_shield.stores.base.Store.status_claim>` and beside
it), so allocation is collision-free across threads, processes and hosts, and the bits are
the same whichever process serves the list. An index is drawn at random (never in issue
order: the draft's privacy considerations), and given to another token only once its
holder has expired *and* every relying party's cached copy of the list that still spoke
for it has too (``exp`` + leeway + ``ttl``).

Races. A revocation writes a *mark* beside the bits, and a token that claims its index
after a mark that covers it starts ``INVALID``: whichever of "claim" and "revoke" comes
first, the bit ends up right (both are one atomic step in the store).

A leaf beside the token codec: it imports the codec, the config section and the store
protocol, never the per-app state.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import threading
import time
import typing as t

from ..config.settings import StatusListSettings
from ..stores.base import StatusHolder
from ..stores.base import StatusKind
from ..stores.base import status_candidates
from .codec import StatusList

if t.TYPE_CHECKING:
    from ..stores import Store
    from ..tokens import TokenCodec

__all__ = ["MEDIA_TYPE", "TOKEN_TYPE", "Rendered", "StatusIssuer", "StatusListFull"]

#: The JWT ``typ`` of a Status List Token, and the media type it is served as.
TOKEN_TYPE: t.Final = "statuslist+jwt"
MEDIA_TYPE: t.Final = "application/statuslist+jwt"
#: Candidates offered to the store per round trip, and round trips before giving up. With
#: the list at most half full, eight candidates all taken happen once in 256 claims.
CANDIDATES: t.Final = 8
ATTEMPTS: t.Final = 16


class StatusListFull(RuntimeError):
    """No free index was found: more live tokens than ``JWT_SHIELD_STATUS_LIST_SIZE``
    can hold. The message says what to change."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rendered:
    """One signed Status List Token, ready to serve."""

    token: str
    gzipped: bytes
    etag: str
    iat: int
    exp: int
    version: int


class StatusIssuer:
    """The status list of one app: index claims, revocation marks, the rendered token.

    :param settings: the ``JWT_SHIELD_STATUS_LIST*`` section.
    :param store: the app's store.
    :param codec: the app's token codec (its signing key signs the list).
    :param leeway: ``JWT_SHIELD_LEEWAY``: an index is held that much past its token's expiry.
    """

    def __init__(self, settings: StatusListSettings, store: Store, codec: TokenCodec, *, leeway: float) -> None:
        assert settings.status_list_uri is not None
        self.uri: str = settings.status_list_uri
        self.ttl = settings.status_list_ttl
        self.size = settings.status_list_size
        self.store = store
        self.codec = codec
        self.leeway = leeway
        self._lock = threading.Lock()
        self._rendered: Rendered | None = None

    # -- issuing -----------------------------------------------------------------------

    def reference(
        self,
        *,
        jti: str,
        sub: str,
        sid: str | None,
        kid: str | None,
        iat: float,
        exp: float,
        ends_at: float | None = None,
    ) -> dict[str, t.Any]:
        """The ``status`` claim of a new access token: an index claimed for it in the store.

        ``ends_at``: when the token's session ends by its absolute lifetime (the token's bit
        is set then, if the token is still alive). The same ``jti`` again gets the same index.

        :raises StoreError: the store cannot be reached.
        :raises StatusListFull: no free index.
        """
        now = time.time()
        holder = StatusHolder(
            jti=jti,
            sub=sub,
            sid=sid,
            kid=kid,
            iat=iat,
            # Not before every cached copy that spoke for this token is stale too.
            until=exp + self.leeway + self.ttl + 1,
            ends_at=ends_at,
        )
        for _ in range(ATTEMPTS):
            idx = self.store.status_claim(holder, status_candidates(self.size, CANDIDATES), now=now)
            if idx is not None:
                return {"status_list": {"idx": idx, "uri": self.uri}}
        raise StatusListFull(
            f"The status list found no free index among {ATTEMPTS * CANDIDATES} random ones: raise"
            f" JWT_SHIELD_STATUS_LIST_SIZE (now {self.size}) to at least twice the number of access"
            " tokens alive at once."
        )

    # -- revoking ----------------------------------------------------------------------

    def revoke(self, kind: StatusKind, value: str, *, until: float, at: float | None = None) -> int:
        """Set the bits of every live token that ``kind`` ``value`` names (for a subject:
        issued at or before ``at``), and of any that claims an index for such a token
        until ``until``. Returns how many bits changed.

        :raises StoreError: the store cannot be reached.
        """
        return self.store.status_mark(kind, value, at=at, until=until, now=time.time())

    # -- serving -----------------------------------------------------------------------

    def rendered(self) -> Rendered:
        """The current Status List Token: signed again only when a bit changed, or when
        the last one is half a ``ttl`` old (so that every copy served has at least
        one and a half ``ttl`` left before its ``exp``).

        :raises StoreError: the store cannot be reached.
        """
        now = time.time()
        with self._lock:
            last = self._rendered
            known = last.version if last is not None and now - last.iat < max(1.0, self.ttl / 2) else None
            version, data = self.store.status_bits(self.size, version=known, now=now)
            if data is None and last is not None:
                return last
            assert data is not None
            self._rendered = self._render(StatusList(bytearray(data)), version, now)
            return self._rendered

    def _render(self, statuses: StatusList, version: int, now: float) -> Rendered:
        iat = math.floor(now)
        exp = iat + 2 * self.ttl
        claims = {"sub": self.uri, "iat": iat, "exp": exp, "ttl": self.ttl, "status_list": statuses.to_json()}
        if self.codec.config.keys.issuer is not None:
            claims["iss"] = self.codec.config.keys.issuer
        token = self.codec.encode(claims, TOKEN_TYPE)
        body = token.encode("ascii")
        etag = hashlib.sha256(body).hexdigest()[:32]
        return Rendered(
            token=token, gzipped=gzip.compress(body, 9, mtime=0), etag=etag, iat=iat, exp=exp, version=version
        )
