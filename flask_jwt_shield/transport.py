"""Where a token comes from: the ``Authorization`` header (RFC 6750 §2.1, RFC 9449 §7.1)
or, for browsers, a cookie guarded by a CSRF header and a fingerprint cookie.

Step 2 of the request pipeline. The query string and the form body are never token
locations (RFC 6750 §2.3 warns against URLs; §2.2's form body is refused too), so a token
has one place only, and two credentials in one request are refused rather than resolved.

Cookies (``JWT_SHIELD_TOKEN_LOCATIONS`` with ``"cookies"``) follow the OWASP JWT cheat
sheet: the access token in an HttpOnly ``__Host-`` cookie (no script reads it, no other
host or path sets it), a random *fingerprint* in another HttpOnly ``__Host-`` cookie whose
SHA-256 the tokens carry as ``fgp`` (a token copied out of the browser is useless without
it), and double-submit CSRF protection on unsafe methods: the ``X-CSRF-Token`` header must
carry the value of the script-readable ``jws_csrf`` cookie, which is an HMAC of the
fingerprint, so a cookie planted by a sibling domain cannot forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import typing as t

from flask import after_this_request
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from .cache import bounded_put
from .errors import InvalidRequest
from .errors import InvalidToken
from .errors import MissingToken
from .jose import b64url

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# The scheme name and its separator may precede the token inside the size limit.
_HEADER_OVERHEAD = 64

# Where request_cookies() keeps the request's cookies (one split of the header per request).
_COOKIES_KEY = "flask_jwt_shield.cookies"

# fingerprint -> its SHA-256 (base64url), for fingerprint_matches.
_fingerprint_hashes: dict[str, str] = {}
_FINGERPRINT_CACHE = 4096

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

#: The access token's cookie. ``__Host-``: Secure, no Domain, Path ``/`` (RFC 6265bis §4.1.3.2).
ACCESS_COOKIE = "__Host-jws_access"
#: The refresh token's cookie (always ``SameSite=Strict``).
REFRESH_COOKIE = "__Host-jws_refresh"
#: The fingerprint's cookie; the tokens carry its SHA-256 as ``fgp``.
FINGERPRINT_COOKIE = "__Host-jws_fgp"
#: The short-lived cookie of a DBSC session, renewed with the browser's key (:mod:`.dbsc`).
DBSC_COOKIE = "__Host-jws_dbsc"
#: The CSRF value, readable by the page's script, which echoes it in :data:`CSRF_HEADER`.
CSRF_COOKIE = "jws_csrf"
CSRF_HEADER = "X-CSRF-Token"
# RFC 9110 §9.2.1: the methods that change nothing; every other one needs the CSRF header.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

#: Where :func:`extract_token` found the token.
Location = t.Literal["bearer", "dpop", "cookie"]


def new_fingerprint() -> str:
    """A random fingerprint (256 bits) for the ``__Host-jws_fgp`` cookie."""
    return secrets.token_urlsafe(32)


def fingerprint_hash(fingerprint: str) -> str:
    """The ``fgp`` claim of tokens bound to ``fingerprint``: base64url(SHA-256)."""
    return b64url(hashlib.sha256(fingerprint.encode("utf-8")).digest())


def csrf_token_for(fingerprint: str) -> str:
    """The CSRF value that belongs to ``fingerprint`` (the ``jws_csrf`` cookie)."""
    return b64url(hmac.new(fingerprint.encode("utf-8"), b"flask-jwt-shield csrf", hashlib.sha256).digest())


def request_cookie(req: Request, environ: t.MutableMapping[str, t.Any], name: str) -> str | None:
    """The value of cookie ``name`` as ``req.cookies.get(name)`` reads it."""
    return request_cookies(req, environ).get(name)


def request_cookies(req: Request, environ: t.MutableMapping[str, t.Any]) -> t.Mapping[str, str]:
    """The request's cookies as werkzeug's parser reads them (first value of each name), split
    from the ``Cookie`` header once per request and kept in ``environ``: a cookie session
    reads three cookies per request, and werkzeug's parser costs several times this split.

    Without a double quote in the header, werkzeug's grammar is one cookie per ``;``-separated
    part: a name and an optional ``=value``, blanks around both ignored, neither holding a
    blank (a part that breaks that is skipped). A quoted value may hold ``;`` and escapes: such
    a header goes to werkzeug's parser itself, so the answer is always the parser's.
    """
    found: t.Mapping[str, str] | None = environ.get(_COOKIES_KEY)
    if found is None:
        header: str = environ.get("HTTP_COOKIE") or ""
        if '"' in header:
            found = req.cookies
        else:
            plain: dict[str, str] = {}
            for part in header.split(";"):
                cookie, _, value = part.partition("=")
                cookie = cookie.strip(" \t")
                if not cookie or " " in cookie or "\t" in cookie or cookie in plain:
                    continue
                value = value.strip(" \t")
                if " " not in value and "\t" not in value:
                    plain[cookie] = value
            found = plain
        environ[_COOKIES_KEY] = found
    return found


def _same(a: str, b: str) -> bool:
    # WSGI header values are latin-1 strings: as bytes they always compare, in constant time.
    return hmac.compare_digest(a.encode("latin-1", "replace"), b.encode("latin-1", "replace"))


def check_csrf(req: Request, environ: t.MutableMapping[str, t.Any]) -> None:
    """Refuse an unsafe request whose ``X-CSRF-Token`` is not its fingerprint's CSRF value."""
    sent = environ.get("HTTP_X_CSRF_TOKEN")
    fingerprint = request_cookie(req, environ, FINGERPRINT_COOKIE)
    if not sent or not fingerprint or not _same(sent, csrf_token_for(fingerprint)):
        raise InvalidRequest(
            f"Send the {CSRF_HEADER} header (the value of the {CSRF_COOKIE} cookie) with this request.", reason="csrf"
        )


