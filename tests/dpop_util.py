"""DPoP proofs made by hand (base64url JSON segments signed with ``cryptography`` directly),
never by the shield's :class:`~flask_jwt_shield.dpop.DPoPKey`, so that a bug in the client
helper cannot hide one in the verifier."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import typing as t

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

NOW = 1_800_000_000.0  # the conftest Clock's start
URL = "https://api.example/api/me"
TOKEN = "header.payload.signature"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def seg(obj: t.Any) -> str:
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def ec_jwk(key: ec.EllipticCurvePrivateKey, *, private: bool = False) -> dict[str, str]:
    numbers = key.private_numbers()
    size = (key.curve.key_size + 7) // 8
    jwk = {
        "kty": "EC",
        "crv": {256: "P-256", 384: "P-384"}[key.curve.key_size],
        "x": b64u(numbers.public_numbers.x.to_bytes(size, "big")),
        "y": b64u(numbers.public_numbers.y.to_bytes(size, "big")),
    }
    if private:
        jwk["d"] = b64u(numbers.private_value.to_bytes(size, "big"))
    return jwk


def es256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants R || S (RFC 7518 §3.4)


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638, written out again here rather than imported."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return b64u(hashlib.sha256(canonical.encode()).digest())


class HandKey:
    """An ES256 key and proofs made by hand around it."""

    def __init__(self, *, url: str = URL, now: float = NOW, method: str = "GET") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = ec_jwk(self.key)
        self.jkt = thumbprint(self.jwk)
        self.url, self.now, self.method = url, now, method
        self._count = 0

    def proof(
        self,
        *,
        header: dict[str, t.Any] | None = None,
        claims: dict[str, t.Any] | None = None,
        drop: tuple[str, ...] = (),
        sign: t.Callable[[bytes], bytes] | None = None,
        token: str | None = TOKEN,
    ) -> str:
        self._count += 1
        h: dict[str, t.Any] = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}
        h.update(header or {})
        jti = f"j-{self._count}-{secrets.token_urlsafe(9)}"
        c: dict[str, t.Any] = {"jti": jti, "htm": self.method, "htu": self.url, "iat": self.now}
        if token is not None:
            c["ath"] = b64u(hashlib.sha256(token.encode()).digest())
        c.update(claims or {})
        for name in drop:
            h.pop(name, None)
            c.pop(name, None)
        signing_input = f"{seg(h)}.{seg(c)}".encode()
        signature = (sign or (lambda data: es256(self.key, data)))(signing_input)
        return f"{signing_input.decode()}.{b64u(signature)}"
