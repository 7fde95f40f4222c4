"""Tokens in cookies for a browser app, migrated from Flask-JWT-Extended's cookie helpers."""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import jsonify
from flask import request

from flask_jwt_shield import JWTShield
from flask_jwt_shield import current_claims

shield = JWTShield()


# [cookies]
def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["JWT_SHIELD_TOKEN_LOCATIONS"] = ["headers", "cookies"]  # was: JWT_TOKEN_LOCATION
    app.config.from_prefixed_env()
    app.config.update(test_config or {})
    shield.init_app(app)

    @app.post("/login")
    @shield.exempt
    def login() -> t.Any:
        username = request.form["username"]  # ... check the password as in fje_app.py
        pair = shield.issue_tokens(username, cookies=True)  # bound to a fingerprint cookie
        # was: set_access_cookies(response, access) and set_refresh_cookies(response, refresh)
        return shield.set_cookies(jsonify(login=True), pair)

    @app.post("/refresh")
    @shield.exempt
    def refresh() -> t.Any:
        pair = shield.refresh()  # reads the refresh cookie; needs the X-CSRF-Token header
        return shield.set_cookies(jsonify(refresh=True), pair)

    @app.post("/logout")
    def logout() -> t.Any:
        shield.revoke_family(current_claims["sid"])  # the cookies alone would still work elsewhere
        return shield.unset_cookies(jsonify(logout=True))  # was: unset_jwt_cookies(response)

    @app.post("/notes")
    def add_note() -> t.Any:  # an unsafe method: needs the X-CSRF-Token header
        return {"saved": True, "by": current_claims["sub"]}, 201

    return app


# [/cookies]
