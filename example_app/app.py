"""A small app protected by Flask-JWT-Shield, on embedded defaults.

Run it with ``make run``: its start page (``/``) says how to log in and what to try, the
shield's dashboard is at ``/shield/`` behind an admin login, and ``python -m
example_app.attack_demo`` plays the stolen-token stories against it. State lives in
``example_app/instance/``: the users (hashed passwords) and their notes in ``users.db``, the
shield's SQLite store ``shield.db``, the generated Flask secret and the ES256 signing key
(``jwt-signing-key.pem``, published at ``/.well-known/jwks.json``). The GeoIP database is the
bundled demo one, which knows only the documentation address ranges.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import secrets
import sqlite3
import time
import typing as t
from contextlib import closing
from pathlib import Path

from flask import Blueprint
from flask import Flask
from flask import current_app
from flask import jsonify
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from werkzeug.exceptions import Forbidden
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
from flask_jwt_shield.dashboard import is_local_path
from flask_jwt_shield.ssf import bearer_receivers

HERE = Path(__file__).resolve().parent

# The demo users, written into the users database on the first start. Hashed once here, so
# that building many apps (the tests do) does not pay for the slow hash each time.
SEED_USERS = [
    ("alice", generate_password_hash("wonderland"), "admin"),
    ("bob", generate_password_hash("builder"), "user"),
]
MIN_PASSWORD = 8
STEP_UP_MAX_AGE = 5  # seconds; the attack demo waits it out
MAX_NOTE = 500

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


def resolve_subject(sub_id: dict[str, t.Any]) -> str | None:
    """The user an identity provider's logout request names (RFC 9493): the provider's
    ``iss_sub`` or an ``@example.com`` address whose local part is a username here."""
    if sub_id["format"] == "iss_sub" and sub_id["iss"] == current_app.config.get("UNIVERSAL_LOGOUT_ISSUER"):
        name = sub_id["sub"]
    elif sub_id["format"] == "email" and sub_id["email"].lower().endswith("@example.com"):
        name = sub_id["email"][: -len("@example.com")]
    else:
        return None
    return name if find_user(name) is not None else None


def _demo_secret(instance: Path, name: str = "jwt-secret.txt") -> str:
    """A random secret kept in the instance folder, so restarts keep sessions."""
    path = instance / name
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _demo_signing_key(instance: Path, name: str = "jwt-signing-key.pem") -> str:
    """An ES256 private key kept in the instance folder: restarts keep sessions, and other
    services verify the tokens with the public half from /.well-known/jwks.json (an HS secret
    would have to be shared with them, and each could then mint tokens)."""
    path = instance / name
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        instance.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(pem)
    return path.read_text()


def _issuer() -> str:
    """Where this app is served, as the tokens' ``iss``: ``make run`` serves on 127.0.0.1 at
    ``$PORT`` (5000 by default); ``JWT_SHIELD_ISSUER`` in the environment overrides it (behind
    a proxy, the public URL)."""
    if os.environ.get("JWT_SHIELD_ISSUER"):
        return os.environ["JWT_SHIELD_ISSUER"]
    port = os.environ.get("PORT") or os.environ.get("FLASK_RUN_PORT") or "5000"
    return f"http://127.0.0.1:{port}"


def _demo_geoip(instance: Path) -> str:
    """The demo GeoIP database (documentation address ranges only, see
    scripts/make_demo_geoip.py), written into the instance folder with today's build date
    once a week, so that ``check-config`` judges its freshness like a real one's. Without
    mmdb-writer (installed by ``make run``) the bundled copy is used as it is."""
    copy = instance / "demo-geoip.mmdb"
    try:
        if copy.exists() and time.time() - copy.stat().st_mtime < 7 * 86400:
            return str(copy)
        spec = importlib.util.spec_from_file_location("make_demo_geoip", HERE.parent / "scripts" / "make_demo_geoip.py")
        if spec is None or spec.loader is None:
            raise ImportError("scripts/make_demo_geoip.py is missing")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.build_database(copy, built_at=int(time.time()))
        return str(copy)
    except (ImportError, OSError):
        return str(HERE / "demo-geoip.mmdb")


def create_app(config: dict[str, t.Any] | None = None, *, instance_path: str | None = None) -> Flask:
    app = Flask(__name__, instance_path=instance_path or str(HERE / "instance"))
    instance = Path(app.instance_path)
    app.config.update(
        # Flask's session cookie (the dashboard's admin login) and the dashboard's CSRF tokens.
        SECRET_KEY=os.environ.get("SECRET_KEY") or _demo_secret(instance, "flask-secret.txt"),
        SESSION_COOKIE_SAMESITE="Lax",
        USERS_DATABASE=str(instance / "users.db"),
        # Asymmetric keys: the public half is published for the services that verify the tokens.
        JWT_SHIELD_ALGORITHM="ES256",
        JWT_SHIELD_PRIVATE_KEY=os.environ.get("JWT_SHIELD_PRIVATE_KEY") or _demo_signing_key(instance),
        # SQLite in example_app/instance/; JWT_SHIELD_STORE_URI=redis://127.0.0.1:6379/0 (or
        # redis+cluster://host:port) shares one state between several app servers.
        JWT_SHIELD_STORE_URI=os.environ.get("JWT_SHIELD_STORE_URI") or "sqlite:///shield.db",
        JWT_SHIELD_GEOIP_DATABASE=_demo_geoip(instance),
        JWT_SHIELD_ISSUER=_issuer(),
        # The API's resource identifier (RFC 9728) is its URL, and its tokens' audience follows.
        JWT_SHIELD_AUDIENCE=_issuer(),
        JWT_SHIELD_REFRESH_REUSE_GRACE=5,
        JWT_SHIELD_RATE_LIMIT="60/minute",
        # `make run` is one process, so counting in memory is exact; with several workers or
        # servers, count in Redis (a Redis store's own server is used when this is unset).
        JWT_SHIELD_RATE_LIMIT_STORAGE_URI=os.environ.get("JWT_SHIELD_RATE_LIMIT_STORAGE_URI")
        or (None if os.environ.get("JWT_SHIELD_STORE_URI", "").startswith(("redis", "unix")) else "memory://"),
        JWT_SHIELD_SPIKE_THRESHOLD="120/minute",
        JWT_SHIELD_SPIKE_ACTION="revoke",
        # A token used from another country than its login's asks for the password again
        # (RFC 9470 step-up, answered at POST /auth/step-up) instead of ending the session.
        # Its login passes while it is younger than STEP_UP_MAX_AGE seconds: 5 here, so that
        # the attack demo shows the challenge within seconds; minutes in production.
        JWT_SHIELD_COUNTRY_CHANGE_ACTION="step_up",
        JWT_SHIELD_STEP_UP_MAX_AGE=STEP_UP_MAX_AGE,
        JWT_SHIELD_IMPOSSIBLE_TRAVEL_ACTION="revoke_family",
        # Clients that prove a key at login get tokens bound to it (example_app/dpop_client.py);
        # the others keep bearer tokens.
        JWT_SHIELD_DPOP="optional",
        # Every access token names its bit in a signed Token Status List at /statuslists/1,
        # which other services fetch to learn of revocations. A few seconds, so that a demo
        # shows a revocation reaching them; a minute (the default) or so in production.
        JWT_SHIELD_STATUS_LIST=True,
        JWT_SHIELD_STATUS_LIST_TTL=5,
        # Every revocation is also a Security Event Token for the services that registered a
        # stream (docs/shared-signals.rst); example_app/resource_server.py can be one.
        JWT_SHIELD_SSF_TRANSMIT=True,
    )
    app.config.update(config or {})
    _init_users(app.config["USERS_DATABASE"])
    # Demo only: trust one proxy hop so that `curl -H "X-Forwarded-For: 203.0.113.7"` can
    # play a client abroad. Behind a real proxy, set x_for to the number of proxies you run.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    shield.init_app(app)
    app.register_blueprint(shield.jwks_blueprint())
    # RFC 8414 and RFC 9728 documents, generated from the configuration and the endpoints below.
    app.register_blueprint(shield.metadata_blueprint())
    app.register_blueprint(shield.status_list_blueprint())
    if app.config.get("UNIVERSAL_LOGOUT_ISSUER"):
        # The identity provider's global token revocation (Okta Universal Logout): see
        # docs/oauth.rst. Its JWK Set verifies the signed request.
        app.add_url_rule(
            "/oauth/global-token-revocation",
            "global_token_revocation",
            shield.global_token_revocation_view(
                issuer=app.config["UNIVERSAL_LOGOUT_ISSUER"],
                jwks_url=app.config["UNIVERSAL_LOGOUT_JWKS_URL"],
                resolve_subject=resolve_subject,
            ),
            methods=["POST"],
        )
    # The Shared Signals transmitter: a receiver presents SSF_RECEIVER_SECRET (32+ characters)
    # as its bearer token; without it every stream call is refused (deny by default).
    secret = os.environ.get("SSF_RECEIVER_SECRET")
    receivers = bearer_receivers({"resource-server": secret}) if secret else None
    app.register_blueprint(shield.ssf_blueprint(authorize=receivers))
    app.register_blueprint(_routes(app))
    app.register_blueprint(_admin())
    # The shield's dashboard, for admins logged in at /admin/login (a Flask session cookie).
    app.register_blueprint(
        shield.dashboard_blueprint(authorize=is_admin, login_url="/admin/login"), url_prefix="/shield"
    )
    app.register_error_handler(HTTPException, _json_error)
    return app


# -- users ---------------------------------------------------------------------------------


def _init_users(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY, password TEXT NOT NULL, role TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, username TEXT NOT NULL,"
            " text TEXT NOT NULL, at REAL NOT NULL)"
        )
        db.executemany("INSERT OR IGNORE INTO users VALUES (?, ?, ?)", SEED_USERS)


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(current_app.config["USERS_DATABASE"], timeout=10)
    db.row_factory = sqlite3.Row
    return db


def find_user(username: str) -> sqlite3.Row | None:
    with closing(_db()) as db:
        return t.cast(sqlite3.Row | None, db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone())


def check_login(username: str, password: str) -> sqlite3.Row | None:
    """The user, if the password is right."""
    user = find_user(username)
    if user is None or not check_password_hash(user["password"], password):
        return None
    return user


def is_admin() -> bool:
    """The dashboard's ``authorize``: an admin logged in at /admin/login, still an admin."""
    name = session.get("admin")
    user = find_user(name) if isinstance(name, str) else None
    return user is not None and user["role"] == "admin"


