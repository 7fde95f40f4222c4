"""Shared fixtures: apps built from a config dict, a controllable clock, a real redis-server."""

from __future__ import annotations

import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask import jsonify
from flask import request
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_jwt_shield import JWTShield
from flask_jwt_shield import current_claims

from .idp_util import IdPServer
from .redis_util import RedisCluster
from .redis_util import RedisServer
from .redis_util import start_cluster
from .redis_util import start_redis

SECRET = "test-secret-" + "k" * 40


class Clock:
    """``time.time()`` under the test's control: tests move time, they never sleep."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(time, "time", c)
    return c


AppFactory = Callable[..., tuple[Flask, JWTShield]]


@pytest.fixture
def make_app(tmp_path: Path) -> AppFactory:
    """Build an app with the shield from a config dict; routes every test can use:

    ``GET /api/me`` (protected, returns the claims), ``POST /login`` (exempt, issues a
    pair for ``?sub=``), ``POST /refresh`` (exempt), ``GET /public`` (exempt).
    """

    def factory(
        config: dict[str, t.Any] | None = None, *, defer_init: bool = False, **shield_kwargs: t.Any
    ) -> tuple[Flask, JWTShield]:
        app = Flask("shield_test", instance_path=str(tmp_path / "instance"))
        app.testing = True
        app.config["JWT_SHIELD_SECRET_KEY"] = SECRET
        app.config.update(config or {})
        shield = JWTShield(**shield_kwargs)

        @app.get("/api/me")
        def me() -> t.Any:
            return jsonify(dict(current_claims))

        @app.post("/login")
        @shield.exempt
        def login() -> t.Any:
            return shield.issue_tokens(request.args.get("sub", "alice")).as_dict()

        @app.post("/refresh")
        @shield.exempt
        def refresh() -> t.Any:
            return shield.refresh((request.get_json(silent=True) or {}).get("refresh_token")).as_dict()

        @app.get("/public")
        @shield.exempt
        def public() -> t.Any:
            return {"ok": True}

        if not defer_init:
            shield.init_app(app)
        return app, shield

    return factory


@pytest.fixture
def app_shield(make_app: AppFactory) -> tuple[Flask, JWTShield]:
    return make_app()


@pytest.fixture
def app(app_shield: tuple[Flask, JWTShield]) -> Flask:
    return app_shield[0]


@pytest.fixture
def shield(app_shield: tuple[Flask, JWTShield]) -> JWTShield:
    return app_shield[1]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token(app: Flask, shield: JWTShield) -> str:
    with app.app_context():
        return shield.create_access_token("alice")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def json_of(response: TestResponse) -> t.Any:
    """``response.json``, which must be there: fails the test on a body that is not JSON."""
    body = response.json
    assert body is not None, f"expected a JSON body, got {response.mimetype!r}"
    return body


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server of this test's own on 127.0.0.1, stopped by PID afterwards.

    Skipped with a loud reason where redis-server is not installed; a failure when CI=true.
    """
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole session; tests keep apart by key prefix."""
    server = start_redis(tmp_path_factory.mktemp("shared-redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real three-master Redis Cluster for the whole session, stopped by PID afterwards."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def idp() -> Iterator[IdPServer]:
    """A test identity provider serving its JWK Set on 127.0.0.1, stopped afterwards."""
    server = IdPServer()
    try:
        yield server
    finally:
        server.stop()