def fingerprint_matches(req: Request, fgp: object) -> bool:
    """Whether the request's fingerprint cookie is the one a token's ``fgp`` claim names."""
    fingerprint = request_cookie(req, req.environ, FINGERPRINT_COOKIE)
    if not isinstance(fgp, str) or fingerprint is None:
        return False
    # A browser sends the same fingerprint for the whole session: its hash is remembered.
    hashed = _fingerprint_hashes.get(fingerprint)
    if hashed is None:
        hashed = fingerprint_hash(fingerprint)
        bounded_put(_fingerprint_hashes, fingerprint, hashed, _FINGERPRINT_CACHE)
    return _same(hashed, fgp)


def set_cookies(
    response: Response,
    *,
    access_token: str,
    access_max_age: int,
    refresh_token: str,
    refresh_max_age: int,
    fingerprint: str | None,
    samesite: str,
) -> None:
    """Put a token pair in cookies; ``fingerprint`` (at login only) also sets the
    fingerprint and CSRF cookies, which live as long as the session."""
    response.set_cookie(
        ACCESS_COOKIE, access_token, max_age=access_max_age, path="/", secure=True, httponly=True, samesite=samesite
    )
    # Strict: a refresh only ever comes from the app's own pages.
    response.set_cookie(
        REFRESH_COOKIE, refresh_token, max_age=refresh_max_age, path="/", secure=True, httponly=True, samesite="Strict"
    )
    if fingerprint is not None:
        response.set_cookie(
            FINGERPRINT_COOKIE,
            fingerprint,
            max_age=refresh_max_age,
            path="/",
            secure=True,
            httponly=True,
            samesite=samesite,
        )
        response.set_cookie(
            CSRF_COOKIE,
            csrf_token_for(fingerprint),
            max_age=refresh_max_age,
            path="/",
            secure=True,
            httponly=False,
            samesite=samesite,
        )


def unset_cookies(response: Response) -> None:
    """Expire every cookie :func:`set_cookies` sets."""
    for name in (ACCESS_COOKIE, REFRESH_COOKIE, FINGERPRINT_COOKIE):
        response.delete_cookie(name, path="/", secure=True, httponly=True)
    response.delete_cookie(CSRF_COOKIE, path="/", secure=True)


