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

from .. import cbor
from .. import cose
from ..config.settings import StatusListSettings
from ..stores.base import StatusClaim
from ..stores.base import StatusHolder
from ..stores.base import StatusKind
from ..stores.base import status_candidates
from .codec import StatusList

if t.TYPE_CHECKING:
    from ..stores import Store
    from ..tokens import TokenCodec

__all__ = ["CWT_MEDIA_TYPE", "MEDIA_TYPE", "MEDIA_TYPES", "TOKEN_TYPE", "Rendered", "StatusIssuer", "StatusListFull"]

#: The JWT ``typ`` of a Status List Token, and the media type it is served as.
TOKEN_TYPE: t.Final = "statuslist+jwt"
MEDIA_TYPE: t.Final = "application/statuslist+jwt"
#: The CWT form's media type, also its protected ``typ`` header (draft: "Status List Token
#: in CWT Format").
CWT_MEDIA_TYPE: t.Final = "application/statuslist+cwt"
#: Every form served, the default first.
MEDIA_TYPES: t.Final = (MEDIA_TYPE, CWT_MEDIA_TYPE)
#: CWT claim keys: RFC 8392 §4 (iss, sub, exp, iat), and the keys the draft asks IANA for
#: ("CBOR Web Token Claims Registration": ttl 65534, status_list 65533).
_CWT_ISS, _CWT_SUB, _CWT_EXP, _CWT_IAT, _CWT_TTL, _CWT_STATUS_LIST = 1, 2, 4, 6, 65534, 65533
#: Candidates offered to the store per round trip, and round trips before giving up. With
#: the list at most half full, eight candidates all taken happen once in 256 claims.
CANDIDATES: t.Final = 8
ATTEMPTS: t.Final = 16


class StatusListFull(RuntimeError):
    """No free index was found: more live tokens than ``JWT_SHIELD_STATUS_LIST_SIZE``
    can hold. The message says what to change."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rendered:
    """One signed Status List Token in one form, ready to serve."""

    media_type: str
    #: The token's bytes: the JWS Compact Serialization (ASCII), or the CWT's CBOR.
    body: bytes
    #: ``body`` gzipped, or ``None`` when gzip would not make it smaller (the CWT: its one
    #: large item is the list, DEFLATE already).
    gzipped: bytes | None
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
        self._rendered: dict[str, Rendered] = {}

    # -- issuing -----------------------------------------------------------------------

    def request(
        self,
        *,
        jti: str,
        sub: str,
        sid: str | None,
        kid: str | None,
        iat: float,
        exp: float,
        ends_at: float | None = None,
    ) -> StatusClaim:
        """A first claim of an index for a new access token, for the store to make along
        with its own write (:meth:`Store.create_family
        <flask_jwt_shield.stores.base.Store.create_family>`, :meth:`Store.rotate
        <flask_jwt_shield.stores.base.Store.rotate>`), or for :meth:`reference` alone.

        ``ends_at``: when the token's session ends by its absolute lifetime (the token's bit
        is set then, if the token is still alive). The same ``jti`` again gets the same index.
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
        return StatusClaim(holder, status_candidates(self.size, CANDIDATES), now)

    def reference(self, claim: StatusClaim) -> dict[str, t.Any]:
        """The ``status`` claim of a new access token: the index ``claim`` got, or else one
        claimed for it now (the store's write found none free among its candidates, or did
        not make the claim).

        :raises StoreError: the store cannot be reached.
        :raises StatusListFull: no free index.
        """
        idx = claim.idx
        attempts = ATTEMPTS - 1 if claim.made else ATTEMPTS
        for _ in range(attempts):
            if idx is not None:
                break
            idx = self.store.status_claim(claim.holder, status_candidates(self.size, CANDIDATES), now=claim.now)
        if idx is None:
            raise StatusListFull(
                f"The status list found no free index among {ATTEMPTS * CANDIDATES} random ones: raise"
                f" JWT_SHIELD_STATUS_LIST_SIZE (now {self.size}) to at least twice the number of access"
                " tokens alive at once."
            )
        claim.idx, claim.made = idx, True
        return {"status_list": {"idx": idx, "uri": self.uri}}

    # -- revoking ----------------------------------------------------------------------

    def revoke(self, kind: StatusKind, value: str, *, until: float, at: float | None = None) -> int:
        """Set the bits of every live token that ``kind`` ``value`` names (for a subject:
        issued at or before ``at``), and of any that claims an index for such a token
        until ``until``. Returns how many bits changed.

        :raises StoreError: the store cannot be reached.
        """
        return self.store.status_mark(kind, value, at=at, until=until, now=time.time())

    # -- serving -----------------------------------------------------------------------

    def rendered(self, media_type: str = MEDIA_TYPE) -> Rendered:
        """The current Status List Token in the form ``media_type`` names (one of
        :data:`MEDIA_TYPES`): signed again only when a bit changed, or when the last one is
        half a ``ttl`` old (so that every copy served has at least one and a half ``ttl``
        left before its ``exp``). Each form is rendered when first asked for.

        :raises StoreError: the store cannot be reached.
        """
        now = time.time()
        with self._lock:
            last = self._rendered.get(media_type)
            known = last.version if last is not None and now - last.iat < max(1.0, self.ttl / 2) else None
            version, data = self.store.status_bits(self.size, version=known, now=now)
            if data is None and last is not None:
                return last
            assert data is not None
            rendered = self._render(StatusList(bytearray(data)), version, now, media_type)
            self._rendered[media_type] = rendered
            return rendered

    def _render(self, statuses: StatusList, version: int, now: float, media_type: str) -> Rendered:
        iat = math.floor(now)
        exp = iat + 2 * self.ttl
        issuer = self.codec.config.keys.issuer
        if media_type == CWT_MEDIA_TYPE:
            body = self._cwt(statuses, iat, exp, issuer)
        else:
            claims = {"sub": self.uri, "iat": iat, "exp": exp, "ttl": self.ttl, "status_list": statuses.to_json()}
            if issuer is not None:
                claims["iss"] = issuer
            body = self.codec.encode(claims, TOKEN_TYPE).encode("ascii")
        zipped = gzip.compress(body, 9, mtime=0)
        gzipped = zipped if len(zipped) < len(body) else None
        etag = hashlib.sha256(body).hexdigest()[:32]
        return Rendered(media_type=media_type, body=body, gzipped=gzipped, etag=etag, iat=iat, exp=exp, version=version)

    def _cwt(self, statuses: StatusList, iat: int, exp: int, issuer: str | None) -> bytes:
        """The CWT form: a tagged COSE_Sign1 (COSE_Mac0 for an HMAC key) over the claims,
        untagged as a CWT (the draft: MUST NOT carry the CWT tag)."""
        key = self.codec.keys.signing_key
        if key is None:  # the issuer exists only where the shield issues tokens
            raise RuntimeError("The status list needs a signing key.")
        claims: dict[int, t.Any] = {
            _CWT_SUB: self.uri,
            _CWT_IAT: iat,
            _CWT_EXP: exp,
            _CWT_TTL: self.ttl,
            _CWT_STATUS_LIST: statuses.to_cbor(),
        }
        if issuer is not None:
            claims[_CWT_ISS] = issuer
        signing = key.signing
        return cose.message(
            cbor.encode(claims),
            alg=key.alg,
            kid=key.kid,
            typ=CWT_MEDIA_TYPE,
            sign=lambda data: key.algorithm.sign(data, signing),
        )
