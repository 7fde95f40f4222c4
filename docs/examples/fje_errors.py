"""Flask-JWT-Extended's error loaders as Flask error handlers (see fje_app.py)."""

from __future__ import annotations

import typing as t

from flask import Flask

from flask_jwt_shield import ExpiredToken
from flask_jwt_shield import InvalidToken
from flask_jwt_shield import MissingToken


# [errors]
def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(MissingToken)  # was: @jwt.unauthorized_loader
    def missing(error: MissingToken) -> t.Any:
        return {"msg": "Missing Authorization Header"}, 401, challenge(error)

    @app.errorhandler(ExpiredToken)  # was: @jwt.expired_token_loader
    def expired(error: ExpiredToken) -> t.Any:
        return {"msg": "Token has expired"}, 401, challenge(error)

    @app.errorhandler(InvalidToken)  # was: @jwt.invalid_token_loader (and revoked_token_loader)
    def invalid(error: InvalidToken) -> t.Any:
        return {"msg": error.description}, 401, challenge(error)


def challenge(error: InvalidToken | MissingToken) -> list[tuple[str, str]]:
    # Keep the WWW-Authenticate header (RFC 6750 §3): clients read why from it.
    return [("WWW-Authenticate", value) for value in error.challenges()]


# [/errors]
