"""Fetching a document from another party: a JWK Set, a discovery document, a Status List Token.

One function, :func:`fetch`, with the hygiene every such fetch needs:

* **HTTPS only** (plain ``http`` for ``127.0.0.1``/``localhost``/``::1`` only, for tests),
  also across redirects, which go only where the caller allows and are limited in number;
* **one deadline** over the whole fetch -- connect, TLS, status line, headers, body and
  redirects together -- so a server trickling one byte at a time cannot hold the thread;
* **a size bound** on the body, read in chunks and cut off one chunk past the bound.

Callers keep their own caching and their "one fetch at a time" rule (:mod:`.jwks`,
:mod:`.statuslist.client`); every failure here is a :class:`FetchError` with a reason that
names no secret (URLs are masked by the callers' logs).
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import socket
import time
import typing as t
import urllib.error
import urllib.request
from http.client import HTTPMessage

from .config import check_url

#: The ``User-Agent`` of every fetch.
USER_AGENT = "Flask-JWT-Shield"


class FetchError(Exception):
    """A document could not be fetched: unreachable, too slow, too large, a refused redirect,
    an HTTP status other than 200. The message says which."""


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL that :func:`check_url` (and the caller's ``allow``)
    accepts: no HTTPS downgrade, no host the caller did not allow, at most ``limit`` hops
    (RFC 9110 §15.4: a client must guard against redirect loops)."""

    def __init__(self, allow: t.Callable[[str], object] | None, limit: int) -> None:
        super().__init__()
        self._allow = allow
        self._limit = limit
        self._hops = 0  # one handler per fetch: counts that fetch's redirects

    def redirect_request(
        self, req: urllib.request.Request, fp: t.IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        self._hops += 1
        if self._hops > self._limit:
            raise FetchError(f"more than {self._limit} redirects")
        try:
            check_url(newurl, "redirect target")
            if self._allow is not None:
                self._allow(newurl)
        except ValueError as exc:
            raise FetchError(str(exc)) from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _DeadlinePassed(TimeoutError):
    """The whole fetch (connect, TLS, status line, headers, body, redirects) ran out of time."""


class _Deadline:
    """One bound on a whole fetch, and the per-operation timeout under it.

    A socket timeout alone bounds each wait, not their sum: a server dribbling its status
    line and headers one byte per wait could hold the fetch for as long as it liked. Every
    network operation of the fetch therefore asks :meth:`left` first and waits no longer.
    """

    def __init__(self, total: float, per_operation: float) -> None:
        self.total = total
        self.per_operation = per_operation
        self.at = time.monotonic() + total

    def left(self) -> float:
        """The timeout for the next operation; :class:`_DeadlinePassed` when none is left."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed(f"the response took longer than {self.total:g} s")
        return min(left, self.per_operation)


class _DeadlineReader(io.RawIOBase):
    """A response's socket reads, each one waiting only for the time the fetch has left."""

    def __init__(self, raw: t.Any, sock: socket.socket, deadline: _Deadline) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int | None:
        self._sock.settimeout(self._deadline.left())
        count: int | None = self._raw.readinto(buffer)
        return count

    def close(self) -> None:
        if not self.closed:
            self._raw.close()  # gives the socket back (http.client counts its readers)
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response whose status line, headers and body are read under the deadline."""

    deadline: _Deadline  # set on the subclass each connection makes for itself

    def __init__(
        self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        # http.client reads the status line and each header with readline(), which may take
        # many socket reads; nothing has been read yet, so the reader can be swapped.
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, self.deadline))


class _DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection whose connect, TLS handshake, request and response share one deadline."""

    def __init__(self, host: str, *, deadline: _Deadline, **kwargs: t.Any) -> None:
        super().__init__(host, **kwargs)
        self._deadline = deadline
        self.response_class = type("_Response", (_DeadlineResponse,), {"deadline": deadline})
        self._create_connection = self._connect_within

    def _connect_within(
        self, address: tuple[str, int], timeout: float | None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        sock = socket.create_connection(address, self._deadline.left(), source_address)
        # The TLS handshake that may follow waits with this timeout: only what is left.
        sock.settimeout(self._deadline.left())
        return sock

    def send(self, data: t.Any) -> None:
        if self.sock is not None:
            self.sock.settimeout(self._deadline.left())
        super().send(data)


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)

    def _connection(self, host: str, /, **kwargs: t.Any) -> http.client.HTTPConnection:
        return _DeadlineConnection(host, deadline=self._deadline, **kwargs)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        # No context given: http.client's default one (the system's CAs, host names checked).
        return self.do_open(self._connection, req)

    def _connection(self, host: str, /, **kwargs: t.Any) -> http.client.HTTPConnection:
        return _DeadlineHTTPSConnection(host, deadline=self._deadline, **kwargs)


# Transport failures of a fetch: refused, reset, timed out, TLS (ssl.SSLError is an OSError),
# a malformed status line or header (http.client.HTTPException), a bad URL or encoding
# (ValueError). Each one is "the provider is unreachable", never an exception for the request.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, ValueError)


@dataclasses.dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched document: its body and the response headers the callers read."""

    body: bytes
    cache_control: str | None
    content_type: str | None


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    accept: str = "application/json",
    allow: t.Callable[[str], object] | None = None,
    max_redirects: int = 10,
) -> Fetched:
    """GET ``url`` within the bounds above.

    :param timeout: seconds for each network wait; twice this bounds the whole fetch.
    :param max_bytes: the largest body accepted.
    :param allow: called with each redirect target; raises :class:`ValueError` to refuse it
        (``url`` itself is the caller's to check).
    :raises FetchError: with the reason.
    """
    # check_url() admitted only https (or http to this host), also for redirects.
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": USER_AGENT})  # noqa: S310
    # One deadline for the whole fetch, redirects included: the timeout bounds each wait,
    # twice it bounds connect, TLS, status line, headers and body together, so a server
    # trickling one byte at a time cannot hold the fetching thread (and, before the first
    # success, keep every request waiting on it) for longer than that.
    deadline = _Deadline(2 * timeout, timeout)
    opener = urllib.request.build_opener(
        _SafeRedirects(allow, max_redirects), _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline)
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            if response.status != 200:
                raise FetchError(f"HTTP {response.status}")
            chunks: list[bytes] = []
            size = 0
            while size <= max_bytes:
                chunk = response.read1(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            body = b"".join(chunks)
            headers = response.headers
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:  # a redirect past the limit, or a loop
            raise FetchError(f"HTTP {exc.code}: too many redirects") from None
        raise FetchError(f"HTTP {exc.code}") from None
    except _TRANSPORT_ERRORS as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, _DeadlinePassed) or time.monotonic() >= deadline.at:
            raise FetchError(f"the response took longer than {deadline.total:g} s") from None
        raise FetchError(f"{type(exc).__name__}: {reason}") from None
    if len(body) > max_bytes:
        raise FetchError(f"the response is larger than {max_bytes} bytes")
    return Fetched(body, headers.get("Cache-Control"), headers.get("Content-Type"))