def _json_error(exc: HTTPException) -> t.Any:
    """Every error as JSON: Flask's own (404, 405, 413 ...) too, not only the shield's."""
    if isinstance(exc, ShieldError):
        return exc.get_response()  # already JSON, with its challenge and Retry-After
    response = exc.get_response()
    response.data = json.dumps(
        {"error": (exc.name or "error").lower().replace(" ", "_"), "error_description": exc.description or ""}
    )
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
    for f in fields:
        try:
            data[f].encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is JSON, but not text
            raise InvalidRequest(f"{f} is not valid Unicode text.", reason="bad-text") from None
    return {f: data[f] for f in fields}


def _routes(app: Flask) -> Blueprint:
    bp = Blueprint("example", __name__)

    @bp.get("/")
    @shield.exempt
    def index() -> t.Any:
        return render_template("index.html", admin=session.get("admin"))

    @bp.post("/auth/login")
    @shield.exempt
    def login() -> t.Any:
        data = _json_object("username", "password")
        user = check_login(data["username"], data["password"])
        if user is None:
            return jsonify(error="invalid_grant", error_description="Wrong username or password."), 400
        pair = shield.issue_tokens(user["username"], claims={"role": user["role"]})
        body = pair.as_dict()
        if pair.new_country:
            body["notice"] = "login from a new country for this account"
        return body

    @bp.post("/auth/step-up")
    @shield.exempt
    def step_up() -> t.Any:
        """Where a client goes after ``401 insufficient_user_authentication`` (RFC 9470): the
        person enters the password again and gets a new pair whose ``auth_time`` is now, so
        it passes the step-up rung. A thief holding only a token cannot. (An app with a
        second factor would check it here and pass ``acr="mfa"``.)"""
        data = _json_object("username", "password")
        user = check_login(data["username"], data["password"])
        if user is None:
            return jsonify(error="invalid_grant", error_description="Wrong username or password."), 400
        pair = shield.issue_tokens(user["username"], claims={"role": user["role"]})
        return pair.as_dict()

    # The OAuth 2.0 token endpoint (RFC 6749 §6): what Authlib, requests-oauthlib, AppAuth
    # and oidc-client-ts send to refresh, and the {"refresh_token": ...} JSON body too.
    bp.add_url_rule(
        "/auth/refresh", "refresh", shield.token_view(authenticate_client=authenticate_client), methods=["POST"]
    )
    # RFC 7009: any client revokes its own tokens (and the app's, issued without a client_id);
    # RFC 7662: only a confidential client (example-cli) introspects.
    bp.add_url_rule(
        "/oauth/revoke", "revoke", shield.revocation_view(authenticate_client=authenticate_client), methods=["POST"]
    )
    bp.add_url_rule(
        "/oauth/introspect",
        "introspect",
        shield.introspection_view(authenticate_client=authenticate_client),
        methods=["POST"],
    )

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

    @bp.post("/auth/change-password")
    def change_password() -> t.Any:
        data = _json_object("current_password", "new_password")
        sub = current_claims["sub"]
        user = check_login(sub, data["current_password"])
        if user is None:
            return jsonify(error="invalid_grant", error_description="The current password is wrong."), 400
        if len(data["new_password"]) < MIN_PASSWORD:
            raise InvalidRequest(f"The new password needs at least {MIN_PASSWORD} characters.", reason="weak")
        with closing(_db()) as db, db:
            db.execute(
                "UPDATE users SET password = ? WHERE username = ?", (generate_password_hash(data["new_password"]), sub)
            )
        # A changed password ends every session, the thief's too; this device gets a new one.
        shield.revoke_subject(sub)
        pair = shield.issue_tokens(sub, claims={"role": user["role"]})
        return {"password_changed": True, "logged_out": "everywhere else", **pair.as_dict()}

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

    @bp.get("/api/notes")
    def notes() -> t.Any:
        with closing(_db()) as db:
            rows = db.execute(
                "SELECT id, text, at FROM notes WHERE username = ? ORDER BY id DESC LIMIT 100", (current_claims["sub"],)
            ).fetchall()
        return {"notes": [dict(r) for r in rows]}

    @bp.post("/api/notes")
    def add_note() -> t.Any:
        text = _json_object("text")["text"]
        if len(text) > MAX_NOTE:
            raise InvalidRequest(f"A note holds at most {MAX_NOTE} characters.", reason="too-long")
        with closing(_db()) as db, db:
            cur = db.execute(
                "INSERT INTO notes (username, text, at) VALUES (?, ?, strftime('%s', 'now'))",
                (current_claims["sub"], text),
            )
        return {"id": cur.lastrowid, "text": text}, 201

    @bp.post("/api/admin/forget-places")
    def forget_places() -> t.Any:
        """An admin clears a user's GeoIP history (countries seen, last place) after a false
        alarm, so that the next login is judged as a first one. The attack demo starts with it."""
        if current_claims.get("role") != "admin":
            raise Forbidden("Only an administrator can clear a user's places.")
        username = _json_object("username")["username"]
        if find_user(username) is None:
            raise InvalidRequest(f"There is no user {username!r}.", reason="unknown-user")
        _forget_places(username)
        return {"forgotten": username}

    @bp.post("/api/reports")
    @shield.limit("5/minute")  # an expensive endpoint gets a tighter per-token limit
    def reports() -> t.Any:
        return {"report": "ready"}

    return bp


