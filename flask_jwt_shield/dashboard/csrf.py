"""CSRF protection for the dashboard's forms: a random value in a cookie, and its HMAC in
every form.

The cookie (``jws_dash_csrf``: HttpOnly, SameSite=Strict, Secure over HTTPS) holds a
random value; each form carries ``csrf_token`` = HMAC-SHA256 of that value under a key
derived from the app's ``SECRET_KEY`` (or, without one, from the shield's signing key).
A cross-site page can neither read the cookie nor compute the HMAC, and a cookie planted
from a sibling subdomain is useless without the key: the token is tied to the cookie and
to this app. Compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import typing as t

from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask import g
from flask import request

from ..keys import b64url
from ..state import ShieldState

COOKIE = "jws_dash_csrf"
FIELD = "csrf_token"
_LABEL = b"flask-jwt-shield dashboard csrf v1\x00"
_EXTENSION_KEY = "jwt_shield_dashboard_csrf_key"


def key_for(app: Flask, state: ShieldState) -> bytes | None:
    """The app's CSRF key, derived once and kept in ``app.extensions``; ``None`` when the
    app has neither ``SECRET_KEY`` nor a signing key (resource-server mode without one)."""
    cached = app.extensions.get(_EXTENSION_KEY)
    if isinstance(cached, bytes):
        return cached
    material: bytes | None = None
    secret = app.secret_key
    if secret:
        material = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    elif state.keys.signing_key is not None:
        signing = state.keys.signing_key.signing
        material = (
            signing
            if isinstance(signing, bytes)
            else signing.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    if material is None:
        return None
    # A key of its own (domain-separated), so a form token is never a MAC made with the
    # signing key for any other purpose.
    key = hmac.new(material, _LABEL, hashlib.sha256).digest()
    app.extensions[_EXTENSION_KEY] = key
    return key


def _mac(key: bytes, value: str) -> str:
    return b64url(hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest())


def form_token(key: bytes) -> str:
    """The ``csrf_token`` for this request's forms; sets the cookie when there is none yet."""
    value = request.cookies.get(COOKIE)
    if not value or len(value) > 100:
        value = g.get("_jws_dash_new_csrf") or secrets.token_urlsafe(32)
        g._jws_dash_new_csrf = value
    return _mac(key, value)


def valid(key: bytes, submitted: object) -> bool:
    """Whether ``submitted`` is the form token for this request's cookie."""
    value = request.cookies.get(COOKIE)
    if not value or len(value) > 100 or not isinstance(submitted, str) or len(submitted) > 100:
        return False
    return hmac.compare_digest(_mac(key, value), submitted)


def set_cookie(response: t.Any, path: str) -> None:
    """Send the cookie made for this request, if one was."""
    value = g.get("_jws_dash_new_csrf")
    if value:
        response.set_cookie(COOKIE, value, path=path, httponly=True, samesite="Strict", secure=request.is_secure)
