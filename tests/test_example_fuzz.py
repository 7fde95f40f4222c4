"""No request makes the example app fail: every route answers odd input with a 4xx JSON error.

Users copy the example app, so it is held to the project's rule: never a 500, never a stack
trace. A Hypothesis property runs over every route of the app's URL map with any method,
body, content type, ``Authorization`` header, query string and ``X-Forwarded-For``; genuine
tokens are mixed in so that requests reach the views and not only the pipeline. Known
offenders are named regression tests below it.
"""

from __future__ import annotations

import base64
import json
import typing as t
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from example_app.app import create_app
from example_app.app import shield

from .conftest import bearer
from .conftest import json_of

# Every route and the methods it serves.
ROUTES: dict[str, set[str]] = {
    "/": {"GET"},
    "/auth/login": {"POST"},
    "/auth/step-up": {"POST"},
    "/auth/refresh": {"POST"},
    "/auth/logout": {"POST"},
    "/auth/logout-all": {"POST"},
    "/auth/change-password": {"POST"},
    "/api/me": {"GET"},
    "/api/claims": {"GET"},
    "/api/sessions": {"GET"},
    "/api/events": {"GET"},
    "/api/notes": {"GET", "POST"},
    "/api/reports": {"POST"},
    "/api/admin/forget-places": {"POST"},
    "/.well-known/jwks.json": {"GET"},
    # The OAuth endpoints for other services (RFC 7009, RFC 7662) and their metadata.
    "/oauth/revoke": {"POST"},
    "/oauth/introspect": {"POST"},
    "/.well-known/oauth-authorization-server": {"GET"},
    "/.well-known/oauth-protected-resource": {"GET"},
    "/.well-known/oauth-protected-resource/<path:suffix>": {"GET"},
    # The Token Status List (draft-ietf-oauth-status-list) and its aggregation.
    "/statuslists/1": {"GET"},
    "/statuslists": {"GET"},
    # The Shared Signals transmitter (refused without SSF_RECEIVER_SECRET, but for discovery).
    "/.well-known/ssf-configuration": {"GET"},
    "/.well-known/ssf-configuration/<path:suffix>": {"GET"},
    "/ssf/streams": {"GET", "POST", "PATCH", "PUT", "DELETE"},
    "/ssf/status": {"GET", "POST"},
    "/ssf/verify": {"POST"},
    "/ssf/poll/<stream_id>": {"POST"},
    # HTML pages for people: the admin login and the shield's dashboard.
    "/admin/login": {"GET", "POST"},
    "/admin/logout": {"POST"},
    "/shield/": {"GET"},
    "/shield/subject": {"GET"},
    "/shield/keys": {"GET"},
    "/shield/revoke/session": {"POST"},
    "/shield/revoke/token": {"POST"},
    "/shield/revoke/subject": {"POST"},
    "/shield/revoke/key": {"POST"},
    "/shield/forget-places": {"POST"},
}
# Pages for a browser answer their own errors in HTML (the API answers JSON).
HTML_PAGES = {"/admin/login", "/admin/logout"} | {p for p in ROUTES if p.startswith("/shield/")}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    # The limiter is raised out of reach: this fuzzes request handling, and hundreds of
    # requests on one token would otherwise end in 429s (tests/test_ratelimit.py covers those).
    app = create_app(
        {"TESTING": True, "JWT_SHIELD_RATE_LIMIT": "100000/minute", "JWT_SHIELD_SPIKE_THRESHOLD": "1000000/minute"},
        instance_path=str(tmp_path_factory.mktemp("fuzz") / "instance"),
    )
    yield app


def test_the_fuzzed_routes_are_all_the_routes(fuzz_app: Flask) -> None:
    rules: dict[str, set[str]] = {}
    for r in fuzz_app.url_map.iter_rules():
        if r.endpoint != "static" and not r.endpoint.endswith(".static"):
            rules.setdefault(r.rule, set()).update((r.methods or set()) - {"HEAD", "OPTIONS"})
    assert rules == ROUTES


def _fresh_pair(app: Flask) -> dict[str, str]:
    with app.app_context():
        return shield.issue_tokens("alice", claims={"role": "admin"}).as_dict()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
