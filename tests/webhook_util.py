"""Real HTTP alert receivers on 127.0.0.1 for the alert tests, started and stopped by them."""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import threading
import time
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

from .tls_util import tls_files


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> t.Any:
        return json.loads(self.body)


class Receiver:
    """What the server got, and how it answers.

    ``behaviour``: ``"ok"`` (204), ``"slow"`` (answers after ``delay`` seconds), ``"hung"``
    (reads the request and never answers, until the test ends), ``"fail"`` (answers
    ``status`` to the first ``failures`` requests, then 204).
    """

    def __init__(self, behaviour: str = "ok", *, delay: float = 0.5, failures: int = 0, status: int = 500) -> None:
        self.behaviour = behaviour
        self.delay = delay
        self.failures = failures
        self.status = status
        self.received: list[Received] = []
        self.seen = threading.Condition()
        self.release = threading.Event()  # ends every hung or slow answer
        self.url = ""

    def record(self, item: Received) -> int:
        with self.seen:
            self.received.append(item)
            self.seen.notify_all()
            return len(self.received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block (bounded) until ``count`` requests arrived; the requests so far."""
        end = time.monotonic() + timeout
        with self.seen:
            while len(self.received) < count:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"receiver got {len(self.received)} requests, expected {count}")
                self.seen.wait(remaining)
            return list(self.received)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: t.Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            n = receiver.record(Received(self.path, dict(self.headers.items()), body))
            behaviour = receiver.behaviour
            if behaviour == "hung":
                receiver.release.wait(60)  # bounded: the test sets it when it ends
                return
            if behaviour == "slow":
                receiver.release.wait(receiver.delay)
            status = receiver.status if behaviour == "fail" and n <= receiver.failures else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def receiver(behaviour: str = "ok", *, tls: ssl.SSLContext | None = None, **kwargs: t.Any) -> Iterator[Receiver]:
    """A receiver listening on a free port of 127.0.0.1, stopped when the block ends.

    ``tls``: a server context (see :func:`tls_pair`) to answer HTTPS at ``https://localhost``.
    """
    rec = Receiver(behaviour, **kwargs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/shield"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        rec.url = f"https://localhost:{server.server_address[1]}/hooks/shield"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/shield"


def tls_pair(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A throwaway CA and a certificate for ``localhost`` signed by it: the server's context,
    and the CA file a client must trust (``SSL_CERT_FILE``)."""
    ca_file, cert_file, key_file = tls_files(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file
