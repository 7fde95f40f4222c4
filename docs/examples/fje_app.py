"""A Flask-JWT-Extended app, migrated to Flask-JWT-Shield.

The examples of the page "Coming from Flask-JWT-Extended" (docs/flask-jwt-extended.rst) are
included from this file, and tests/test_fje_guide.py runs them.
"""

from __future__ import annotations

import typing as t
from datetime import timedelta

from flask import Blueprint
from flask import Flask
from flask import g
from flask import jsonify
from flask import request
from werkzeug.security import check_password_hash
from werkzeug.security import generate_password_hash

from flask_jwt_shield import JWTShield
from flask_jwt_shield import current_claims
from flask_jwt_shield import get_claims

# Your user model; a dict here so that the example runs on its own.
USERS: dict[str, dict[str, t.Any]] = {
    "alice": {"password": generate_password_hash("wonderland"), "role": "admin", "active": True},
    "bob": {"password": generate_password_hash("builder"), "role": "user", "active": True},
}

views = Blueprint("views", __name__)

# [setup]
shield = JWTShield()  # was: jwt = JWTManager()


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        JWT_SHIELD_ACCESS_TOKEN_TTL=timedelta(minutes=15),  # was: JWT_ACCESS_TOKEN_EXPIRES
        JWT_SHIELD_REFRESH_TOKEN_TTL=timedelta(days=30),  # was: JWT_REFRESH_TOKEN_EXPIRES
        JWT_SHIELD_STORE_URI="sqlite:///shield.db",  # revocations and sessions live here
        JWT_SHIELD_EXEMPT_ENDPOINTS=["docs.*"],  # every view of the "docs" blueprint is public
    )
    app.config.from_prefixed_env()  # FLASK_JWT_SHIELD_SECRET_KEY=... (or the app's SECRET_KEY)
    app.config.update(test_config or {})
    app.register_blueprint(views)
    app.register_blueprint(public, url_prefix="/public")
    app.register_blueprint(docs, url_prefix="/docs")
    app.add_url_rule("/oauth/token", view_func=shield.token_view(), methods=["POST"])
    shield.init_app(app)  # was: jwt.init_app(app)
    return app


# [/setup]


# [login]
@views.post("/login")
@shield.exempt  # every other route needs a token: no @jwt_required() anywhere
def login() -> t.Any:
    body = request.get_json(silent=True) or {}
    user = USERS.get(body.get("username", ""))
    if user is None or not check_password_hash(user["password"], body.get("password", "")):
        return {"error": "bad username or password"}, 401
    # was: create_access_token(identity=..., additional_claims={"role": ...})
    #      and create_refresh_token(identity=...)
    pair = shield.issue_tokens(body["username"], claims={"role": user["role"]})
    return pair.as_dict()  # access_token, token_type, expires_in, refresh_token


# [/login]


# [refresh]
@views.post("/refresh")
@shield.exempt  # was: @jwt_required(refresh=True); the refresh token comes in the body
def refresh() -> t.Any:
    body = request.get_json(silent=True) or {}
    return shield.refresh(body.get("refresh_token")).as_dict()  # a new pair; the old one is spent


# [/refresh]


# [identity]
@views.get("/me")
def me() -> t.Any:  # was: @jwt_required()
    return {
        "user": current_claims["sub"],  # was: get_jwt_identity()
        "role": current_claims["role"],  # was: get_jwt()["role"]
    }


@views.get("/claims")
def claims() -> t.Any:
    return jsonify(get_claims())  # was: jsonify(get_jwt())


# [/identity]


# [optional]
@views.get("/greeting")
@shield.optional  # was: @jwt_required(optional=True)
def greeting() -> t.Any:
    claims = get_claims(optional=True)  # empty without a token
    return {"hello": claims.get("sub", "stranger")}


# [/optional]


# [exempt]
@views.get("/health")
@shield.exempt  # a load balancer's health check carries no token
def health() -> t.Any:
    return {"status": "ok"}


public = shield.exempt(Blueprint("public", __name__))  # every view of this blueprint


@public.get("/terms")
def terms() -> t.Any:
    return {"terms": "be nice"}


docs = Blueprint("docs", __name__)  # public through JWT_SHIELD_EXEMPT_ENDPOINTS = ["docs.*"]


@docs.get("/")
def docs_index() -> t.Any:
    return {"docs": "/docs/"}


# [/exempt]


# [user]
@views.before_request  # was: @jwt.user_lookup_loader and current_user
def load_user() -> None:
    claims = get_claims(optional=True)  # none on exempt views
    g.user = USERS.get(claims["sub"]) if "sub" in claims else None


@views.get("/profile")
def profile() -> t.Any:
    return {"role": g.user["role"], "active": g.user["active"]}


# [/user]


# [revocation]
@shield.revocation_checker  # was: @jwt.token_in_blocklist_loader
def user_disabled(claims: t.Mapping[str, t.Any]) -> bool:
    user = USERS.get(claims["sub"])
    return user is None or not user["active"]  # True: refused with 401, like a revoked token


@views.post("/logout")
def logout() -> t.Any:
    shield.revoke_family(current_claims["sid"])  # this session: its refresh token and access tokens
    return {"logged_out": True}


# [/revocation]


# [fresh]
@views.post("/password")
def change_password() -> t.Any:  # was: @jwt_required(fresh=True)
    body = request.get_json(silent=True) or {}
    user = USERS[current_claims["sub"]]
    if not check_password_hash(user["password"], body.get("current_password", "")):
        return {"error": "give your current password"}, 403
    user["password"] = generate_password_hash(body["new_password"])
    shield.revoke_subject(current_claims["sub"])  # log out everywhere, this session too
    return {"changed": True}


# [/fresh]
