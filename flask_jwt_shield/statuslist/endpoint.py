"""The Status Provider's endpoints (draft-ietf-oauth-status-list, "Status List Request"):
the Status List Token at the path of ``JWT_SHIELD_STATUS_LIST_URI``, and the Status List
Aggregation (a JSON list of the app's status list URIs) that the RFC 8414 metadata names
as ``status_list_aggregation_endpoint``.

The token is rendered by :class:`~.issuer.StatusIssuer` once per change, not per request;
this module only negotiates: the form (``Accept``: the JWT by default, the CWT when the
client prefers ``application/statuslist+cwt``), ``gzip`` when the client accepts it (the
draft: SHOULD) and it makes the body smaller, ``ETag`` and ``If-None-Match``,
``Cache-Control`` whose ``max-age`` is the token's ``ttl``,
and CORS (the list is public, the draft asks for browser access).
"""

from __future__ import annotations

import typing as t

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import NotAcceptable
from werkzeug.exceptions import NotFound

from ..errors import ConfigurationError
from ..errors import StoreError
from ..errors import StoreUnavailable
from ..oauth import json_response
from ..oauth import role
from ..state import EXTENSION_KEY
from ..state import current_state
from .issuer import MEDIA_TYPE
from .issuer import MEDIA_TYPES
from .issuer import StatusIssuer

__all__ = ["AGGREGATION_ROLE", "make_blueprint"]

#: The RFC 8414 metadata member the draft registers for the aggregation endpoint.
AGGREGATION_ROLE = "status_list_aggregation_endpoint"


def _issuer() -> StatusIssuer:
    issuer = current_state().status_list
    if issuer is None:
        raise NotFound()
    return issuer


def _cors(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "ETag"
    return response


def status_list() -> Response:
    """``GET``/``HEAD``: the Status List Token, ``application/statuslist+jwt`` or, when the
    client prefers it, ``application/statuslist+cwt``."""
    issuer = _issuer()
    media_type = MEDIA_TYPE
    if request.headers.get("Accept"):
        # Equal preference (``*/*``, ``application/*``) keeps the first: the JWT.
        best = request.accept_mimetypes.best_match(MEDIA_TYPES)
        if best is None:
            raise NotAcceptable(f"This status list is served as {' or '.join(MEDIA_TYPES)}.")
        media_type = best
    try:
        rendered = issuer.rendered(media_type)
    except StoreError:
        raise StoreUnavailable() from None
    gzipped = rendered.gzipped is not None and request.accept_encodings.quality("gzip") > 0
    body = rendered.gzipped if gzipped and rendered.gzipped is not None else rendered.body
    response = current_app.response_class(body, mimetype=media_type)
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"
    response.vary.update(("Accept", "Accept-Encoding"))
    # One representation per form and encoding, so one strong validator each (RFC 9110 §8.8.3).
    response.set_etag(rendered.etag + ("-gz" if gzipped else ""))
    response.cache_control.public = True
    response.cache_control.max_age = issuer.ttl  # the token's ttl, which clients prefer
    response.make_conditional(request)
    return _cors(response)


def aggregation() -> Response:
    """``GET``: the Status List Aggregation, ``{"status_lists": [uri]}``."""
    issuer = _issuer()
    response = json_response({"status_lists": [issuer.uri]})
    del response.headers["Pragma"]
    response.cache_control.no_store = False
    response.cache_control.public = True
    response.cache_control.max_age = 300  # changes only with the configuration
    return _cors(response)


def make_blueprint(
    name: str,
    exempt: t.Callable[[t.Callable[..., Response]], t.Callable[..., Response]],
    *,
    aggregation_url: str | None,
) -> Blueprint:
    """The blueprint of :meth:`JWTShield.status_list_blueprint
    <flask_jwt_shield.JWTShield.status_list_blueprint>`: its rules are added when it is
    registered, at the path of the app's ``JWT_SHIELD_STATUS_LIST_URI``."""
    bp = Blueprint(name, __name__)
    list_view = exempt(status_list)
    aggregation_view = exempt(role(aggregation, AGGREGATION_ROLE))

    def mount(setup: BlueprintSetupState) -> None:
        state = setup.app.extensions.get(EXTENSION_KEY)
        if state is None:
            raise RuntimeError("Register the status list blueprint after shield.init_app(app).")
        settings = state.config.status_list
        if setup.url_prefix:
            raise ConfigurationError(
                "Register status_list_blueprint() without a url_prefix: the list is served at the path"
                " of JWT_SHIELD_STATUS_LIST_URI, which the tokens name."
            )
        if not settings.status_list:
            raise ConfigurationError(
                "status_list_blueprint() is registered, but JWT_SHIELD_STATUS_LIST is off: turn it on"
                " (tokens then name this list), or do not register the blueprint."
            )
        setup.add_url_rule(settings.path, "status_list", list_view, methods=["GET"])
        if aggregation_url is not None:
            setup.add_url_rule(aggregation_url, "aggregation", aggregation_view, methods=["GET"])

    bp.record_once(mount)
    return bp
