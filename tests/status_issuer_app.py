"""The issuing app of tests/test_statuslist_e2e.py, served by gunicorn in its own process.

A shield app with a Token Status List (``JWT_SHIELD_STATUS_LIST_TTL = 1``): its JWK Set, its
status list, and routes for what the test asks of an issuer -- ``POST /login?sub=``,
``POST /refresh`` and ``POST /revoke`` (``{"kind": ..., "value": ...}``). Configured by
environment: ``SHIELD_TEST_ISSUER`` (its own URL), ``SHIELD_TEST_DB`` (the SQLite store),
``SHIELD_TEST_KEYS`` (a JSON key ring, the first entry signs).
"""

from __future__ import annotations

import json
import os
import typing as t

from flask import Flask
from flask import request

from flask_jwt_shield import JWTShield

AUDIENCE = "https://api.example.com"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        JWT_SHIELD_ISSUER=os.environ["SHIELD_TEST_ISSUER"],
        JWT_SHIELD_AUDIENCE=AUDIENCE,
        JWT_SHIELD_KEYS=json.loads(os.environ["SHIELD_TEST_KEYS"]),
        JWT_SHIELD_STORE_URI="sqlite:///" + os.environ["SHIELD_TEST_DB"],
        JWT_SHIELD_STATUS_LIST=True,
        JWT_SHIELD_STATUS_LIST_TTL=1,
        JWT_SHIELD_RATE_LIMIT=None,
    )
    shield = JWTShield(app)
    app.register_blueprint(shield.jwks_blueprint())
    app.register_blueprint(shield.status_list_blueprint())

    @app.post("/login")
    @shield.exempt
    def login() -> t.Any:
        return shield.issue_tokens(request.args["sub"]).as_dict()

    @app.post("/refresh")
    @shield.exempt
    def refresh() -> t.Any:
        return shield.refresh((request.get_json(silent=True) or {}).get("refresh_token")).as_dict()

    @app.post("/revoke")
    @shield.exempt
    def revoke() -> t.Any:
        body = request.get_json()
        kind, value = body["kind"], body["value"]
        if kind == "token":
            shield.revoke_token(value)
        elif kind == "family":
            shield.revoke_family(value)
        elif kind == "subject":
            shield.revoke_subject(value)
        else:
            shield.revoke_key(value)
        return {"revoked": kind}

    @app.get("/health")
    @shield.exempt
    def health() -> t.Any:
        return {"pid": os.getpid()}

    return app
