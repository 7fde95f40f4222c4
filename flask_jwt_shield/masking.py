"""One rule for showing a configured URL without its credentials.

Settings are shown in several places -- ``flask jwt-shield check-config``, the dashboard,
the alert sink's log lines, the JWK Set client's log lines -- and each of them goes through
:func:`mask_url`, so a credential hidden in one place is hidden in all of them.

Where a URL carries a credential: the userinfo (``redis://:pw@host``,
``https://user:pw@idp``, ``https://token@host``), the query string (``?password=``,
``?token=``, ``?sig=``, any parameter the rule does not know to be harmless) and the
fragment. Webhook URLs often hold the secret in the path itself (``/services/T0/B1/xyz``),
so their path is dropped as well (``keep_path=False``).
"""

from __future__ import annotations

import urllib.parse

#: What replaces a credential.
MASK = "***"

# Query parameters known to carry no secret: their values stay readable (a Redis database
# number, a timeout). Every other parameter's value is masked, whatever its name.
_HARMLESS = frozenset(
    {
        "db",
        "timeout",
        "socket_timeout",
        "socket_connect_timeout",
        "ssl_cert_reqs",
        "protocol",
        "health_check_interval",
        "max_connections",
        "decode_responses",
        "mode",
        "cache",
        "check_same_thread",
    }
)


def mask_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` fit to be shown or logged: every credential in it replaced by ``***``.

    ``redis://:pw@host:6379/0`` → ``redis://:***@host:6379/0``;
    ``https://idp.example/jwks?token=abc&kid=1`` → ``https://idp.example/jwks?token=***&kid=***``;
    with ``keep_path=False`` only scheme, host and port remain (``https://hooks.example/...``).
    A value that does not parse as a URL is shown as ``***`` rather than risk showing it.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme:
        return MASK if any(c in url for c in "@?#") else url
    if not keep_path:
        try:
            port = parts.port
        except ValueError:
            port = None
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        tail = "/..." if parts.path not in ("", "/") or parts.query or parts.fragment else "/"
        return f"{parts.scheme}://{host}{f':{port}' if port else ''}{tail}"
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hosts}" if colon else f"{MASK}@{hosts}"
    # Put together by hand: urlunsplit() would turn "sqlite:///x" into "sqlite:/x".
    shown = f"{parts.scheme}:" + (f"//{netloc}" if url[len(parts.scheme) + 1 :].startswith("//") else "") + parts.path
    if parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        shown += "?" + (
            "&".join(
                f"{urllib.parse.quote(name, safe='')}="
                f"{urllib.parse.quote(value, safe='') if name.lower() in _HARMLESS else MASK}"
                for name, value in pairs
            )
            if pairs
            else MASK
        )
    if parts.fragment:
        shown += "#" + MASK
    return shown


__all__ = ["MASK", "mask_url"]