NAMES = [
    "grant_type",
    "refresh_token",
    "scope",
    "client_id",
    "client_secret",
    "username",
    "password",
    "access_token",
    "current_password",
    "new_password",
    "text",
    "csrf_token",
    "sid",
    "jti",
    "sub",
    "kid",
    "token",
    "token_type_hint",
    "stream_id",
    "delivery",
    "events_requested",
    "status",
    "maxEvents",
    "ack",
    "setErrs",
]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@st.composite
def requests_(draw: st.DrawFn) -> dict[str, t.Any]:
    # The routes that read a body are drawn more often than the others.
    path = draw(st.sampled_from(sorted(ROUTES)) | st.sampled_from(["/auth/login", "/auth/refresh"]))
    # Mostly the route's own method; sometimes another one.
    method = draw(
        st.sampled_from(sorted(ROUTES[path]))
        | st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    )
    # Placeholders, replaced by a genuine token of a fresh session in the test.
    secret_value = st.sampled_from(["$REFRESH", "$ACCESS", "refresh_token", "alice", "wonderland", ""])
    value = secret_value | st.text(max_size=30)
    kind = draw(st.sampled_from(["none", "bytes", "json", "form", "object"]))
    if kind == "bytes":
        body: bytes = draw(st.binary(max_size=200))
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "object":  # a JSON object with the names the routes read, odd values
        fields = draw(st.dictionaries(st.sampled_from(NAMES), value | json_values, max_size=5))
        body = json.dumps(fields).encode()
    elif kind == "form":
        pairs = draw(st.lists(st.tuples(st.sampled_from(NAMES) | st.text(max_size=8), value), max_size=6))
        body = urlencode(pairs).encode()
    else:
        body = b""
    # Mostly the type that matches the body, so that the views' parsers are reached.
    matching = {"json": "application/json", "object": "application/json", "form": "application/x-www-form-urlencoded"}
    content_type = draw(
        st.just(matching.get(kind))
        | st.none()
        | st.sampled_from(
            [
                "application/json",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "multipart/form-data",
                "text/plain",
                "application/json; charset=latin-1",
                "application/x-www-form-urlencoded; charset=utf-16",
                "application/*",
            ]
        )
        | header_text
    )
    headers: dict[str, str] = {}
    auth = draw(st.sampled_from(["none", "access", "refresh", "basic", "text"]))
    if auth == "access":
        headers["Authorization"] = "Bearer $ACCESS"
    elif auth == "refresh":
        headers["Authorization"] = "Bearer $REFRESH"
    elif auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(draw(st.binary(max_size=30))).decode()
    elif auth == "text":
        headers["Authorization"] = draw(header_text)
    forwarded = draw(
        st.none()
        | st.sampled_from(["192.0.2.10", "203.0.113.7", "::1", "not-an-ip", "", "1.2.3.4, 5.6.7.8", "999.1.1.1"])
        | header_text
    )
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    query = draw(st.sampled_from(["", "access_token=$ACCESS", "refresh_token=$REFRESH", "x=1"]) | header_text)
    return {
        "path": path,
        "method": method,
        "body": body,
        "content_type": content_type,
        "headers": headers,
        "query": query,
    }


def _fill(text: str, pair: dict[str, str]) -> str:
    return text.replace("$ACCESS", pair["access_token"]).replace("$REFRESH", pair["refresh_token"])


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(spec=requests_())
def test_no_request_gets_a_5xx(fuzz_app: Flask, spec: dict[str, t.Any]) -> None:
    pair = _fresh_pair(fuzz_app)
    body = _fill(spec["body"].decode("latin-1"), pair).encode("latin-1")
    headers = {k: _fill(v, pair) for k, v in spec["headers"].items()}
    r = fuzz_app.test_client().open(
        spec["path"],
        method=spec["method"],
        data=body,
        content_type=spec["content_type"],
        headers=headers,
        query_string=_fill(spec["query"], pair),
    )
    event(f"{spec['path']} {r.status_code}")
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True))
    text = r.get_data(as_text=True)
    assert "Traceback" not in text and pair["refresh_token"] not in text
    if r.status_code >= 400 and spec["method"] != "HEAD":
        if spec["path"] in HTML_PAGES and r.mimetype == "text/html":
            return  # a browser page's own error page (routing errors there are JSON, like everywhere)
        assert r.mimetype == "application/json", text[:200]
        error = json_of(r)
        assert isinstance(error, dict) and isinstance(error.get("error"), str)


# -- named regressions: bodies that raised inside the example's views --------------------


BAD_BODIES = [
    ("[null, null]", "application/json"),  # AttributeError: 'list' object has no attribute 'get'
    ('"alice"', "application/json"),
    ("null", "application/json"),
    ("[" * 50_000 + "]" * 50_000, "application/json"),  # RecursionError is not a ValueError
    ('{"username": ["alice"], "password": {"x": 1}}', "application/json"),
    ('{"username": "alice", "password": null}', "application/json"),
    ("\xff\xfe{}", "application/json"),
    ("username=alice&password=wonderland", "application/x-www-form-urlencoded"),
    ("{}", "text/plain"),
    ("", ""),
]


@pytest.mark.parametrize("path", ["/auth/login", "/auth/step-up", "/auth/refresh"])
@pytest.mark.parametrize(("body", "content_type"), BAD_BODIES)
def test_bad_body_is_a_4xx_json_error(tmp_path: Path, path: str, body: str, content_type: str) -> None:
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    r = app.test_client().post(path, data=body.encode("latin-1"), content_type=content_type)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.mimetype == "application/json" and json_of(r)["error"] == "invalid_request"


@pytest.mark.parametrize("body", ["[null, null]", "[1]", "{}", "garbage"])
def test_bad_body_on_a_protected_route(tmp_path: Path, body: str) -> None:
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    pair = _fresh_pair(app)
    r = app.test_client().post(
        "/auth/logout", data=body, content_type="application/json", headers=bearer(pair["access_token"])
    )
    assert r.status_code == 200  # the body is not read there, so it cannot break anything


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/auth/login", 405), ("GET", "/nowhere", 404), ("DELETE", "/auth/refresh", 405)],
)
def test_flask_errors_are_json_too(tmp_path: Path, method: str, path: str, status: int) -> None:
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    r = app.test_client().open(path, method=method)
    assert r.status_code == status and r.mimetype == "application/json"
    assert set(json_of(r)) == {"error", "error_description"}
    if status == 405:
        assert "POST" in r.headers["Allow"]


def test_too_large_form_on_a_protected_route_is_json(tmp_path: Path) -> None:
    app = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 1000}, instance_path=str(tmp_path / "instance"))
    pair = _fresh_pair(app)
    r = app.test_client().post(
        "/api/reports",
        data="x=" + "a" * 5000,
        content_type="application/x-www-form-urlencoded",
        headers=bearer(pair["access_token"]),
    )
    assert r.status_code == 413 and r.mimetype == "application/json"
