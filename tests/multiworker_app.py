"""A tiny app for tests/test_multiprocess.py, served by gunicorn with several workers.

The store is the SQLite file ``SHIELD_TEST_DB``, or the URI ``SHIELD_TEST_STORE_URI`` (a
Redis); ``SHIELD_TEST_RATE_LIMIT`` sets the per-token limit (none by default) and
``SHIELD_TEST_RATE_LIMIT_MODE`` its mode (``exact`` by default);
``SHIELD_TEST_WEBHOOK``, when set, is the alert webhook (tests/test_alerts.py);
``SHIELD_TEST_DPOP`` is ``JWT_SHIELD_DPOP`` (tests/test_dpop_multiprocess.py). Every worker
answers with its PID so the test can tell which process served a request.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask
from flask import Response
from flask import request

from flask_jwt_shield import JWTShield
from flask_jwt_shield import current_claims


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        JWT_SHIELD_SECRET_KEY="multiworker-test-secret-" + "x" * 32,
        JWT_SHIELD_STORE_URI=os.environ.get("SHIELD_TEST_STORE_URI") or "sqlite:///" + os.environ["SHIELD_TEST_DB"],
        JWT_SHIELD_RATE_LIMIT=os.environ.get("SHIELD_TEST_RATE_LIMIT") or None,
        JWT_SHIELD_RATE_LIMIT_MODE=os.environ.get("SHIELD_TEST_RATE_LIMIT_MODE") or "exact",
        JWT_SHIELD_DPOP=os.environ.get("SHIELD_TEST_DPOP") or "off",
    )
    if os.environ.get("SHIELD_TEST_WEBHOOK"):
        app.config.update(JWT_SHIELD_ALERT_WEBHOOK=os.environ["SHIELD_TEST_WEBHOOK"], JWT_SHIELD_ALERT_RETRY_DELAY=0.05)
    shield = JWTShield(app)

    @app.after_request
    def tell_pid(response: Response) -> Response:  # on refusals too, which have no JSON of ours
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    @app.post("/login")
    @shield.exempt
    def login() -> t.Any:
        return shield.issue_tokens(request.args.get("sub", "alice")).as_dict()

    @app.post("/refresh")
    @shield.exempt
    def refresh() -> t.Any:
        return shield.refresh((request.get_json(silent=True) or {}).get("refresh_token")).as_dict()

    @app.post("/logout")
    def logout() -> t.Any:
        shield.revoke_family(current_claims["sid"])
        return {"pid": os.getpid()}

    @app.get("/api/me")
    def me() -> t.Any:
        return {"sub": current_claims["sub"], "pid": os.getpid()}

    @app.get("/pid")
    @shield.exempt
    def pid() -> t.Any:
        return {"pid": os.getpid()}

    return app
