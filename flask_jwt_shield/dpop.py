"""DPoP (RFC 9449): sender-constrained tokens.

A DPoP-bound access token carries ``cnf.jkt``, the RFC 7638 thumbprint of a key that only the
client holds. Every request with it carries a *proof*: a short JWT signed with that key,
naming the request's method and URL, the token's hash and a one-time ``jti``. Whoever
copies the token out of the client has no key to sign proofs with, so the copy is useless.

This module holds the server side (:class:`ProofVerifier`: RFC 9449 §4.3's checks, the
``jti`` replay cache through the store so it holds across processes, server nonces) and
the client side (:class:`DPoPKey`: make a key, make proofs), for tests and Python clients.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import secrets
import struct
import time
import typing as t
from collections.abc import Iterable
from collections.abc import Mapping
from urllib.parse import quote
from urllib.parse import unquote
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import Algorithm

from .cache import bounded_put
from .errors import InvalidDPoPProof
from .errors import UseDPoPNonce
from .jose import ALGORITHMS
from .jose import DEFAULT_PROOF_ALGORITHMS
from .jose import EC_CURVES
from .jose import EDDSA_CURVES
from .jose import KEY_TYPES
from .jose import PRIVATE_MEMBERS
from .jose import PROOF_ALGORITHMS
from .jose import RSA_MIN_BITS
from .jose import THUMBPRINT_MEMBERS
from .jose import JOSEError
from .jose import b64decode
from .jose import b64url
from .jose import jwk_thumbprint
from .jose import segment_object
from .jose import signature_valid
from .jose import split_compact
from .stores.base import Store

__all__ = [
    "DEFAULT_ALGORITHMS",
    "PROOF_ALGORITHMS",
    "DPoPKey",
    "Nonces",
    "Proof",
    "ProofVerifier",
    "jwk_thumbprint",
    "normalize_htu",
    "token_hash",
]

#: The ``typ`` of a proof (RFC 9449 §4.2).
PROOF_TYPE = "dpop+jwt"
_PROOF_TYPES = frozenset({"dpop+jwt", "application/dpop+jwt"})
DEFAULT_ALGORITHMS = DEFAULT_PROOF_ALGORITHMS
#: The store namespace of the proof ``jti`` replay cache.
REPLAY_NAMESPACE = "dpop-jti"

_MAX_JTI = 256
_MAX_HTU = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 §2.2, §2.3: characters a path keeps unencoded after normalisation.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_CACHE_SIZE = 4096


def token_hash(token: str) -> str:
    """The ``ath`` of a proof for ``token``: base64url(SHA-256(token)) (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def normalize_htu(url: str) -> str:
    """``url`` as RFC 9449 §4.3 compares it: without query and fragment, normalised per
    RFC 3986 §6.2.2 and §6.2.3 (case of scheme and host, default port, percent-encoding,
    dot segments, empty path).

    Raises :class:`ValueError` for what is not an absolute ``http(s)`` URL.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        raise ValueError("not an absolute http(s) URL")
    host = parts.hostname  # lower-cased by urlsplit
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    port = parts.port  # raises ValueError for a port that is not a number
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    # Decoding then re-encoding makes "%7e", "%7E" and "~" the same, and "%2f" and "%2F".
    path = quote(unquote(parts.path or "/", errors="strict"), safe=_PATH_SAFE)
    if "/." in path:
        path = _remove_dot_segments(path)
    return f"{scheme}://{netloc}{path}"


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: ``/a/./b/../c`` is ``/a/c``."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for segment in segments:
        if segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/b/.." is the directory "/a/"
    return "/" + "/".join(out)


class Proof(t.NamedTuple):
    """A DPoP proof that passed every check. (A named tuple: one is made per request.)"""

    #: The thumbprint of the key that signed it (RFC 7638): what a bound token's
    #: ``cnf.jkt`` must equal.
    jkt: str
    jti: str
    htm: str
    htu: str
    iat: float
    #: The server nonce the proof carried, if nonces are on.
    nonce: str | None
    #: A fresh nonce to send back in ``DPoP-Nonce`` (the proof's one is about to expire).
    next_nonce: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class _ProofKey:
    alg: str
    algorithm: Algorithm
    key: t.Any
    jkt: str
    #: For EC keys, what the signature check needs, made once per key rather than per
    #: proof: ``(ECDSA(hash), coordinate size)``.
    ecdsa: tuple[ec.ECDSA, int] | None = None

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is valid; never raises."""
        ecdsa = self.ecdsa
        if ecdsa is None:
            return signature_valid(self.algorithm, self.key, signing_input, signature)
        # RFC 7518 §3.4: R || S, each of the curve's size; DER for OpenSSL. Done here rather
        # than by PyJWT because a proof is checked on every request (benchmarked: DPoP rows).
        size = ecdsa[1]
        if len(signature) != 2 * size:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
        try:
            self.key.verify(der, signing_input, ecdsa[0])
        except Exception:  # noqa: BLE001 - InvalidSignature, or (as in signature_valid) a malformed one
            return False
        return True


class Nonces:
    """Server nonces (RFC 9449 §8, §9) without server state: a nonce is the number of a
    time step plus an HMAC of it, so every process that shares ``secret`` accepts the
    nonces of the others. A nonce is good for the step it was made in and the next one
    (between ``ttl`` and twice ``ttl`` seconds).
    """

    def __init__(self, secret: bytes, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._secret = hashlib.sha256(b"flask-jwt-shield dpop nonce\x00" + secret).digest()
        self.ttl = float(ttl)
        self._current: tuple[int, str] = (-1, "")

    def _make(self, step: int) -> str:
        packed = struct.pack(">Q", step)
        return b64url(packed + hmac.new(self._secret, packed, hashlib.sha256).digest()[:16])

    def current(self, now: float) -> str:
        """The nonce to hand out now."""
        step = int(now // self.ttl)
        cached = self._current
        if cached[0] == step:
            return cached[1]
        nonce = self._make(step)
        self._current = (step, nonce)
        return nonce

    def check(self, nonce: object, now: float) -> str | None:
        """``None`` if ``nonce`` is not (or no longer) good; else ``"current"`` or
        ``"previous"`` (good, but a fresh one should be sent)."""
        if not isinstance(nonce, str) or len(nonce) != 32:
            return None
        try:
            raw = b64decode(nonce)
        except JOSEError:
            return None
        if len(raw) != 24:
            return None
        step = struct.unpack(">Q", raw[:8])[0]
        current = int(now // self.ttl)
        if step == current:
            which = "current"
        elif step == current - 1:
            which = "previous"
        else:
            return None
        return which if hmac.compare_digest(self._make(step), nonce) else None


def _refuse(description: str, reason: str) -> t.NoReturn:
    raise InvalidDPoPProof(description, reason=reason)


def _json_object(segment: str) -> dict[str, t.Any]:
    try:
        return segment_object(segment)
    except JOSEError:
        _refuse("The DPoP proof is malformed.", "dpop-malformed")


class ProofVerifier:
    """Checks DPoP proofs for one app (RFC 9449 §4.3).

    :param algorithms: the proof algorithms accepted (asymmetric only).
    :param max_age: seconds a proof is accepted after its ``iat``.
    :param leeway: seconds of clock skew allowed either side.
    :param store: where proof ``jti`` s are remembered (every process sharing the store
        sees every proof), until the proof would be refused for its age anyway.
    :param max_bytes: larger proofs are refused before any parsing.
    :param nonces: require server nonces (RFC 9449 §9), or ``None``.
    """

    def __init__(
        self,
        *,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        max_age: float = 60.0,
        leeway: float = 0.0,
        store: Store,
        max_bytes: int = 8192,
        nonces: Nonces | None = None,
    ) -> None:
        algs = tuple(algorithms)
        unknown = set(algs) - PROOF_ALGORITHMS
        if unknown or not algs:
            raise ValueError(f"DPoP proofs need asymmetric algorithms from {sorted(PROOF_ALGORITHMS)}")
        self.algorithms = frozenset(algs)
        #: The ``algs`` parameter of the ``WWW-Authenticate: DPoP`` challenge.
        self.algs = " ".join(algs)
        self.max_age = float(max_age)
        self.leeway = float(leeway)
        self.store = store
        self.max_bytes = max_bytes
        self.nonces = nonces
        self._keys: dict[str, _ProofKey] = {}
        self._urls: dict[str, str | None] = {}
        self._request_urls: dict[str, str | None] = {}

    def verify(
        self,
        proof: str | None,
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        now: float | None = None,
    ) -> Proof:
        """Check ``proof`` (the ``DPoP`` header's value) for a request and return it.

        :param method: the request's method (``htm`` must equal it).
        :param url: the request's URL (``htu`` must equal it, without query and fragment).
        :param access_token: the token the request presents; its hash must be the proof's
            ``ath``. ``None`` at a token endpoint (login, refresh), where no ``ath`` is due.
        :raises InvalidDPoPProof: for anything wrong, with a ``reason`` for the event.
        :raises UseDPoPNonce: nonces are on and the proof has no good one.
        :raises StoreError: the replay cache could not be reached.
        """
        if proof is None:
            _refuse("A DPoP proof is required (the DPoP header).", "dpop-missing")
        if len(proof) > self.max_bytes:
            _refuse("The DPoP proof is too large.", "dpop-too-large")
        try:
            header_segment, payload_segment, signature_segment = split_compact(proof)
        except JOSEError:
            # A comma is two DPoP headers joined into one: RFC 9449 §4.3 allows one.
            _refuse("The DPoP header must hold exactly one proof.", "dpop-malformed")
        key = self._keys.get(header_segment)
        if key is None:
            key = self._proof_key(header_segment)
            bounded_put(self._keys, header_segment, key, _CACHE_SIZE)
        try:
            signature = b64decode(signature_segment)
        except JOSEError:
            _refuse("The DPoP proof is malformed.", "dpop-malformed")
        signing_input = proof[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
        if not key.verify(signing_input, signature):
            _refuse("The DPoP proof's signature is invalid.", "dpop-bad-signature")
        claims = _json_object(payload_segment)

        jti, htm, htu = claims.get("jti"), claims.get("htm"), claims.get("htu")
        iat: t.Any = claims.get("iat")
        if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI:
            _refuse("The DPoP proof's 'jti' is missing or invalid.", "dpop-bad-jti")
        if type(iat) not in (int, float) or not math.isfinite(iat) or abs(iat) > 2**53:
            _refuse("The DPoP proof's 'iat' is missing or not a number.", "dpop-bad-iat")
        if htm != method:
            _refuse("The DPoP proof is for another HTTP method.", "dpop-wrong-method")
        expected = self._normalized(url)
        if not isinstance(htu, str) or expected is None or self._normalized(htu) != expected:
            _refuse("The DPoP proof is for another URL.", "dpop-wrong-url")
        if now is None:
            now = time.time()
        if iat > now + self.leeway:
            _refuse("The DPoP proof is dated in the future.", "dpop-future")
        if iat < now - self.max_age - self.leeway:
            _refuse("The DPoP proof is too old.", "dpop-stale")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(ath, token_hash(access_token)):
                _refuse("The DPoP proof is not for this access token ('ath').", "dpop-bad-ath")
        nonce = claims.get("nonce")
        next_nonce = None
        if self.nonces is not None:
            which = self.nonces.check(nonce, now)
            if which is None:
                error = UseDPoPNonce("Use the DPoP nonce the server sent (DPoP-Nonce).", reason="dpop-nonce")
                error.dpop_nonce = self.nonces.current(now)
                raise error
            if which == "previous":
                next_nonce = self.nonces.current(now)
        elif nonce is not None and not isinstance(nonce, str):
            _refuse("The DPoP proof's 'nonce' is invalid.", "dpop-bad-nonce")
        # Last, so that only proofs that passed every other check are remembered. The
        # proof would be refused as stale after ``until`` anyway, so it can be forgotten.
        until = float(iat) + self.max_age + self.leeway
        if not self.store.remember_once(REPLAY_NAMESPACE, f"{key.jkt}:{jti}", until, now=now):
            _refuse("The DPoP proof was used before.", "dpop-replayed")
        return Proof(
            jkt=key.jkt,
            jti=jti,
            htm=htm,
            htu=htu,
            iat=float(iat),
            nonce=nonce if isinstance(nonce, str) else None,
            next_nonce=next_nonce,
        )

    def request_url(self, environ: Mapping[str, t.Any]) -> str | None:
        """The normalised URL of a WSGI request, as :meth:`verify` compares ``htu`` with it
        (``None`` if it has none). Built from the environ and cached: werkzeug's
        ``request.base_url`` costs as much as the rest of the proof check without the
        signature. Honours what :class:`~werkzeug.middleware.proxy_fix.ProxyFix` set."""
        host = environ.get("HTTP_HOST")
        if not host:
            host = f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
        raw = (
            f"{environ.get('wsgi.url_scheme', 'http')}://{host}{environ.get('SCRIPT_NAME', '')}"
            f"{environ.get('PATH_INFO', '')}"
        )
        cached = self._request_urls.get(raw, "")
        if cached != "":
            return cached
        scheme, _, rest = raw.partition("://")
        netloc, slash, path = rest.partition("/")
        # WSGI strings are latin-1 views of the raw bytes: quote those bytes, as the client did.
        quoted = quote((slash + path).encode("latin-1", "replace"), safe=_PATH_SAFE)
        normal = self._normalized(f"{scheme}://{netloc}{quoted}")
        bounded_put(self._request_urls, raw, normal, _CACHE_SIZE)
        return normal

    def _normalized(self, url: str) -> str | None:
        cached = self._urls.get(url, "")
        if cached != "":
            return cached
        try:
            normal: str | None = normalize_htu(url) if len(url) <= _MAX_HTU else None
        except (ValueError, UnicodeError):
            normal = None
        bounded_put(self._urls, url, normal, _CACHE_SIZE)
        return normal

    def _proof_key(self, header_segment: str) -> _ProofKey:
        """Parse and check a proof's header: once per distinct header (one per client key)."""
        header = _json_object(header_segment)
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _PROOF_TYPES:
            _refuse("The DPoP proof's 'typ' must be 'dpop+jwt'.", "dpop-bad-typ")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            _refuse(f"The DPoP proof's algorithm is not accepted; use one of: {self.algs}.", "dpop-bad-alg")
        if "crit" in header:
            _refuse("The DPoP proof uses an unsupported critical extension.", "dpop-crit")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            _refuse("The DPoP proof's header has no 'jwk'.", "dpop-bad-jwk")
        if any(member in jwk for member in PRIVATE_MEMBERS):
            _refuse("The DPoP proof's 'jwk' holds a private key; send the public key only.", "dpop-private-jwk")
        kty = jwk.get("kty")
        if (
            kty != KEY_TYPES[alg]
            or (kty == "EC" and jwk.get("crv") != EC_CURVES[alg])
            or (kty == "OKP" and jwk.get("crv") not in EDDSA_CURVES)
            or ("alg" in jwk and jwk["alg"] != alg)
        ):
            _refuse("The DPoP proof's 'jwk' does not fit its algorithm.", "dpop-bad-jwk")
        algorithm = ALGORITHMS[alg]
        try:
            jkt = jwk_thumbprint(jwk)
            key = algorithm.from_jwk(jwk)
        except Exception:  # noqa: BLE001 - PyJWT and cryptography raise several types on bad keys
            _refuse("The DPoP proof's 'jwk' is not a valid public key.", "dpop-bad-jwk")
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < RSA_MIN_BITS:
            _refuse(f"The DPoP proof's RSA key must have at least {RSA_MIN_BITS} bits.", "dpop-weak-key")
        if hasattr(key, "private_bytes"):  # belt and braces: the member check above already refused
            _refuse("The DPoP proof's 'jwk' holds a private key; send the public key only.", "dpop-private-jwk")
        ecdsa = None
        if isinstance(key, ec.EllipticCurvePublicKey):
            digest: hashes.HashAlgorithm = {
                "ES256": hashes.SHA256(),
                "ES384": hashes.SHA384(),
                "ES512": hashes.SHA512(),
            }[alg]
            ecdsa = (ec.ECDSA(digest), (key.curve.key_size + 7) // 8)
        return _ProofKey(alg=alg, algorithm=algorithm, key=key, jkt=jkt, ecdsa=ecdsa)


# -- the client side ---------------------------------------------------------------------------


class DPoPKey:
    """A client's DPoP key pair, which makes proofs. For tests and Python clients.

    .. code-block:: python

        key = DPoPKey.generate()                       # ES256 (P-256) by default
        r = requests.post(url_of_login, data=..., headers={"DPoP": key.proof("POST", url_of_login)})
        token = r.json()["access_token"]               # bound: cnf.jkt == key.thumbprint
        r = requests.get(api_url, headers=key.headers("GET", api_url, token))
        key.update_nonce(r.headers)                    # if the server uses nonces

    Keep the private key where the access token is not: the point is that a copy of the
    token alone is useless.
    """

    def __init__(self, private_key: t.Any, alg: str = "ES256") -> None:
        if alg not in PROOF_ALGORITHMS:
            raise ValueError(f"alg must be one of {sorted(PROOF_ALGORITHMS)}, not {alg!r}")
        self.alg = alg
        self._algorithm = ALGORITHMS[alg]
        self._private = private_key
        jwk = dict(self._algorithm.to_jwk(private_key.public_key(), as_dict=True))
        #: The public key as a JWK (what each proof's header carries).
        self.public_jwk: dict[str, t.Any] = {m: jwk[m] for m in THUMBPRINT_MEMBERS[jwk["kty"]]}
        #: RFC 7638 thumbprint: the ``cnf.jkt`` of the tokens bound to this key.
        self.thumbprint = jwk_thumbprint(self.public_jwk)
        header = {"typ": PROOF_TYPE, "alg": alg, "jwk": self.public_jwk}
        self._header = b64url(json.dumps(header, separators=(",", ":")).encode("utf-8"))
        #: The last server nonce seen (:meth:`update_nonce`); put in every proof.
        self.nonce: str | None = None

    @classmethod
    def generate(cls, alg: str = "ES256") -> DPoPKey:
        """A new random key for ``alg`` (``ES256``, ``ES384``, ``ES512``, ``EdDSA``
        (Ed25519), ``RS*`` or ``PS*`` (RSA 2048))."""
        if alg.startswith("ES") and alg in EC_CURVES:
            curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
            return cls(ec.generate_private_key(curve), alg)
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate(), alg)
        if alg in PROOF_ALGORITHMS:
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), alg)
        raise ValueError(f"alg must be one of {sorted(PROOF_ALGORITHMS)}, not {alg!r}")

    @classmethod
    def from_pem(cls, pem: str | bytes, alg: str = "ES256") -> DPoPKey:
        """Load a private key saved with :meth:`private_pem`."""
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        return cls(serialization.load_pem_private_key(data, password=None), alg)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (store it safely)."""
        return t.cast(
            bytes,
            self._private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )

    def proof(
        self,
        method: str,
        url: str,
        access_token: str | None = None,
        *,
        nonce: str | None = None,
        iat: float | None = None,
        jti: str | None = None,
    ) -> str:
        """A new proof for one request (RFC 9449 §4.2). Query and fragment of ``url`` are
        left out. ``access_token`` adds its hash (``ath``); ``nonce`` defaults to
        :attr:`nonce`; ``iat`` defaults to now (a whole second) and ``jti`` to a random one."""
        parts = urlsplit(url)
        claims: dict[str, t.Any] = {
            "jti": jti or secrets.token_urlsafe(16),
            "htm": method,
            "htu": f"{parts.scheme}://{parts.netloc}{parts.path or '/'}",
            "iat": int(time.time()) if iat is None else iat,
        }
        if access_token is not None:
            claims["ath"] = token_hash(access_token)
        nonce = self.nonce if nonce is None else nonce
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = f"{self._header}.{b64url(json.dumps(claims, separators=(',', ':')).encode('utf-8'))}"
        signature = self._algorithm.sign(signing_input.encode("ascii"), self._private)
        return f"{signing_input}.{b64url(signature)}"

    def headers(self, method: str, url: str, access_token: str) -> dict[str, str]:
        """``Authorization: DPoP <token>`` and a new ``DPoP`` proof for one request."""
        return {"Authorization": f"DPoP {access_token}", "DPoP": self.proof(method, url, access_token)}

    def update_nonce(self, headers: Mapping[str, str]) -> bool:
        """Remember the ``DPoP-Nonce`` of a response, if it has one. Returns ``True`` when
        it is new: a request refused with ``use_dpop_nonce`` is then worth retrying."""
        nonce = headers.get("DPoP-Nonce")
        if nonce is None or nonce == self.nonce:
            return False
        self.nonce = nonce
        return True
