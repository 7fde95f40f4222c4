"""An API protected by Flask-JWT-Shield, on embedded defaults.

Run it with ``make run`` and follow the curl walk-through in README.md. State lives in
``example_app/instance/`` (the SQLite store and a generated secret); the GeoIP database is
the bundled demo one, which knows only the documentation address ranges.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import typing as t
from pathlib import Path

from flask import Blueprint
from flask import Flask
from flask import jsonify
from flask import request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.security import check_password_hash
from werkzeug.security import generate_password_hash

from flask_jwt_shield import ClientCredentials
from flask_jwt_shield import InvalidRequest
from flask_jwt_shield import JWTShield
from flask_jwt_shield import ShieldError
from flask_jwt_shield import current_claims
from flask_jwt_shield import get_claims

HERE = Path(__file__).resolve().parent

# Demo users. A real app checks passwords against its database.
USERS = {
    "alice": {"password": generate_password_hash("wonderland"), "role": "admin"},
    "bob": {"password": generate_password_hash("builder"), "role": "user"},
}

# Registered confidential clients (a server-side app, a CLI) and their hashed secrets. Public
# clients (a browser or mobile app) have no secret and need no entry.
CLIENTS = {"example-cli": generate_password_hash("example-cli-secret")}

shield = JWTShield()


def authenticate_client(client: ClientCredentials) -> bool:
    """The token endpoint's client check (RFC 6749 §2.3)."""
    registered = CLIENTS.get(client.client_id or "")
    if registered is None:
        return client.client_secret is None  # a public client: nothing to prove, no secret to claim
    return client.client_secret is not None and check_password_hash(registered, client.client_secret)


def _demo_secret(instance: Path) -> str:
    """A random signing secret kept in the instance folder, so restarts keep sessions."""
    path = instance / "jwt-secret.txt"
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(config: dict[str, t.Any] | None = None, *, instance_path: str | None = None) -> Flask:
    app = Flask(__name__, instance_path=instance_path or str(HERE / "instance"))
    app.config.update(
        JWT_SHIELD_SECRET_KEY=os.environ.get("JWT_SHIELD_SECRET_KEY") or _demo_secret(Path(app.instance_path)),
        # SQLite in example_app/instance/; JWT_SHIELD_STORE_URI=redis://127.0.0.1:6379/0 (or
        # redis+cluster://host:port) shares one state between several app servers.
        JWT_SHIELD_STORE_URI=os.environ.get("JWT_SHIELD_STORE_URI") or "sqlite:///shield.db",
        JWT_SHIELD_GEOIP_DATABASE=str(HERE / "demo-geoip.mmdb"),
        JWT_SHIELD_ISSUER="http://127.0.0.1:5000",
        JWT_SHIELD_AUDIENCE="example-api",
        JWT_SHIELD_REFRESH_REUSE_GRACE=5,
        JWT_SHIELD_RATE_LIMIT="60/minute",
        JWT_SHIELD_SPIKE_THRESHOLD="120/minute",
        JWT_SHIELD_SPIKE_ACTION="revoke",
        JWT_SHIELD_COUNTRY_CHANGE_ACTION="flag",
        JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="revoke_family",
        # Clients that prove a key at login get tokens bound to it (example_app/dpop_client.py);
        # the others keep bearer tokens.
        JWT_SHIELD_DPOP="optional",
    )
    app.config.update(config or {})
    # Demo only: trust one proxy hop so that `curl -H "X-Forwarded-For: 203.0.113.7"` can
    # play a client abroad. Behind a real proxy, set x_for to the number of proxies you run.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    shield.init_app(app)
    app.register_blueprint(shield.jwks_blueprint())
    app.register_blueprint(_routes(app))
    app.register_error_handler(HTTPException, _json_error)
    return app


