"""Device Bound Session Credentials (DBSC) for cookie sessions: the server side.

Follows the W3C Web Application Security Working Group's Editor's Draft
(https://w3c.github.io/webappsec-dbsc/, ``spec.bs`` of February 2026): the browser keeps a
private key (in hardware where it can) and proves possession of it to renew a short-lived
*bound cookie*, so a cookie set copied off the machine stops working within minutes.

1. **Registration offer.** At a login, :meth:`JWTShield.set_cookies
   <flask_jwt_shield.JWTShield.set_cookies>` sends ``Secure-Session-Registration:
   (ES256 RS256);path="...";challenge="..."`` -- a one-time challenge bound to the new session.
2. **Registration** (:func:`register`). The browser posts a JWT (``typ`` ``dbsc+jwt``) signed
   by its new key, with the public key in the header and the challenge as ``jti``, in
   ``Secure-Session-Response``. The session moves to a new family whose claims hold the key
   (``dbsc``: its RFC 7638 thumbprint and the public JWK; both tokens carry it, like ``cnf``),
   the old family is revoked, and the answer is the session instructions (JSON) with the
   new cookies and the bound cookie ``__Host-jws_dbsc``.
3. **Refresh** (:func:`refresh`). When the bound cookie is gone, the browser posts
   ``Sec-Secure-Session-Id``; without a proof it gets 403 and ``Secure-Session-Challenge``,
   then proves its key over that challenge; the session rotates (:func:`sessions.refresh
   <flask_jwt_shield.sessions.refresh>`, which refuses a DBSC session anywhere else) and a
   fresh bound cookie is set.
4. **Every request** (:meth:`DeviceBinding.cookie_valid`): an access token of a DBSC session
   needs a valid bound cookie -- an HMAC of the session id and the cookie's expiry, checked
   with :func:`hmac.compare_digest`; no signature work on the warm path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import typing as t

from cryptography.hazmat.primitives import serialization
from flask import Response
from flask import jsonify
from flask import request
from flask import url_for
from werkzeug.exceptions import NotFound
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response as BaseResponse

from . import revocation
from . import sessions
from .cache import bounded_put
from .errors import InvalidGrant
from .errors import InvalidRequest
from .errors import InvalidToken
from .errors import StoreError
from .errors import StoreUnavailable
from .jose import ALGORITHMS
from .jose import EC_CURVES
from .jose import KEY_TYPES
from .jose import PRIVATE_MEMBERS
from .jose import RSA_MIN_BITS
from .jose import THUMBPRINT_MEMBERS
from .jose import JOSEError
from .jose import b64decode
from .jose import b64url
from .jose import jwk_thumbprint
from .jose import segment_object
from .jose import signature_valid
from .jose import split_compact
from .state import ShieldState
from .state import current_state
from .stores import Family
from .tokens import REFRESH_TYPE
from .tokens import Claims
from .transport import DBSC_COOKIE
from .transport import REFRESH_COOKIE
from .transport import fingerprint_matches
from .transport import request_cookie
from .transport import set_cookies

#: The response header that invites the browser to register (the spec's current name; early
#: Chrome origin trials used ``Sec-Session-Registration``).
REGISTRATION_HEADER = "Secure-Session-Registration"
#: The response header with a challenge for the next proof (403 at refresh, or ahead of time).
CHALLENGE_HEADER = "Secure-Session-Challenge"
#: The request header with the browser's proof (a ``dbsc+jwt``), as a structured string.
RESPONSE_HEADER = "Secure-Session-Response"
#: The request header naming the session to refresh.
SESSION_ID_HEADER = "Sec-Secure-Session-Id"
#: The proof's ``typ``.
PROOF_TYPE = "dbsc+jwt"
#: The algorithms offered and accepted (the spec's ``none`` is never: it proves no key).
PROOF_ALGORITHMS = ("ES256", "RS256")
#: The short-lived bound cookie the browser renews with its key.
BOUND_COOKIE = DBSC_COOKIE
#: The session claim that holds the device key: ``{"jkt": thumbprint, "jwk": public key}``.
CLAIM = "dbsc"
#: Seconds a challenge is good for.
CHALLENGE_TTL = 300
#: The store namespace that makes each challenge one-time.
CHALLENGE_NAMESPACE = "dbsc-challenge"
_MAX_PROOF = 8192
_CHECKED_SIZE = 4096


class DeviceBinding:
    """The keyed values of DBSC for one app: bound cookies and challenges, both HMACs under a
    key derived from the signing key (so every process of the app accepts the others')."""

    def __init__(self, secret: bytes, cookie_ttl: int) -> None:
        self._key = hashlib.sha256(b"flask-jwt-shield dbsc\x00" + secret).digest()
        self.cookie_ttl = cookie_ttl
        # Bound cookies whose MAC was checked: value -> (sid, expiry). A browser sends the
        # same one for minutes, so the warm path is a lookup and a comparison of the expiry.
        self._checked: dict[str, tuple[str, int]] = {}

    def _mac(self, *parts: str) -> str:
        # hmac.digest: the one-shot C path (a third of hmac.new's time; this runs per request).
        return b64url(hmac.digest(self._key, "\x00".join(parts).encode("utf-8"), "sha256")[:18])

    # -- the bound cookie (every request) --------------------------------------------------

    def cookie_value(self, sid: str, expires: int) -> str:
        """The bound cookie of session ``sid``, good until ``expires`` (epoch seconds)."""
        return f"{expires}.{self._mac('cookie', sid, str(expires))}"

    def cookie_valid(self, value: str | None, sid: object, now: float) -> bool:
        """Whether ``value`` is a bound cookie of ``sid`` that has not expired."""
        return self.cookie_expiry(value, sid, now) is not None

    def cookie_expiry(self, value: str | None, sid: object, now: float) -> int | None:
        """When ``value`` expires (epoch seconds) if it is a bound cookie of ``sid`` that has
        not expired yet, else ``None``."""
        if value is None or not isinstance(sid, str):
            return None
        checked = self._checked.get(value)
        if checked is not None:
            return checked[1] if checked[0] == sid and checked[1] > now else None
        expires, _, mac = value.partition(".")
        if not expires.isdigit() or len(expires) > 12 or int(expires) <= now:
            return None
        if not hmac.compare_digest(mac.encode("latin-1", "replace"), self._mac("cookie", sid, expires).encode("ascii")):
            return None
        bounded_put(self._checked, value, (sid, int(expires)), _CHECKED_SIZE)
        return int(expires)

    # -- challenges (registration, refresh) ----------------------------------------------

    def challenge(self, purpose: str, sid: str, now: float) -> str:
        """A challenge for ``purpose`` (``"register"``, ``"refresh"``) of session ``sid``."""
        expires = str(int(now) + CHALLENGE_TTL)
        nonce = secrets.token_urlsafe(12)
        return f"{expires}.{sid}.{nonce}.{self._mac(purpose, sid, expires, nonce)}"

    def challenge_session(self, challenge: object, purpose: str, now: float) -> tuple[str, float] | None:
        """The session and expiry of a good ``challenge`` for ``purpose``; ``None`` if it is
        forged, for something else, or expired. (One-time use is the store's: :func:`_spend`.)"""
        if not isinstance(challenge, str) or len(challenge) > 256:
            return None
        parts = challenge.split(".")
        if len(parts) != 4 or not parts[0].isdigit() or len(parts[0]) > 12:
            return None
        expires, sid, nonce, mac = parts
        if int(expires) <= now:
            return None
        if not hmac.compare_digest(mac.encode("latin-1", "replace"), self._mac(purpose, sid, expires, nonce).encode()):
            return None
        return sid, float(expires)


def binding_for(state: ShieldState) -> DeviceBinding | None:
    """The app's :class:`DeviceBinding`, ``None`` without a signing key (a verify-only app
    issues no sessions, so it has none to bind)."""
    signing = state.keys.signing_key
    if signing is None:
        return None
    material = signing.signing
    if not isinstance(material, bytes):
        material = material.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return DeviceBinding(material, state.config.request.dbsc_cookie_ttl)


def check_request(binding: DeviceBinding | None, claims: Claims, req: t.Any) -> int:
    """Step 5 for a token of a DBSC session: the bound cookie must be there and valid.
    Returns when the cookie expires (epoch seconds)."""
    value = request_cookie(req, req.environ, BOUND_COOKIE) if binding is not None else None
    expires = binding.cookie_expiry(value, claims.get("sid"), time.time()) if binding is not None else None
    if expires is None:
        raise InvalidToken(
            "This session is bound to the browser's key (DBSC): the bound cookie is missing or expired.",
            reason="dbsc-cookie",
        )
    return expires


# -- the registration offer (set_cookies at a login) -----------------------------------------


def offer_registration(response: BaseResponse, sid: str, endpoint: str | None) -> None:
    """Add ``Secure-Session-Registration`` for session ``sid`` to ``response``, if DBSC is on
    and its registration endpoint (``endpoint``) is mounted."""
    state = current_state()
    binding = binding_for(state) if state.config.request.dbsc != "off" and endpoint else None
    if binding is None or endpoint is None:
        return
    try:
        path = url_for(endpoint)
    except (BuildError, RuntimeError):  # the blueprint is not registered on this app
        return
    challenge = binding.challenge("register", sid, time.time())
    response.headers[REGISTRATION_HEADER] = (
        f"({' '.join(PROOF_ALGORITHMS)});path={_sf_string(path)};challenge={_sf_string(challenge)}"
    )


# -- the endpoints ---------------------------------------------------------------------------


def register(refresh_endpoint: str) -> Response:
    """The registration endpoint (``POST``): bind the session named by the challenge to the
    key that signed the proof."""
    state, binding = _active()
    now = time.time()
    proof = _header(RESPONSE_HEADER)
    if proof is None:
        raise InvalidRequest(f"Send the proof in the {RESPONSE_HEADER} header.", reason="dbsc-missing")
    jwk, payload = _verify(proof, None)
    found = binding.challenge_session(payload.get("jti"), "register", now)
    if found is None:
        _rejected(state, None, "dbsc-bad-challenge")
        raise InvalidRequest("The registration challenge is invalid or expired.", reason="dbsc-bad-challenge")
    sid, until = found
    old = _family(state, sid, now)
    if old is None or CLAIM in old.claims or not fingerprint_matches(request, old.claims.get("fgp")):
        _rejected(state, None, "dbsc-no-session")
        raise InvalidGrant("No session of this browser can be bound here.", reason="dbsc-no-session")
    _spend(state, payload["jti"], until, now)
    family = _move(state, old, {"jkt": jwk_thumbprint(jwk), "jwk": jwk}, now)
    country = family.last_country if state.geo is not None else None
    try:
        status = sessions.status_reference(
            state,
            sub=family.sub,
            sid=family.sid,
            refresh_jti=family.current_jti,
            iat=family.current_iat,
            ttl=state.config.sessions.access_token_ttl,
            ends_at=family.expires_at,
        )
    except StoreError as exc:
        state.store_failed(exc, None)
        raise StoreUnavailable() from None
    pair = sessions.sign_pair(state.codec, state.config, family, country=country, status=status)
    return _answer(state, binding, pair, refresh_endpoint)


def refresh(refresh_endpoint: str) -> Response:
    """The refresh endpoint (``POST``): 403 with a challenge, then a proof by the session's
    key renews the session and the bound cookie."""
    state, binding = _active()
    now = time.time()
    token = request.cookies.get(REFRESH_COOKIE)
    if token is None:
        raise InvalidGrant("The session's refresh cookie is missing.", reason="missing")
    try:
        claims, _ = state.codec.verify(token, REFRESH_TYPE)
    except InvalidToken as exc:
        raise InvalidGrant(exc.description, reason=exc.reason) from None
    sid = claims["sid"]
    named = _header(SESSION_ID_HEADER)
    device = claims.get(CLAIM)
    if (named is not None and named != sid) or not isinstance(device, dict) or not isinstance(device.get("jwk"), dict):
        _rejected(state, claims, "dbsc-no-session")
        raise InvalidGrant("This is not the browser's DBSC session.", reason="dbsc-no-session")
    proof = _header(RESPONSE_HEADER)
    if proof is None:
        return _challenge(binding, sid, now)
    jwk, payload = _verify(proof, device.get("jwk"), claims)
    found = binding.challenge_session(payload.get("jti"), "refresh", now)
    if found is None or found[0] != sid or not _spend(state, payload["jti"], found[1], now, strict=False):
        # A stale or replayed challenge: the spec's answer is a fresh one (403), no cookie.
        _rejected(state, claims, "dbsc-bad-challenge")
        return _challenge(binding, sid, now)
    pair = sessions.refresh(state, token, device_key=jwk_thumbprint(jwk))
    return _answer(state, binding, pair, refresh_endpoint)


# -- helpers -----------------------------------------------------------------------------------


def _active() -> tuple[ShieldState, DeviceBinding]:
    state = current_state()
    binding = binding_for(state) if state.config.request.dbsc != "off" else None
    if binding is None:
        raise NotFound()
    return state, binding


def _header(name: str) -> str | None:
    """A structured-field string header (RFC 9651 §3.3.3) as its value; a bare value is taken
    as it is."""
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == '"':
        end = value.find('"', 1)
        body = value[1:end] if end > 0 else value[1:]
        return body.replace('\\"', '"').replace("\\\\", "\\")
    return value.split(";", 1)[0]


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bad(description: str, reason: str, claims: Claims | None = None) -> t.NoReturn:
    _rejected(current_state(), claims, reason)
    raise InvalidGrant(description, reason=reason)


def _verify(proof: str, bound: object, claims: Claims | None = None) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    """Check a DBSC proof; return the key (the header's at registration, ``bound`` at
    refresh) and the payload."""
    try:
        if len(proof) > _MAX_PROOF:
            raise JOSEError("malformed")
        head, body, signature = split_compact(proof)
        header, payload = segment_object(head), segment_object(body)
        raw_signature = b64decode(signature)
    except JOSEError:
        _bad("The DBSC proof is malformed.", "dbsc-malformed", claims)
    typ, alg = header.get("typ"), header.get("alg")
    if not isinstance(typ, str) or typ.lower() != PROOF_TYPE:
        _bad(f"The DBSC proof's 'typ' must be '{PROOF_TYPE}'.", "dbsc-bad-typ", claims)
    if alg not in PROOF_ALGORITHMS or "crit" in header:
        _bad(f"The DBSC proof's algorithm must be one of {', '.join(PROOF_ALGORITHMS)}.", "dbsc-bad-alg", claims)
    jwk = bound if bound is not None else header.get("jwk")
    if bound is not None and "jwk" in header and header["jwk"] != bound:
        _bad("The DBSC proof names another key than the session's.", "dbsc-wrong-key", claims)
    key = _public_key(jwk, alg)
    if key is None:
        _bad("The DBSC proof's key is missing or not acceptable.", "dbsc-bad-key", claims)
    if not signature_valid(ALGORITHMS[alg], key, f"{head}.{body}".encode("ascii"), raw_signature):
        _bad("The DBSC proof's signature is invalid (or made by another key).", "dbsc-bad-signature", claims)
    assert isinstance(jwk, dict)
    return {m: jwk[m] for m in THUMBPRINT_MEMBERS[jwk["kty"]]}, payload


def _public_key(jwk: object, alg: str) -> t.Any:
    """The public key of ``jwk`` for ``alg``, or ``None`` when it is not one to accept."""
    if not isinstance(jwk, dict) or jwk.get("kty") != KEY_TYPES[alg] or any(m in jwk for m in PRIVATE_MEMBERS):
        return None
    if alg in EC_CURVES and jwk.get("crv") != EC_CURVES[alg]:
        return None
    try:
        jwk_thumbprint(jwk)
        key = ALGORITHMS[alg].from_jwk(jwk)
    except Exception:  # noqa: BLE001 - any JWK the library cannot read is refused
        return None
    if KEY_TYPES[alg] == "RSA" and key.key_size < RSA_MIN_BITS:
        return None
    return key


def _spend(state: ShieldState, challenge: str, until: float, now: float, *, strict: bool = True) -> bool:
    """Use ``challenge`` once; ``strict`` refuses a second use with 400."""
    try:
        first = state.store.remember_once(CHALLENGE_NAMESPACE, challenge.rsplit(".", 1)[-1], until, now=now)
    except StoreError as exc:
        state.store_failed(exc, None)
        raise StoreUnavailable() from None  # a challenge that cannot be spent is never accepted
    if not first and strict:
        _bad("The challenge was used before.", "dbsc-replayed")
    return first


def _family(state: ShieldState, sid: str, now: float) -> Family | None:
    """The live family ``sid`` (not revoked, not ended by a log-out-everywhere or key)."""
    store = state.store
    try:
        family = store.get_family(sid)
        if family is None or not family.live(now, state.config.sessions.refresh_idle_ttl):
            return None
        key_revoked = family.kid is not None and store.is_revoked("kid", family.kid, now=now)
        if family.ended_by(store.not_before(family.sub, now), key_revoked):
            return None
    except StoreError as exc:
        state.store_failed(exc, None)
        raise StoreUnavailable() from None
    return family


def _move(state: ShieldState, old: Family, device: dict[str, t.Any], now: float) -> Family:
    """The session as a new family bound to ``device`` (its lifetimes unchanged); the old
    family, whose tokens know no key, is revoked."""
    config = state.config
    signing = state.keys.signing_key
    family = Family(
        sid=secrets.token_urlsafe(16),
        sub=old.sub,
        created_at=old.created_at,
        expires_at=old.expires_at,
        last_used_at=now,
        current_jti=secrets.token_urlsafe(16),
        current_iat=sessions.issue_time(state, old.sub),
        last_ip=request.remote_addr,
        last_country=old.last_country,
        claims={**old.claims, CLAIM: device},
        kid=signing.kid if signing is not None else None,
    )
    until = old.expires_at + config.sessions.access_token_ttl
    try:
        state.store.create_family(
            family, max_sessions=config.sessions.max_sessions, idle_ttl=config.sessions.refresh_idle_ttl, until=until
        )
        state.store.revoke_family(old.sid, until)
        revocation.mark_status(state, "sid", old.sid, until=until)
    except StoreError as exc:
        state.store_failed(exc, None)
        raise StoreUnavailable() from None
    state.record(
        "session-started",
        None,
        subject=old.sub,
        sid=family.sid,
        jti=family.current_jti,
        detail={"bound": "dbsc", "replaces": old.sid, "jkt": device["jkt"]},
    )
    return family


def _instructions(sid: str, refresh_endpoint: str, samesite: str) -> dict[str, t.Any]:
    """The JSON session instructions: the session, where it refreshes, what it covers."""
    return {
        "session_identifier": sid,
        "refresh_url": url_for(refresh_endpoint),
        "scope": {"include_site": False, "scope_specification": []},
        "credentials": [
            {"type": "cookie", "name": BOUND_COOKIE, "attributes": f"Path=/; Secure; HttpOnly; SameSite={samesite}"}
        ],
    }


def _answer(state: ShieldState, binding: DeviceBinding, pair: sessions.TokenPair, refresh_endpoint: str) -> Response:
    """The session instructions, with the session's new cookies, its bound cookie, and a
    challenge for the next refresh (so that it needs no 403 round trip)."""
    now = time.time()
    samesite = state.config.request.cookie_samesite
    response = jsonify(_instructions(pair.sid, refresh_endpoint, samesite))
    response.headers["Cache-Control"] = "no-store"
    # The access token outlives its bound cookie, so the browser renews before it expires.
    max_age = min(binding.cookie_ttl, pair.expires_in)
    response.set_cookie(
        BOUND_COOKIE,
        binding.cookie_value(pair.sid, int(now) + max_age),
        max_age=max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite=samesite,
    )
    set_cookies(
        response,
        access_token=pair.access_token,
        access_max_age=pair.expires_in,
        refresh_token=pair.refresh_token,
        refresh_max_age=max(0, int((pair.refresh_expires_at or now) - now)),
        fingerprint=None,
        samesite=samesite,
    )
    challenge = binding.challenge("refresh", pair.sid, now)
    response.headers[CHALLENGE_HEADER] = f"{_sf_string(challenge)};id={_sf_string(pair.sid)}"
    return response


def _challenge(binding: DeviceBinding, sid: str, now: float) -> Response:
    """403 with a fresh challenge: the browser signs it and asks again."""
    response = jsonify(
        {"error": "dbsc_proof_required", "error_description": "Prove the session's key over the challenge."}
    )
    response.status_code = 403
    response.headers[CHALLENGE_HEADER] = f"{_sf_string(binding.challenge('refresh', sid, now))};id={_sf_string(sid)}"
    response.headers["Cache-Control"] = "no-store"
    return response


def _rejected(state: ShieldState, claims: Claims | None, reason: str) -> None:
    who = claims["jti"] if claims is not None else (request.remote_addr or "")
    if state.first_in_a_while(("token-rejected", who, reason)):
        state.record("token-rejected", claims, action="deny", detail={"reason": reason, "dbsc": True})


__all__ = [
    "BOUND_COOKIE",
    "CHALLENGE_HEADER",
    "REGISTRATION_HEADER",
    "RESPONSE_HEADER",
    "SESSION_ID_HEADER",
    "DeviceBinding",
    "binding_for",
    "check_request",
    "offer_registration",
    "refresh",
    "register",
]
