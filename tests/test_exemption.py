"""@shield.exempt and @shield.limit hold under other decorators (functools.wraps)."""

from __future__ import annotations

import functools
import typing as t

import pytest
from flask import Blueprint
from flask import Flask

from flask_jwt_shield import JWTShield
from flask_jwt_shield import get_claims
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
        assert current_state().config.sessions.access_token_ttl == 61
    bare = Flask("bare")
    with bare.app_context(), pytest.raises(RuntimeError, match="Did you forget to call"):
        current_state()


# -- what Flask-JWT-Extended users expect (newcomer's list, item 12) ---------------------------


def test_optional_authentication(make_app: AppFactory) -> None:
    app, shield = make_app(defer_init=True)

    @app.get("/greeting")
    @shield.optional
    def greeting() -> t.Any:
        return {"hello": get_claims(optional=True).get("sub", "stranger")}

    shield.init_app(app)
    client = app.test_client()
    with app.app_context():
        token = shield.create_access_token("alice")
        revoked = shield.create_access_token("bob")
        shield.revoke_token(revoked)
    assert client.get("/greeting").json == {"hello": "stranger"}
    assert client.get("/greeting", headers=bearer(token)).json == {"hello": "alice"}
    assert client.get("/greeting", headers=bearer("not.a.token")).status_code == 401
    assert client.get("/greeting", headers=bearer(revoked)).status_code == 401


def test_exempt_blueprint(make_app: AppFactory) -> None:
    app, shield = make_app(defer_init=True)
    health = shield.exempt(Blueprint("health", __name__))

    @health.get("/healthz")
    def healthz() -> t.Any:
        return {"ok": True}

    parent = Blueprint("parent", __name__)
    inner = shield.exempt(Blueprint("inner", __name__))

    @inner.get("/inner")
    def inner_view() -> t.Any:
        return {"ok": True}

    parent.register_blueprint(inner)
    app.register_blueprint(health)
    app.register_blueprint(health, name="health_again", url_prefix="/again")
    app.register_blueprint(parent, url_prefix="/p")
    shield.init_app(app)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/again/healthz").status_code == 200
    assert client.get("/p/inner").status_code == 200
    assert client.get("/api/me").status_code == 401


def test_exempt_endpoint_patterns_and_typos(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    app, shield = make_app({"JWT_SHIELD_EXEMPT_ENDPOINTS": ["public_*", "helth"]}, defer_init=True)

    @app.get("/public-a")
    def public_a() -> t.Any:
        return {"ok": True}

    @app.get("/health")
    def health() -> t.Any:
        return {"ok": True}

    shield.init_app(app)
    client = app.test_client()
    with caplog.at_level("WARNING", logger="flask_jwt_shield"):
        assert client.get("/public-a").status_code == 200
        assert client.get("/health").status_code == 401  # the typo protects it
    assert "'helth', which names no endpoint" in caplog.text and "Did you mean 'health'?" in caplog.text


def test_a_checker_registered_in_an_app_factory_does_not_pile_up(make_app: AppFactory) -> None:
    calls: list[str] = []
    shield = JWTShield()

    def create_app() -> Flask:
        app, _ = make_app(defer_init=True)

        @shield.revocation_checker
        def is_revoked(claims: t.Any) -> bool:
            calls.append(claims["sub"])
            return False

        shield.init_app(app)
        return app

    apps = [create_app() for _ in range(3)]
    with apps[-1].app_context():
        token = shield.create_access_token("alice")
    assert apps[-1].test_client().get("/api/me", headers=bearer(token)).status_code == 200
    assert calls == ["alice"]
