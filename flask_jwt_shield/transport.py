"""Where a token comes from: the ``Authorization`` header (RFC 6750 §2.1).

Step 2 of the request pipeline. The query string and the form body are never token
locations (RFC 6750 §2.3 warns against URLs; §2.2's form body is refused too), so a token
has one place only, and two credentials in one request are refused rather than resolved.
"""

from __future__ import annotations

import re
import typing as t

from werkzeug.wrappers import Request

from .errors import InvalidRequest
from .errors import InvalidToken
from .errors import MissingToken

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# The scheme name and its separator may precede the token inside the size limit.
_HEADER_OVERHEAD = 64

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def extract_token(req: Request, environ: t.Mapping[str, t.Any], max_token_bytes: int) -> str:
    """The bearer token of ``req``; raises the 400/401 of DESIGN.md's error table.

    ``environ`` is ``req.environ``, passed in because the pipeline already holds it; the
    size limit applies before the header is parsed.
    """
    # Parsed only when present: a percent-encoded name (access%5Ftoken) is the same name.
    if environ.get("QUERY_STRING") and "access_token" in req.args:
        raise InvalidRequest("Send the access token in the Authorization header, not the URL.",
                             reason="token-in-query")  # fmt: skip
    if environ.get("CONTENT_TYPE") and req.mimetype in _FORM_TYPES and "access_token" in req.form:
        raise InvalidRequest("Send the access token in the Authorization header, not the body.",
                             reason="token-in-body")  # fmt: skip
    header = environ.get("HTTP_AUTHORIZATION")
    if header is None:
        raise MissingToken()
    if len(header) > max_token_bytes + _HEADER_OVERHEAD:
        raise InvalidToken("The token is too large.", reason="too-large")
    scheme, _, credentials = header.strip(" ").partition(" ")
    if scheme.lower() != "bearer":
        if "bearer" in header.lower():  # e.g. "Basic x, Bearer y": two credentials
            raise InvalidRequest("The Authorization header is malformed.", reason="malformed-header")
        raise MissingToken()  # another scheme: no bearer credentials (RFC 6750 §3.1)
    token: str = credentials.strip(" ")
    if not _B64TOKEN.fullmatch(token):
        # Spaces, commas (two tokens joined by a proxy), or characters no token has.
        raise InvalidRequest("The Authorization header is malformed.", reason="malformed-header")
    return token
