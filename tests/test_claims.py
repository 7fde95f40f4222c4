"""What a view and a revocation_checker get: claims that behave as a dict everywhere a user
passes one, and that no view can change for the token's next request."""

from __future__ import annotations

import copy
import json
import pickle
import typing as t

import pytest
from flask import Flask
from flask import jsonify

from flask_jwt_shield import JWTShield
from flask_jwt_shield import current_claims
from flask_jwt_shield import get_claims

from .conftest import AppFactory
from .conftest import bearer

EXTRA = {"role": "admin", "groups": ["staff", "ops"], "profile": {"name": "Alice", "tags": ["a"]}}


@pytest.fixture
def claims_app(make_app: AppFactory) -> tuple[Flask, JWTShield, str]:
    app, shield = make_app()

    @app.get("/return-claims")
    def return_claims() -> t.Any:
        return get_claims()

    @app.get("/jsonify-claims")
    def jsonify_claims() -> t.Any:
        return jsonify(get_claims())

    @app.get("/nested-claims")
    def nested_claims() -> t.Any:
        return {"claims": get_claims()}

    @app.get("/json-dumps")
    def json_dumps() -> t.Any:
        return json.dumps(get_claims(), sort_keys=True), 200, {"Content-Type": "application/json"}

    @app.get("/merged")
    def merged() -> t.Any:
        claims = get_claims()
        return {
            "is_dict": isinstance(claims, dict),
            "proxy_is_dict": isinstance(current_claims, dict),
            "merged": claims | {"extra": 1},
            "copied": dict(claims),
            "spread": {**claims, "spread": True},
        }

    @app.get("/mutate")
    def mutate() -> t.Any:
        claims = get_claims()
        attempts: dict[str, t.Callable[[], object]] = {
            "setitem": lambda: claims.__setitem__("role", "root"),
            "delitem": lambda: claims.__delitem__("role"),
            "update": lambda: claims.update(role="root"),
            "ior": lambda: claims.__ior__({"role": "root"}),
            "pop": lambda: claims.pop("role"),
            "popitem": lambda: claims.popitem(),
            "setdefault": lambda: claims.setdefault("new", 1),
            "clear": lambda: claims.clear(),
            "nested_list": lambda: claims["groups"].append("root"),
            "nested_list_item": lambda: claims["groups"].__setitem__(0, "root"),
            "nested_list_iadd": lambda: claims["groups"].__iadd__(["root"]),
            "nested_dict": lambda: claims["profile"].__setitem__("name", "Mallory"),
            "deep_list": lambda: claims["profile"]["tags"].append("root"),
        }
        refused = []
        for name, attempt in attempts.items():
            try:
                attempt()
            except TypeError:
                refused.append(name)
        # What a view that needs to change the claims should do: copy first.
        mine = dict(claims)
        mine["role"] = "changed-in-a-copy"
        return {"refused": refused, "attempts": sorted(attempts), "copy": mine["role"]}

    with app.app_context():
        token = shield.create_access_token("alice", claims=EXTRA)
    return app, shield, token


@pytest.mark.parametrize("path", ["/return-claims", "/jsonify-claims", "/json-dumps"])
def test_a_view_can_return_the_claims(claims_app: tuple[Flask, JWTShield, str], path: str) -> None:
    app, _, token = claims_app
    r = app.test_client().get(path, headers=bearer(token))
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert body["sub"] == "alice" and body["role"] == "admin"
    assert body["groups"] == ["staff", "ops"] and body["profile"] == {"name": "Alice", "tags": ["a"]}


def test_claims_inside_a_returned_dict(claims_app: tuple[Flask, JWTShield, str]) -> None:
    app, _, token = claims_app
    r = app.test_client().get("/nested-claims", headers=bearer(token))
    assert r.status_code == 200
    assert r.get_json()["claims"]["sub"] == "alice"


