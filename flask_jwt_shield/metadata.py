"""Where other services learn what the shield serves: RFC 8414 and RFC 9728 metadata.

* :class:`AuthorizationServerMetadata` -- ``/.well-known/oauth-authorization-server`` for the
  issuing app (RFC 8414): the issuer, the token, revocation, introspection and global token
  revocation endpoints, ``jwks_uri``, grant types, client authentication methods, DPoP
  algorithms, the status list aggregation endpoint (draft-ietf-oauth-status-list).
* :class:`ResourceMetadata` -- ``/.well-known/oauth-protected-resource`` (RFC 9728), in
  issuing and resource-server mode: the resource identifier, its authorization servers,
  scopes, bearer methods, whether DPoP-bound tokens are required. Once it is mounted every
  ``WWW-Authenticate`` challenge the shield sends names it (``resource_metadata="..."``).

Both documents are generated on each request from the configuration and from the
endpoints the app actually mounted (each shield view carries its role, see
:func:`.oauth.role`), at the URLs the client used: never hand-written, never stale.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import request
from flask import url_for
from werkzeug.exceptions import NotFound

from .errors import ConfigurationError
from .oauth import ROLE_ATTRIBUTE
from .oauth import json_response
from .state import EXTENSION_KEY
from .state import ShieldState
from .state import current_state

__all__ = [
    "AUTHORIZATION_SERVER_PATH",
    "RESOURCE_PATH",
    "AuthorizationServerMetadata",
    "ResourceMetadata",
    "make_blueprint",
    "mounted_endpoints",
]

AUTHORIZATION_SERVER_PATH = "/.well-known/oauth-authorization-server"
RESOURCE_PATH = "/.well-known/oauth-protected-resource"
#: Metadata changes only with a deploy; caches may keep it a little while.
MAX_AGE = 300


def mounted_endpoints() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The shield's endpoints mounted on the current app: role -> (absolute URL, client
    authentication methods). The first mount of a role wins."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    app = current_app
    for rule in app.url_map.iter_rules():
        mark = getattr(app.view_functions.get(rule.endpoint), ROLE_ATTRIBUTE, None)
        if mark is None or rule.arguments:
            continue
        name, methods = mark
        if name not in found:
            found[name] = (url_for(rule.endpoint, _external=True), methods)
    return found


def _origin() -> str:
    return request.url_root.rstrip("/")


def _document(body: dict[str, t.Any]) -> Response:
    response = json_response(body)
    del response.headers["Pragma"]
    response.cache_control.no_store = False
    response.cache_control.public = True
    response.cache_control.max_age = MAX_AGE
    return response


class AuthorizationServerMetadata:
    """The RFC 8414 document of the issuing app.

    :param scopes: ``scopes_supported``, when the app wants to list them.
    :param response_types: ``response_types_supported`` (RFC 8414 requires the member).
        The shield has no authorization endpoint -- the app logs users in its own way --
        so the default is ``["none"]``; an app with its own authorization endpoint names it
        with ``authorization_endpoint`` and lists its response types here.
    :param authorization_endpoint: the app's authorization endpoint (a path or an absolute
        URL), if it has one.
    """

    def __init__(
        self,
        *,
        scopes: t.Sequence[str] | None = None,
        response_types: t.Sequence[str] = ("none",),
        authorization_endpoint: str | None = None,
    ) -> None:
        if not response_types:
            raise ValueError("response_types may not be empty: RFC 8414 requires response_types_supported")
        self.scopes = list(scopes) if scopes is not None else None
        self.response_types = list(response_types)
        self.authorization_endpoint = authorization_endpoint

    def issuer(self, state: ShieldState) -> str:
        """``JWT_SHIELD_ISSUER``, else the URL the app is served at."""
        return state.config.keys.issuer or _origin()

    def document(self, state: ShieldState) -> dict[str, t.Any]:
        config = state.config
        endpoints = mounted_endpoints()
        body: dict[str, t.Any] = {"issuer": self.issuer(state)}
        if self.authorization_endpoint is not None:
            body["authorization_endpoint"] = _absolute(self.authorization_endpoint)
        for role in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
            if role in endpoints:
                url, methods = endpoints[role]
                body[role] = url
                body[f"{role}_auth_methods_supported"] = list(methods)
        if "jwks_uri" in endpoints and state.keys.jwks()["keys"]:
            body["jwks_uri"] = endpoints["jwks_uri"][0]
        if self.scopes is not None:
            body["scopes_supported"] = self.scopes
        body["response_types_supported"] = self.response_types
        body["grant_types_supported"] = ["refresh_token"] if "token_endpoint" in endpoints else []
        if config.dpop.dpop != "off":
            body["dpop_signing_alg_values_supported"] = sorted(config.dpop.dpop_algorithms)
        if "status_list_aggregation_endpoint" in endpoints:
            # draft-ietf-oauth-status-list, "Issuer Metadata": where the status lists are listed.
            body["status_list_aggregation_endpoint"] = endpoints["status_list_aggregation_endpoint"][0]
        if "global_token_revocation_endpoint" in endpoints:
            body["global_token_revocation_endpoint"] = endpoints["global_token_revocation_endpoint"][0]
        return body

    def view(self) -> Response:
        state = current_state()
        if state.config.resource_server:
            raise NotFound()  # the identity provider is the authorization server there
        return _document(self.document(state))


class ResourceMetadata:
    """The RFC 9728 document of the app as a protected resource.

    :param resource: the resource identifier (an ``https`` URL); default: the URL the app is
        served at. Make the access tokens' audience (:data:`JWT_SHIELD_AUDIENCE`) the same.
    :param authorization_servers: issuer identifiers; default :data:`JWT_SHIELD_ISSUER` (in
        resource-server mode the identity provider), else this app.
    :param scopes: ``scopes_supported``, when the app wants to list them.
    """

    def __init__(
        self,
        *,
        resource: str | None = None,
        authorization_servers: t.Sequence[str] | None = None,
        scopes: t.Sequence[str] | None = None,
    ) -> None:
        if resource is not None:
            parts = urlsplit(resource)
            if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
                raise ValueError(f"resource must be a URL without query or fragment (RFC 9728 §1.2), not {resource!r}")
        self.resource = resource
        self.authorization_servers = list(authorization_servers) if authorization_servers is not None else None
        self.scopes = list(scopes) if scopes is not None else None

    def identifier(self) -> str:
        return self.resource or _origin()

    def url(self) -> str:
        """Where the document for :meth:`identifier` is served (RFC 9728 §3.1: the
        well-known segment goes between the host and the identifier's path)."""
        parts = urlsplit(self.identifier())
        path = parts.path.rstrip("/")
        return f"{parts.scheme}://{parts.netloc}{RESOURCE_PATH}{path}"

    def document(self, state: ShieldState) -> dict[str, t.Any]:
        config = state.config
        servers = self.authorization_servers or [config.keys.issuer or _origin()]
        body: dict[str, t.Any] = {"resource": self.identifier(), "authorization_servers": servers}
        if not config.resource_server:
            jwks = mounted_endpoints().get("jwks_uri")
            if jwks is not None and state.keys.jwks()["keys"]:
                body["jwks_uri"] = jwks[0]
        if self.scopes is not None:
            body["scopes_supported"] = self.scopes
        # Cookies carry the browser's tokens, but no RFC 6750 method names them.
        body["bearer_methods_supported"] = ["header"] if "headers" in config.request.token_locations else []
        if config.dpop.dpop != "off":
            body["dpop_signing_alg_values_supported"] = sorted(config.dpop.dpop_algorithms)
        body["dpop_bound_access_tokens_required"] = config.dpop.dpop == "required"
        return body

    def view(self, suffix: str | None = None) -> Response:
        state = current_state()
        expected = urlsplit(self.identifier()).path.strip("/")
        if (suffix or "") != expected:
            raise NotFound()  # a path-suffixed document of another resource
        return _document(self.document(state))

    def install(self, bp: Blueprint) -> None:
        """Serve the document and make every challenge of the app name it."""

        def announce(setup: t.Any) -> None:
            state = setup.app.extensions.get(EXTENSION_KEY)
            if state is None:
                raise RuntimeError("Register the metadata blueprint after shield.init_app(app).")
            state.resource_metadata = self.url

        bp.record_once(announce)


def make_blueprint(
    name: str,
    exempt: t.Callable[[t.Callable[..., Response]], t.Callable[..., Response]],
    *,
    resource: str | None,
    authorization_servers: t.Sequence[str] | None,
    scopes: t.Sequence[str] | None,
    response_types: t.Sequence[str],
    authorization_endpoint: str | None,
) -> Blueprint:
    """The blueprint of :meth:`JWTShield.metadata_blueprint
    <flask_jwt_shield.JWTShield.metadata_blueprint>`: both documents, exempt."""
    try:
        server = AuthorizationServerMetadata(
            scopes=scopes, response_types=response_types, authorization_endpoint=authorization_endpoint
        )
        protected = ResourceMetadata(resource=resource, authorization_servers=authorization_servers, scopes=scopes)
    except ValueError as exc:
        raise ConfigurationError(f"metadata_blueprint(): {exc}") from None
    bp = Blueprint(name, __name__)
    bp.add_url_rule(AUTHORIZATION_SERVER_PATH, "authorization_server", exempt(server.view))
    bp.add_url_rule(RESOURCE_PATH, "protected_resource", exempt(protected.view))
    bp.add_url_rule(f"{RESOURCE_PATH}/<path:suffix>", "protected_resource_path", exempt(protected.view))
    protected.install(bp)
    return bp


def _absolute(url: str) -> str:
    return url if urlsplit(url).scheme else _origin() + "/" + url.lstrip("/")
