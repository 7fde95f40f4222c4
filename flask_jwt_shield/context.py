"""The verified claims of the current request."""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import g
from flask.json.provider import DefaultJSONProvider
from werkzeug.local import LocalProxy

from .tokens import Claims


def get_claims(optional: bool = False) -> Claims:
    """The claims of the token that authorised the current request.

    Only set after every check of the pipeline passed. On an exempt endpoint there is none:
    that raises :class:`RuntimeError`, or returns empty claims with ``optional=True``.

    The claims are a :class:`dict` (a read-only one, see :class:`~flask_jwt_shield.tokens.Claims`):
    return them from a view, ``jsonify`` them, or copy them with ``dict(get_claims())``.
    Pass ``get_claims()`` on rather than :data:`current_claims`, which is a proxy for reading.
    """
    # Through the proxy's own object: reading an attribute of ``g`` through the proxy costs
    # several times as much, and every ``current_claims[...]`` comes here.
    claims: Claims | None = getattr(g._get_current_object(), "_jwt_shield", None)
    if claims is None:
        if optional:
            return Claims()
        raise RuntimeError(
            "No verified token on this request: the endpoint is exempt from the shield, or"
            " this is not a request context. Use get_claims(optional=True) on exempt endpoints."
        )
    return claims


#: A proxy to :func:`get_claims` for the current request: ``current_claims["sub"]``.
#: ``jsonify(current_claims)`` and ``return current_claims`` work in an app with the shield
#: (see :func:`serialise_current_claims`); pass ``get_claims()`` on to anything else.
current_claims: Claims = t.cast(Claims, LocalProxy(get_claims))


def serialise_current_claims(app: Flask) -> None:
    """Let ``app``'s JSON provider serialise :data:`current_claims` (a proxy, not a dict) as
    the claims themselves, as Flask-JWT-Extended users expect of ``jsonify(get_jwt())``.

    Only Flask's default provider is taught; a custom provider is left as the app made it.
    """
    provider = app.json
    if not isinstance(provider, DefaultJSONProvider) or getattr(provider.default, "_jwt_shield", False):
        return
    fallback = provider.default

    def default(value: t.Any) -> t.Any:
        if value is current_claims:
            return get_claims()
        return fallback(value)

    default._jwt_shield = True  # type: ignore[attr-defined]
    provider.default = default