def _json_error(exc: HTTPException) -> t.Any:
    """Every error as JSON: Flask's own (404, 405, 413 ...) too, not only the shield's."""
    if isinstance(exc, ShieldError):
        return exc.get_response()  # already JSON, with its challenge and Retry-After
    response = exc.get_response()
    response.data = json.dumps({"error": (exc.name or "error").lower().replace(" ", "_"),
                                "error_description": exc.description or ""})  # fmt: skip
    response.content_type = "application/json"
    return response


def _json_object(*fields: str) -> dict[str, str]:
    """The request's JSON object with these string fields, or a 400 that says what is wrong."""
    if not request.is_json:
        raise InvalidRequest("Send a JSON object (Content-Type: application/json).", reason="not-json")
    try:
        data = json.loads(request.get_data())
    except (ValueError, RecursionError):  # JSON errors, bad UTF-8, absurd nesting
        raise InvalidRequest("The body is not valid JSON.", reason="bad-json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.", reason="not-an-object")
    missing = [f for f in fields if not isinstance(data.get(f), str) or not data[f]]
    if missing:
        raise InvalidRequest(f"Give {', '.join(missing)} as non-empty strings.", reason="bad-fields")
    return {f: data[f] for f in fields}


def _routes(app: Flask) -> Blueprint:
    bp = Blueprint("example", __name__)

    @bp.get("/")
    @shield.exempt
    def index() -> t.Any:
        return {
            "try": [
                "POST /auth/login {username, password}  (alice/wonderland, bob/builder)",
                "GET /api/me with Authorization: Bearer <access_token>",
                "GET /api/claims: every verified claim of your token",
                "POST /auth/refresh grant_type=refresh_token&refresh_token=... (RFC 6749 §6; JSON too)",
                "POST /auth/logout, POST /auth/logout-all",
                "GET /api/sessions, GET /api/events",
                "DPoP: python -m example_app.dpop_client (tokens bound to a key; a copied token is refused)",
            ]
        }

    @bp.post("/auth/login")
    @shield.exempt
    def login() -> t.Any:
        data = _json_object("username", "password")
        user = USERS.get(data["username"])
        if user is None or not check_password_hash(user["password"], data["password"]):
            return jsonify(error="invalid_grant", error_description="Wrong username or password."), 400
        pair = shield.issue_tokens(data["username"], claims={"role": user["role"]})
        body = pair.as_dict()
        if pair.new_country:
            body["notice"] = "login from a new country for this account"
        return body

    # The OAuth 2.0 token endpoint (RFC 6749 §6): what Authlib, requests-oauthlib, AppAuth
    # and oidc-client-ts send to refresh, and the {"refresh_token": ...} JSON body too.
    bp.add_url_rule("/auth/refresh", "refresh", shield.token_view(authenticate_client=authenticate_client),
                    methods=["POST"])  # fmt: skip

    @bp.post("/auth/logout")
    def logout() -> t.Any:
        sid = current_claims.get("sid")
        if sid:
            shield.revoke_family(sid)  # this device: its refresh token and access tokens
        else:
            shield.revoke_token(current_claims["jti"])
        return {"logged_out": "this session"}

    @bp.post("/auth/logout-all")
    def logout_all() -> t.Any:
        shield.revoke_subject(current_claims["sub"])  # every device, e.g. after a password change
        return {"logged_out": "everywhere"}

    @bp.get("/api/me")
    def me() -> t.Any:
        return {"sub": current_claims["sub"], "role": current_claims.get("role"), "sid": current_claims.get("sid")}

    @bp.get("/api/claims")
    def claims() -> t.Any:
        return get_claims()  # a read-only dict: return it, jsonify it, or dict() it to change a copy

    @bp.get("/api/sessions")
    def sessions() -> t.Any:
        return {"sessions": [dataclasses.asdict(s) for s in shield.sessions(current_claims["sub"])]}

    @bp.get("/api/events")
    def events() -> t.Any:
        return {"events": [e.to_dict() for e in shield.events(subject=current_claims["sub"], limit=50)]}

    @bp.post("/api/reports")
    @shield.limit("5/minute")  # an expensive endpoint gets a tighter per-token limit
    def reports() -> t.Any:
        return {"report": "ready"}

    return bp
