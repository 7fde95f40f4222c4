"""Two shield apps for the Shared Signals tests, each served from a process of its own on
127.0.0.1 by werkzeug's threaded server.

``python -m tests.ssf_apps issuer PORT DIR`` -- issues tokens (ES256 key ring ``k2`` signing,
``k1`` verify-only) and transmits their revocations; test-only routes revoke and mint.

``python -m tests.ssf_apps receiver PORT DIR ISSUER DELIVERY POLL_INTERVAL`` -- verifies the
issuer's tokens (resource-server mode) and connects to its transmitter from configuration
only; ``POST /fault`` makes its push endpoint fail (``5xx``) or slow (``slow``).

Each prints ``ready`` on its first line once it serves. :func:`started` runs one and stops
it by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "receiver-api-secret-0123456789abcdefghijklmnop"
AUDIENCE = "https://api.example.com"


def _keys(folder: Path) -> list[dict[str, str]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ring = []
    for kid in ("k2", "k1"):
        path = folder / f"{kid}.pem"
        if not path.exists():
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            path.write_bytes(pem)
        ring.append({"kid": kid, "key": path.read_text()})
    return ring


def issuer_app(port: int, folder: Path) -> t.Any:
    import jwt
    from flask import Flask
    from flask import request

    from flask_jwt_shield import JWTShield
    from flask_jwt_shield.ssf import bearer_receivers

    app = Flask("ssf_issuer", instance_path=str(folder))
    ring = _keys(folder)
    app.config.update(
        JWT_SHIELD_ALGORITHM="ES256",
        JWT_SHIELD_KEYS=ring,
        JWT_SHIELD_ISSUER=f"http://127.0.0.1:{port}",
        JWT_SHIELD_AUDIENCE=AUDIENCE,
        JWT_SHIELD_STORE_URI=f"sqlite:///{folder}/issuer.db",
        JWT_SHIELD_RATE_LIMIT=None,
        JWT_SHIELD_REFRESH_RATE_LIMIT=None,
        JWT_SHIELD_REFRESH_ADDRESS_RATE_LIMIT=None,
        JWT_SHIELD_SSF_TRANSMIT=True,
        JWT_SHIELD_SSF_PUSH_TIMEOUT=1.0,
        JWT_SHIELD_SSF_PUSH_RETRIES=1,
        JWT_SHIELD_SSF_PUSH_RETRY_DELAY=0.2,
        JWT_SHIELD_SSF_POLL_WAIT=2.0,
    )
    shield = JWTShield(app)
    app.register_blueprint(shield.jwks_blueprint())
    app.register_blueprint(shield.ssf_blueprint(authorize=bearer_receivers({"api": TOKEN})))

    @app.post("/login")
    @shield.exempt
    def login() -> t.Any:
        return shield.issue_tokens(request.args.get("sub", "alice")).as_dict()

    @app.post("/refresh")
    @shield.exempt
    def refresh() -> t.Any:
        return shield.refresh((request.get_json(silent=True) or {}).get("refresh_token")).as_dict()

    @app.post("/revoke")
    @shield.exempt
    def revoke() -> t.Any:
        body = request.get_json()
        kind, value = body["kind"], body["value"]
        {
            "token": shield.revoke_token,
            "session": shield.revoke_family,
            "subject": shield.revoke_subject,
            "key": shield.revoke_key,
        }[kind](value)
        return {"ok": True}

    @app.get("/old-token")
    @shield.exempt
    def old_token() -> t.Any:
        # A token signed by the verify-only key k1, as before a rotation.
        claims = jwt.decode(
            shield.create_access_token(request.args.get("sub", "dave")), options={"verify_signature": False}
        )
        old = next(k for k in ring if k["kid"] == "k1")
        return {"token": jwt.encode(claims, old["key"], "ES256", headers={"kid": "k1", "typ": "at+jwt"})}

    @app.get("/pending")
    @shield.exempt
    def pending() -> t.Any:
        transmitter = shield.ssf_transmitter()
        assert transmitter is not None
        streams = transmitter.streams.all()
        return {s.stream_id: len(transmitter.streams.pending(s.stream_id, 100_000)) for s in streams}

    return app


def receiver_app(port: int, folder: Path, issuer: str, delivery: str, interval: float) -> t.Any:
    from flask import Flask
    from flask import Response
    from flask import request

    from flask_jwt_shield import JWTShield
    from flask_jwt_shield import current_claims

    app = Flask("ssf_receiver", instance_path=str(folder))
    app.config.update(
        JWT_SHIELD_JWKS_URL=f"{issuer}/.well-known/jwks.json",
        JWT_SHIELD_ISSUER=issuer,
        JWT_SHIELD_AUDIENCE=AUDIENCE,
        JWT_SHIELD_ALLOWED_ALGORITHMS=["ES256"],
        JWT_SHIELD_STORE_URI=f"sqlite:///{folder}/receiver.db",
        JWT_SHIELD_RATE_LIMIT=None,
        JWT_SHIELD_SSF_RECEIVE_FROM=issuer,
        JWT_SHIELD_SSF_RECEIVE_TOKEN=TOKEN,
        JWT_SHIELD_SSF_RECEIVE_DELIVERY=delivery,
        JWT_SHIELD_SSF_RECEIVE_POLL_INTERVAL=interval,
    )
    if delivery == "push":
        app.config["JWT_SHIELD_SSF_RECEIVE_PUSH_URL"] = f"http://127.0.0.1:{port}/security-events"
    shield = JWTShield(app)
    app.register_blueprint(shield.security_events_blueprint())
    fault: dict[str, t.Any] = {"mode": "ok", "delay": 0.0}

    @app.before_request
    def faulty_push() -> Response | None:
        if request.path == "/security-events":
            if fault["mode"] == "5xx":
                return Response("down for maintenance", status=503)
            if fault["mode"] == "slow":
                time.sleep(fault["delay"])
        return None

    @app.get("/api")
    def api() -> t.Any:
        return {"sub": current_claims["sub"]}

    @app.post("/fault")
    @shield.exempt
    def set_fault() -> t.Any:
        fault.update(request.get_json())
        return fault

    @app.get("/ssf-stats")
    @shield.exempt
    def stats() -> t.Any:
        connection = shield.ssf_connection()
        assert connection is not None
        s = connection.stats()
        return {"ready": connection.ready.is_set(), "stream_id": s.stream_id, "applied": s.applied, "polls": s.polls}

    return app


def main(argv: list[str]) -> None:
    import logging

    from werkzeug.serving import make_server

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kind, port, folder = argv[0], int(argv[1]), Path(argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "issuer":
        app = issuer_app(port, folder)
    else:
        app = receiver_app(port, folder, argv[3], argv[4], float(argv[5]))
    server = make_server("127.0.0.1", port, app, threaded=True)
    print("ready", flush=True)
    server.serve_forever()


class App:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


@contextmanager
def started(*args: t.Any, log: Path | None = None) -> Iterator[App]:
    """Run ``python -m tests.ssf_apps *args`` until the block ends; stop it by its PID."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stderr = open(log, "a") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ssf_apps", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = _first_line(process, 30.0)
        if line.strip() != "ready":
            raise RuntimeError(f"{args[0]} did not start: {line!r}")
        yield App(process, int(args[1]))
    finally:
        stop(process)
        if log is not None and not isinstance(stderr, int):
            stderr.close()


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        if not selector.select(timeout):
            raise RuntimeError(f"no answer within {timeout} s")
        return process.stdout.readline()
    finally:
        selector.close()


def call(url: str, method: str = "GET", body: t.Any = None, token: str | None = None) -> tuple[int, t.Any]:
    """One request; (status, JSON body or None)."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(payload) if payload else None
    except ValueError:
        return response.status, None


if __name__ == "__main__":
    main(sys.argv[1:])
