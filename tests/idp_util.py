"""A test identity provider: real keys, real tokens, a real JWK Set HTTP server on 127.0.0.1.

The server runs in a thread of the test process (``http.server``), serves whatever the test
puts in :attr:`IdPServer.jwks` (plus an OpenID Connect discovery document), counts every
request, can answer with an error, a redirect, or hold a request until the test releases it.
Tokens are signed with PyJWT here because this is the provider's side: the shield's
verifier is what is under test.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import threading
import time
import typing as t
from collections.abc import Iterator

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import ECAlgorithm
from jwt.algorithms import RSAAlgorithm

# RSA generation costs tens of milliseconds: one pool of keys for the whole run.
_RSA: dict[str, rsa.RSAPrivateKey] = {}


def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A private RSA key, the same one for the same name during a test run."""
    tag = f"{name}/{bits}"
    if tag not in _RSA:
        _RSA[tag] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _RSA[tag]


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **members: t.Any) -> dict[str, t.Any]:
    jwk = dict(RSAAlgorithm.to_jwk(key.public_key(), as_dict=True))
    jwk.update(kid=kid, use="sig", alg="RS256")
    jwk.update(members)
    return {k: v for k, v in jwk.items() if v is not None}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **members: t.Any) -> dict[str, t.Any]:
    jwk = dict(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))
    jwk.update(kid=kid, use="sig", alg="ES256")
    jwk.update(members)
    return {k: v for k, v in jwk.items() if v is not None}


@dataclasses.dataclass
class SigningKey:
    kid: str
    alg: str
    private: t.Any

    def jwk(self, **members: t.Any) -> dict[str, t.Any]:
        members = {"alg": self.alg, **members}
        if isinstance(self.private, rsa.RSAPrivateKey):
            return rsa_jwk(self.private, self.kid, **members)
        return ec_jwk(self.private, self.kid, **members)

    def sign(
        self,
        payload: dict[str, t.Any],
        *,
        typ: str | None = "at+jwt",
        kid: str | None = None,
        headers: dict[str, t.Any] | None = None,
    ) -> str:
        header: dict[str, t.Any] = {"kid": kid or self.kid}
        if typ is not None:
            header["typ"] = typ
        header.update(headers or {})
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=header)


class IdPServer:
    """The JWK Set (and discovery) endpoint of the test provider."""

    def __init__(self) -> None:
        self.jwks: t.Any = {"keys": []}
        self.cache_control: str | None = None
        self.status = 200
        self.redirect_to: str | None = None
        self.hits: list[str] = []
        self.hold: threading.Event | None = None  # set: requests wait until the test releases them
        self.waiting = threading.Semaphore(0)  # released once per request that started waiting
        self.issuer_override: str | None = None
        self.discovery_jwks_uri: str | None = None
        self.raw_body: bytes | None = None
        self.trickle: float | None = None  # seconds between the body's bytes (a slowloris)
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.hits.append(self.path)
                hold = server.hold
                if hold is not None:
                    server.waiting.release()
                    hold.wait(10)
                if server.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.end_headers()
                    return
                if self.path == "/.well-known/openid-configuration":
                    body = json.dumps(
                        {
                            "issuer": server.issuer_override or server.url,
                            "jwks_uri": server.discovery_jwks_uri or server.url + "/jwks.json",
                        }
                    ).encode()
                elif server.raw_body is not None:
                    body = server.raw_body
                else:
                    body = json.dumps(server.jwks).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if server.cache_control is not None:
                    self.send_header("Cache-Control", server.cache_control)
                self.end_headers()
                try:
                    if server.trickle is None:
                        self.wfile.write(body)
                    else:
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            if server.hold is None:
                                threading.Event().wait(server.trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout or size-limit test)

            def log_message(self, format: str, *args: t.Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.jwks_url = self.url + "/jwks.json"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def jwks_hits(self) -> int:
        return sum(1 for p in self.hits if p == "/jwks.json")

    def publish(self, *keys: SigningKey | dict[str, t.Any]) -> None:
        self.jwks = {"keys": [k.jwk() if isinstance(k, SigningKey) else k for k in keys]}

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def down_url() -> str:
    """A 127.0.0.1 URL where nothing listens (connection refused at once)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/jwks.json"


def idp_claims(
    issuer: str, audience: str | list[str], sub: str = "auth0|alice", ttl: int = 600, **extra: t.Any
) -> dict[str, t.Any]:
    now = int(time.time())
    claims: dict[str, t.Any] = {"iss": issuer, "sub": sub, "aud": audience, "iat": now, "exp": now + ttl}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def started() -> Iterator[IdPServer]:
    server = IdPServer()
    try:
        yield server
    finally:
        server.stop()


class RawServer:
    """A JWK Set "server" on 127.0.0.1 that answers every request with raw bytes of the test's.

    For what :class:`IdPServer` (a well-behaved ``http.server``) cannot send: a malformed
    status line, or a status line and headers dribbled one byte every ``interval`` seconds
    (a slowloris on the response's head). It stops writing when the client hangs up.
    """

    def __init__(self, answer: bytes, *, interval: float | None = None) -> None:
        self.answer = answer
        self.interval = interval
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/jwks.json"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(4096)
                    if not data:
                        return
                    request += data
                if self.interval is None:
                    conn.sendall(self.answer)
                else:
                    for i in range(len(self.answer)):
                        conn.sendall(self.answer[i : i + 1])
                        if self._stop.wait(self.interval):
                            break
            except OSError:
                pass  # the client hung up (it gave up at its deadline)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


def slow_head(body: bytes, *, head_bytes: int = 64) -> bytes:
    """A 200 response whose status line and headers are ``head_bytes`` long or more."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    padding = max(0, head_bytes - len(head) - len(b"X-Pad: \r\n\r\n"))
    return head + b"X-Pad: " + b"p" * padding + b"\r\n\r\n" + body