def _forget_places(username: str) -> None:
    shield.forget_places(username)


def _admin() -> Blueprint:
    """The admin login in front of the dashboard: an HTML form and a Flask session cookie."""
    bp = Blueprint("admin", __name__)

    def back() -> str:
        # The dashboard's 403 page sends ?next=<the page asked for>; only a path on this site
        # is followed, so the login is no open redirect.
        wanted = request.values.get("next")
        return wanted if wanted is not None and is_local_path(wanted) else url_for("jwt_shield_dashboard.index")

    def form(error: str | None = None, status: int = 200) -> t.Any:
        token = session.setdefault("login_csrf", secrets.token_urlsafe(24))
        return render_template(
            "admin_login.html", error=error, csrf_token=token, admin=session.get("admin"), next=back()
        ), status

    @bp.get("/admin/login")
    @shield.exempt
    def login_form() -> t.Any:
        return form()

    @bp.post("/admin/login")
    @shield.exempt
    def login() -> t.Any:
        expected = session.get("login_csrf")
        given = request.form.get("csrf_token", "")
        if not isinstance(expected, str) or not secrets.compare_digest(expected, given):
            return form("The form expired; please try again.", 400)
        username, password = request.form.get("username", ""), request.form.get("password", "")
        user = check_login(username, password) if username and password else None
        if user is None:
            return form("Wrong username or password.", 400)
        if user["role"] != "admin":
            return form(f"{username} is not an administrator.", 403)
        session.clear()  # a new session id after login
        session["admin"] = user["username"]
        return redirect(back(), code=303)

    @bp.post("/admin/logout")
    @shield.exempt
    def logout() -> t.Any:
        expected = session.get("login_csrf")
        if not isinstance(expected, str) or not secrets.compare_digest(expected, request.form.get("csrf_token", "")):
            return form("The form expired; please try again.", 400)
        session.clear()
        return redirect(url_for("example.index"), code=303)

    return bp
