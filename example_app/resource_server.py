"""An API behind an identity provider: Flask-JWT-Shield in resource-server mode.

The provider (Auth0, Keycloak, Entra ID ...) issues the tokens; this API verifies them with the
provider's JWK Set and applies the shield's revocation, rate limits and events, and receives
the provider's Security Event Tokens at ``POST /security-events``. Configure it with
environment variables and run it, for example::

    IDP_ISSUER=https://example.eu.auth0.com/ IDP_AUDIENCE=https://api.example.com \\
        flask --app 'example_app.resource_server:create_app()' run --port 5001

``IDP_JWKS_URL`` names the JWK Set (without it, OpenID Connect discovery from the issuer);
``IDP_TOKEN_PROFILES`` is a comma-separated ``JWT_SHIELD_ACCEPTED_TYPES`` (``at+jwt`` by
default; ``keycloak``, ``entra``). With ``SSF_RECEIVE_FROM`` (a Shared Signals transmitter's
issuer, such as the example app) and ``SSF_RECEIVER_SECRET``, the API sets up its stream
there and polls its revocations. Tokens whose issuer publishes a Token Status List (the
example app does) are checked against it.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask

from flask_jwt_shield import JWTShield
from flask_jwt_shield import current_claims
from flask_jwt_shield import get_claims

shield = JWTShield()


def _settings() -> dict[str, t.Any]:
    settings: dict[str, t.Any] = {
        "JWT_SHIELD_ISSUER": os.environ.get("IDP_ISSUER"),
        "JWT_SHIELD_AUDIENCE": os.environ.get("IDP_AUDIENCE"),
        "JWT_SHIELD_ACCEPTED_TYPES": os.environ.get("IDP_TOKEN_PROFILES", "at+jwt").split(","),
        "JWT_SHIELD_STORE_URI": "sqlite:///shield-rs.db",
        "JWT_SHIELD_RATE_LIMIT": "120/minute",
        # A token with a status claim is checked against its issuer's Token Status List; the
        # example issuer publishes its list with a 5 s ttl, which the default minimum (10 s)
        # would stretch: the demo keeps the issuer's figure.
        "JWT_SHIELD_STATUS_LIST_MIN_TTL": 5,
    }
    if os.environ.get("SSF_RECEIVE_FROM"):
        settings["JWT_SHIELD_SSF_RECEIVE_FROM"] = os.environ["SSF_RECEIVE_FROM"]
        settings["JWT_SHIELD_SSF_RECEIVE_TOKEN"] = os.environ.get("SSF_RECEIVER_SECRET")
    if os.environ.get("IDP_JWKS_URL"):
        settings["JWT_SHIELD_JWKS_URL"] = os.environ["IDP_JWKS_URL"]
    else:
        settings["JWT_SHIELD_OIDC_DISCOVERY"] = True
    return settings


def create_app(config: dict[str, t.Any] | None = None, *, instance_path: str | None = None) -> Flask:
    """The API; ``config`` overrides the settings read from the environment."""
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(_settings())
    app.config.update(config or {})
    shield.init_app(app)
    # The provider pushes its revocation signals here (CAEP session-revoked, RISC ...).
    app.register_blueprint(shield.security_events_blueprint())

    @app.get("/api/me")
    def me() -> t.Any:
        return get_claims()  # the provider's claims, verified (a read-only dict)

    @app.get("/api/reports")
    def reports() -> t.Any:
        # Scopes are the application's business; the shield has verified the token.
        if "read:reports" not in str(current_claims.get("scope", "")).split():
            # RFC 6750 §3.1: a valid token without the scope the resource needs.
            challenge = 'Bearer error="insufficient_scope", scope="read:reports"'
            return (
                {"error": "insufficient_scope", "error_description": "This needs the read:reports scope."},
                403,
                {"WWW-Authenticate": challenge},
            )
        return {"reports": ["2026-Q3", "2026-Q4"]}

    return app