def extract_token(
    req: Request,
    environ: t.MutableMapping[str, t.Any],
    max_token_bytes: int,
    *,
    headers: bool = True,
    dpop: bool = False,
    cookies: bool = False,
) -> tuple[str, Location]:
    """The access token of ``req`` and where it was; raises the 400/401 of DESIGN.md's
    error table.

    ``environ`` is ``req.environ``, passed in because the pipeline already holds it; the
    size limit applies before the header is parsed. ``headers``, ``dpop`` and ``cookies``
    say which locations and schemes this app accepts. A cookie token on an unsafe method
    needs the CSRF header (:func:`check_csrf`).
    """
    # Parsed only when present: a percent-encoded name (access%5Ftoken) is the same name.
    if environ.get("QUERY_STRING") and "access_token" in req.args:
        raise InvalidRequest("Send the access token in the Authorization header, not the URL.", reason="token-in-query")
    if environ.get("CONTENT_TYPE") and req.mimetype in _FORM_TYPES and "access_token" in req.form:
        raise InvalidRequest("Send the access token in the Authorization header, not the body.", reason="token-in-body")
    cookie = request_cookie(req, environ, ACCESS_COOKIE) if cookies else None
    header = environ.get("HTTP_AUTHORIZATION") if headers else None
    if header is None:
        if cookie is None:
            raise MissingToken()
        return _from_cookie(req, environ, cookie, max_token_bytes), "cookie"
    if len(header) > max_token_bytes + _HEADER_OVERHEAD:
        raise InvalidToken("The token is too large.", reason="too-large")
    scheme, _, credentials = header.strip(" ").partition(" ")
    lowered = scheme.lower()
    location: Location
    if lowered == "bearer":
        location = "bearer"
    elif dpop and lowered == "dpop":  # RFC 9449 §7.1; like Bearer, case-insensitive
        location = "dpop"
    else:
        lowered = header.lower()
        if "bearer" in lowered or (dpop and "dpop " in lowered):  # e.g. "Basic x, Bearer y"
            raise InvalidRequest("The Authorization header is malformed.", reason="malformed-header")
        if cookie is not None:  # another scheme (Basic for a proxy) is no token credential
            return _from_cookie(req, environ, cookie, max_token_bytes), "cookie"
        raise MissingToken()  # another scheme: no bearer credentials (RFC 6750 §3.1)
    if cookie is not None:
        raise InvalidRequest(
            "Send the access token in one place: the Authorization header or the cookie, not both.",
            reason="two-credentials",
        )
    token: str = credentials.strip(" ")
    if not _B64TOKEN.fullmatch(token):
        # Spaces, commas (two tokens joined by a proxy), or characters no token has.
        raise InvalidRequest("The Authorization header is malformed.", reason="malformed-header")
    return token, location


class TokenExtractor:
    """:func:`extract_token` for one app's settings, remembering what an ``Authorization``
    header alone decided: a token sent again skips the parsing.

    Only a request where the header is the whole story is answered from memory -- no query
    string, no ``Content-Type`` (so no form body), cookie tokens off -- since those checks
    look beyond the header. A header is remembered only once ``known(token)`` says its token
    verified before (so garbage, however well formed, takes no room), at most ``remember``
    of them (the size of the verified-token cache; 0 remembers nothing).
    """

    def __init__(
        self,
        max_token_bytes: int,
        *,
        headers: bool,
        dpop: bool,
        cookies: bool,
        remember: int,
        known: t.Callable[[str], bool],
    ) -> None:
        self._max_bytes = max_token_bytes
        self._headers, self._dpop, self._cookies = headers, dpop, cookies
        self._remember = remember if headers and not cookies else 0
        self._known = known
        self._seen: dict[str, tuple[str, Location]] = {}

    def extract(self, req: Request, environ: t.MutableMapping[str, t.Any]) -> tuple[str, Location]:
        """The access token of ``req`` and where it was, as :func:`extract_token` says."""
        header = environ.get("HTTP_AUTHORIZATION")
        if header is not None and not environ.get("QUERY_STRING") and not environ.get("CONTENT_TYPE"):
            seen = self._seen.get(header)
            if seen is None:
                seen = self._parse(req, environ)
                if self._remember and self._known(seen[0]):
                    bounded_put(self._seen, header, seen, self._remember)
            return seen
        return self._parse(req, environ)

    def _parse(self, req: Request, environ: t.MutableMapping[str, t.Any]) -> tuple[str, Location]:
        return extract_token(
            req, environ, self._max_bytes, headers=self._headers, dpop=self._dpop, cookies=self._cookies
        )


def _from_cookie(req: Request, environ: t.MutableMapping[str, t.Any], token: str, max_token_bytes: int) -> str:
    if len(token) > max_token_bytes:
        raise InvalidToken("The token is too large.", reason="too-large")
    if not _B64TOKEN.fullmatch(token):
        raise InvalidToken("The token is malformed.", reason="malformed")
    if environ["REQUEST_METHOD"] not in SAFE_METHODS:
        check_csrf(req, environ)
    return token


def send_nonce(nonce: str) -> None:
    """Send ``DPoP-Nonce`` on this request's response (RFC 9449 §8.2: a fresh one, early)."""

    @after_this_request
    def add_nonce(response: t.Any) -> t.Any:
        response.headers["DPoP-Nonce"] = nonce
        return response
