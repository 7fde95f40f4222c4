"""@shield.exempt and @shield.limit hold under other decorators (functools.wraps)."""

from __future__ import annotations

import functools
import typing as t

import pytest
from flask import Flask

from flask_jwt_shield.state import current_state

from .conftest import AppFactory
from .conftest import bearer


def outer(view: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """Another library's decorator, applied outside the shield's (as limiter.limit is)."""

    @functools.wraps(view)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        return view(*args, **kwargs)

    return wrapper


def test_exempt_under_another_decorator(make_app: AppFactory) -> None:
    app, shield = make_app(defer_init=True)

    @app.get("/health")
    @outer
    @outer
    @shield.exempt
    def health() -> t.Any:
        return {"ok": True}

    @app.get("/wrapped-private")
    @outer
    def private() -> t.Any:
        return {"ok": True}

    shield.init_app(app)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/wrapped-private").status_code == 401  # wrapping alone exempts nothing


def test_limit_under_another_decorator(make_app: AppFactory) -> None:
    app, shield = make_app(defer_init=True)

    @app.get("/reports")
    @outer
    @shield.limit("2/minute")
    def reports() -> t.Any:
        return {"ok": True}

    shield.init_app(app)
    with app.app_context():
        token = shield.create_access_token("alice")
    client = app.test_client()
    assert [client.get("/reports", headers=bearer(token)).status_code for _ in range(3)] == [200, 200, 429]


def test_a_wrapped_cycle_does_not_hang(make_app: AppFactory) -> None:
    app, shield = make_app(defer_init=True)

    def view() -> t.Any:
        return {"ok": True}

    view.__wrapped__ = view  # type: ignore[attr-defined]
    app.add_url_rule("/odd", view_func=view)
    shield.init_app(app)
    assert app.test_client().get("/odd").status_code == 401


def test_the_app_state_is_reachable(make_app: AppFactory) -> None:
    app, _ = make_app({"JWT_SHIELD_ACCESS_TOKEN_TTL": 61})
    with app.app_context():
        assert current_state() is app.extensions["jwt_shield"]
        assert current_state().config.access_token_ttl == 61
    bare = Flask("bare")
    with bare.app_context(), pytest.raises(RuntimeError, match="Did you forget to call"):
        current_state()
