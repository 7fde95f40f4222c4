"""End to end: the shield issuing with a Token Status List in one process, the shield in
resource-server mode consuming it in another, over real HTTP on 127.0.0.1.

The issuing app (tests/status_issuer_app.py) runs under gunicorn with two workers on a
SQLite store; logins, refreshes and revocations are HTTP calls to it. The resource server is
an app of the test process that knows the issuer only by URL. Each kind of revocation at the
issuer is refused at the resource server within the list's ttl plus one fetch. Real time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from tests.conftest import AppFactory
from tests.conftest import bearer
from tests.status_issuer_app import AUDIENCE
from tests.test_multiprocess import ROOT
from tests.test_multiprocess import free_port
from tests.test_multiprocess import gunicorn_command

TTL = 1  # the issuing app's JWT_SHIELD_STATUS_LIST_TTL


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


KEYS = {"old": _pem(), "new": _pem()}


class Issuer:
    """The issuing app's process; :meth:`restart` deploys another key ring on the same port
    and store (a key rotation)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, kids: list[str]) -> None:
        ring = [{"kid": kid, "alg": "ES256", "key": KEYS[kid]} for kid in kids]
        env = {
            **os.environ,
            "SHIELD_TEST_ISSUER": self.url,
            "SHIELD_TEST_DB": str(self.db),
            "SHIELD_TEST_KEYS": json.dumps(ring),
        }
        command = [*gunicorn_command(), "-w", "2", "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "2"]
        self.process = subprocess.Popen(
            [*command, "tests.status_issuer_app:create_app()"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:  # bounded: until the server answers or the deadline passes
            try:
                self.call("GET", "/health")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    stderr = self.process.stderr.read().decode() if self.process.stderr is not None else ""
                    raise RuntimeError(f"the issuing app did not start: {stderr[-2000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)  # by its PID: our own child
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self, kids: list[str]) -> None:
        self.stop()
        self.start(kids)

    def call(self, method: str, path: str, body: t.Any = None) -> t.Any:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            payload = json.dumps(body) if body is not None else None
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            assert response.status == 200, (response.status, data[:500])
            return json.loads(data)
        finally:
            conn.close()


@contextmanager
def issuing(db: Path, kids: list[str]) -> Iterator[Issuer]:
    issuer = Issuer(db)
    try:
        issuer.start(kids)
        yield issuer
    finally:
        issuer.stop()


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[Issuer]:
    with issuing(tmp_path / "issuer.db", ["old"]) as server:
        yield server


def _refused_within(rs: Flask, token: str, bound: float) -> float:
    """Seconds until ``rs`` refuses ``token`` with 401 (polled every 5 ms); fails past ``bound``."""
    client = rs.test_client()
    started = time.monotonic()
    while True:
        response = client.get("/api/me", headers=bearer(token))
        if response.status_code == 401:
            assert response.json is not None and "revoked by its issuer" in response.json["error_description"]
            return time.monotonic() - started
        assert response.status_code == 200, response.json
        assert time.monotonic() - started < bound, f"still accepted after {bound} s"
        time.sleep(0.005)


@pytest.mark.parametrize("kind", ["token", "family", "subject", "refresh-reuse", "key"])
def test_each_kind_of_revocation_at_the_issuer_is_refused_at_the_resource_server(
    make_app: AppFactory, issuer: Issuer, kind: str
) -> None:
    rs, _ = make_app(
        {
            "JWT_SHIELD_SECRET_KEY": None,
            "JWT_SHIELD_JWKS_URL": issuer.url + "/.well-known/jwks.json",
            "JWT_SHIELD_ISSUER": issuer.url,
            "JWT_SHIELD_AUDIENCE": AUDIENCE,
            "JWT_SHIELD_STATUS_LIST_MIN_TTL": 1,
            "JWT_SHIELD_RATE_LIMIT": None,
        }
    )
    client = rs.test_client()
    pair = issuer.call("POST", "/login?sub=alice")
    access = pair["access_token"]
    if kind == "key":
        issuer.restart(["new", "old"])  # a rotation deployed: "new" signs, "old" only verifies
    me = client.get("/api/me", headers=bearer(access))
    assert me.status_code == 200 and me.json is not None
    bystander = issuer.call("POST", "/login?sub=bob")["access_token"]
    assert client.get("/api/me", headers=bearer(bystander)).status_code == 200
    if kind == "refresh-reuse":
        issuer.call("POST", "/refresh", {"refresh_token": pair["refresh_token"]})
        conn = HTTPConnection("127.0.0.1", issuer.port, timeout=5)
        body = json.dumps({"refresh_token": pair["refresh_token"]})
        conn.request("POST", "/refresh", body=body, headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 400  # the second use: the whole session is revoked
        conn.close()
    else:
        value = {"token": access, "family": me.json.get("sid"), "subject": "alice", "key": "old"}[kind]
        issuer.call("POST", "/revoke", {"kind": kind, "value": value})
    delay = _refused_within(rs, access, TTL + 2.5)
    assert delay <= TTL + 2.0  # the list's ttl plus one fetch
    assert client.get("/api/me", headers=bearer(bystander)).status_code == 200
    print(f"\n{kind}: refused at the resource server {delay * 1000:.0f} ms after the revocation")
