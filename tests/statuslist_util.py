"""A small Status Issuer for the resource-server tests: real keys, real HTTP on 127.0.0.1.

Built from the package's own parts -- an ES256 :class:`~flask_jwt_shield.keys.KeyRing`, its
JWK Set, :class:`~flask_jwt_shield.tokens.TokenCodec` to sign and
:class:`~flask_jwt_shield.statuslist.codec.StatusList` to encode -- so that what is under
test is the consuming side. Each GET of a status list signs a fresh Status List Token from
the issuer's current bits (``iat`` now), as a Status Provider that re-signs on demand does.
The server runs in a thread of the test process; :meth:`StatusIssuer.stop` shuts it down.
"""

from __future__ import annotations

import http.server
import threading
import time
import typing as t
import zlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flask_jwt_shield.config import ShieldConfig
from flask_jwt_shield.jose import b64url
from flask_jwt_shield.keys import KeyRing
from flask_jwt_shield.statuslist.codec import StatusList
from flask_jwt_shield.tokens import TokenCodec

AUDIENCE = "https://api.example.com"
LIST_PATH = "/statuslists/1"
_KEYS: dict[str, bytes] = {}


def ec_pem(name: str) -> bytes:
    """A P-256 private key in PEM, the same one for the same name during a test run."""
    if name not in _KEYS:
        key = ec.generate_private_key(ec.SECP256R1())
        _KEYS[name] = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return _KEYS[name]


def signer(name: str, kid: str) -> TokenCodec:
    """A token codec whose ES256 key (``kid``) signs: the package's KeyRing and codec."""
    config = ShieldConfig.from_mapping(
        {"JWT_SHIELD_KEYS": [{"kid": kid, "alg": "ES256", "key": ec_pem(name)}]}, warn=False
    )
    return TokenCodec(config, KeyRing.from_config(config))


class StatusIssuer:
    """The issuer: its JWK Set at ``/jwks.json`` and its Status List Tokens at ``/statuslists/N``.

    Knobs for the faults (of the status lists; the JWK Set is always served): ``status``
    (an HTTP error), ``delay`` (seconds before answering),
    ``hold`` (requests wait until the test sets it), ``redirect`` (path -> Location),
    ``raw`` (path -> bytes served instead of a token), ``claims`` (extra or overriding
    claims of every Status List Token; ``None`` values remove one), ``typ``, and
    ``sign_with`` (another codec: a key the JWK Set does not hold).
    """

    def __init__(
        self, *, size: int = 1024, bits: int = 1, ttl: float | None = 300, exp_in: float | None = 3600
    ) -> None:
        self.codec = signer("status-issuer", "issuer-es256")
        self.lists: dict[str, StatusList] = {LIST_PATH: StatusList.new(size, bits)}
        self.ttl = ttl
        self.exp_in = exp_in
        self.status = 200
        self.delay = 0.0
        self.hold: threading.Event | None = None
        self.waiting = threading.Semaphore(0)
        self.redirect: dict[str, str] = {}
        self.raw: dict[str, bytes] = {}
        self.claims: dict[str, t.Any] = {}
        self.typ = "statuslist+jwt"
        self.sign_with: TokenCodec | None = None
        self.hits: list[str] = []
        self._lock = threading.Lock()
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with issuer._lock:
                    issuer.hits.append(self.path)
                if self.path == "/jwks.json":  # the faults are the status lists'
                    body = _json(issuer.codec.keys.jwks())
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                hold = issuer.hold
                if hold is not None:
                    issuer.waiting.release()
                    hold.wait(10)
                if issuer.delay:
                    threading.Event().wait(issuer.delay)
                if self.path in issuer.redirect:
                    self.send_response(302)
                    self.send_header("Location", issuer.redirect[self.path])
                    self.end_headers()
                    return
                if self.path in issuer.raw:
                    body, kind = issuer.raw[self.path], "application/statuslist+jwt"
                elif self.path in issuer.lists:
                    body, kind = issuer.status_list_token(self.path).encode(), "application/statuslist+jwt"
                else:
                    self.send_error(404)
                    return
                self.send_response(issuer.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=86400")  # the draft: claims win over headers
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a deadline or a size bound)

            def log_message(self, format: str, *args: t.Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.issuer = self.url + "/"
        self.jwks_url = self.url + "/jwks.json"
        self.list_url = self.url + LIST_PATH
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    # -- the issuer's side ----------------------------------------------------------------

    def revoke(self, idx: int, status: int = 1, path: str = LIST_PATH) -> None:
        self.lists[path][idx] = status

    def list_hits(self, path: str = LIST_PATH) -> int:
        return sum(1 for p in self.hits if p == path)

    def status_list_token(self, path: str = LIST_PATH, **claims: t.Any) -> str:
        now = int(time.time())
        payload: dict[str, t.Any] = {
            "iss": self.issuer,
            "sub": self.url + path,
            "iat": now,
            "status_list": self.lists[path].to_json(),
        }
        if self.exp_in is not None:
            payload["exp"] = now + int(self.exp_in)
        if self.ttl is not None:
            payload["ttl"] = self.ttl
        payload.update(self.claims)
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return (self.sign_with or self.codec).encode(payload, self.typ)

    def access_token(self, idx: int | None = 0, *, uri: str | None = None, status: t.Any = None, **extra: t.Any) -> str:
        """An access token of this issuer (``at+jwt``) whose status names ``idx`` in its list."""
        now = int(time.time())
        payload: dict[str, t.Any] = {
            "iss": self.issuer,
            "sub": "user-1",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 900,
            "jti": f"jti-{idx}-{now}-{len(self.hits)}",
        }
        if status is not None:
            payload["status"] = status
        elif idx is not None:
            payload["status"] = {"status_list": {"idx": idx, "uri": self.list_url if uri is None else uri}}
        payload.update(extra)
        return self.codec.encode(payload, "at+jwt")

    def rs_config(self, **settings: t.Any) -> dict[str, t.Any]:
        """The configuration of a resource server that trusts this issuer."""
        config: dict[str, t.Any] = {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": self.jwks_url,
            "JWT_SHIELD_ISSUER": self.issuer,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
            "JWT_SHIELD_RATE_LIMIT": None,
        }
        config.update({f"JWT_SHIELD_{k}": v for k, v in settings.items()})
        return config

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def bomb(decompressed: int) -> dict[str, t.Any]:
    """A ``status_list`` claim of a few hundred bytes that inflates to ``decompressed`` bytes."""
    return {"bits": 1, "lst": b64url(zlib.compress(bytes(decompressed), 9))}


def _json(document: t.Any) -> bytes:
    import json

    return json.dumps(document).encode()