def test_claims_are_a_dict_and_copies_are_plain_dicts(claims_app: tuple[Flask, JWTShield, str]) -> None:
    app, _, token = claims_app
    body = app.test_client().get("/merged", headers=bearer(token)).get_json()
    assert body["is_dict"] is True and body["proxy_is_dict"] is True
    assert body["merged"]["extra"] == 1 and body["merged"]["sub"] == "alice"
    assert body["copied"]["role"] == "admin" and body["spread"]["spread"] is True


def test_a_view_cannot_change_what_the_next_request_sees(claims_app: tuple[Flask, JWTShield, str]) -> None:
    app, _, token = claims_app
    client = app.test_client()
    body = client.get("/mutate", headers=bearer(token)).get_json()
    assert sorted(body["refused"]) == body["attempts"]
    assert body["copy"] == "changed-in-a-copy"
    # The same token again: served from the verified-token cache, unchanged.
    again = client.get("/return-claims", headers=bearer(token)).get_json()
    assert again["role"] == "admin"
    assert again["groups"] == ["staff", "ops"]
    assert again["profile"] == {"name": "Alice", "tags": ["a"]}


def test_the_cache_hands_out_the_same_object(claims_app: tuple[Flask, JWTShield, str]) -> None:
    """The warm path copies nothing: read-only claims are shared, not duplicated."""
    app, _, token = claims_app
    pipeline = app.extensions["jwt_shield"]
    first, _ = pipeline.codec.verify(token)
    second, _ = pipeline.codec.verify(token)
    assert first is second


def test_copy_deepcopy_and_pickle_give_changeable_dicts(app: Flask, shield: JWTShield) -> None:
    with app.app_context():
        token = shield.create_access_token("alice", claims=EXTRA)
    claims, _ = app.extensions["jwt_shield"].codec.verify(token)
    for clone in (copy.copy(claims), copy.deepcopy(claims), pickle.loads(pickle.dumps(claims))):
        assert type(clone) is dict and clone == claims
        clone["role"] = "changed"
    deep = copy.deepcopy(claims)
    assert type(deep["groups"]) is list and type(deep["profile"]) is dict
    deep["groups"].append("x")
    assert claims["groups"] == ["staff", "ops"] and claims["role"] == "admin"


def test_revocation_checker_receives_a_dict(make_app: AppFactory) -> None:
    app, shield = make_app()
    seen: list[t.Any] = []

    @shield.revocation_checker
    def check(claims: t.Any) -> bool:
        seen.append(claims)
        return bool(json.loads(json.dumps(claims))["role"] == "banned")

    with app.app_context():
        ok = shield.create_access_token("alice", claims={"role": "user"})
        banned = shield.create_access_token("bob", claims={"role": "banned"})
    client = app.test_client()
    assert client.get("/api/me", headers=bearer(ok)).status_code == 200
    assert client.get("/api/me", headers=bearer(banned)).status_code == 401
    assert all(isinstance(c, dict) for c in seen) and len(seen) == 2
    assert dict(seen[0]) | {"x": 1} == {**seen[0], "x": 1}


def test_optional_claims_on_an_exempt_endpoint_are_an_empty_dict(app: Flask) -> None:
    with app.test_request_context("/public"):
        claims = get_claims(optional=True)
        assert claims == {} and isinstance(claims, dict)
        assert json.dumps(claims) == "{}"


def test_jsonify_current_claims_like_get_claims(make_app: AppFactory) -> None:
    """Newcomer's list, item 12: ``jsonify(current_claims)`` works (the FJE habit,
    ``jsonify(get_jwt())``). Returning the proxy itself stays ``return get_claims()``."""
    app, shield = make_app(defer_init=True)

    @app.get("/api/jsonified")
    def jsonified() -> t.Any:
        return jsonify(current_claims)

    shield.init_app(app)
    with app.app_context():
        token = shield.create_access_token("alice", claims={"role": "admin"})
    r = app.test_client().get("/api/jsonified", headers=bearer(token))
    assert r.status_code == 200
    assert r.json is not None and r.json["sub"] == "alice" and r.json["role"] == "admin"
