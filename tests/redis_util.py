"""Start a real, throw-away ``redis-server`` for the tests.

The server listens on 127.0.0.1 on a free port, persists nothing (``--save ""``,
``--appendonly no``), keeps its files in a temporary directory, and is stopped by its PID.
Without a ``redis-server`` binary the calling test is skipped with a loud reason -- except
when the environment variable ``CI`` is ``"true"``: CI must run these tests, so there the
test fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: how long a fresh server may take to answer PING before the test fails
STARTUP_TIMEOUT = 10.0


class RedisServer:
    """One running ``redis-server`` process: its :attr:`url`, :attr:`port` and :attr:`pid`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, directory: Path) -> None:
        self.process = process
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def redis_server_binary() -> str:
    """Path of ``redis-server``; skips the test (fails it when ``CI=true``) if missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = (
            "redis-server NOT FOUND on PATH: the Redis tests did NOT run. Install it"
            " (apt-get install redis-server) to test the Redis backend."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " CI=true, so this is a failure, not a skip.", pytrace=False)
        pytest.skip(reason)
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(directory: Path) -> RedisServer:
    """Start ``redis-server`` with its files in ``directory``; return once it answers PING."""
    binary = redis_server_binary()
    # Another process may take the free port between our probe and the server's bind:
    # then the server exits at once and we try another port.
    for _attempt in range(3):
        port = _free_port()
        log = (directory / f"redis-{port}.log").open("wb")
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        server = RedisServer(process, port, directory)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while server.running() and time.monotonic() < deadline:
            if _answers_ping(port):
                return server
            time.sleep(0.02)
        server.stop()
    output = "\n".join(p.read_text(errors="replace") for p in directory.glob("redis-*.log"))
    pytest.fail(f"redis-server did not answer PING within {STARTUP_TIMEOUT} s:\n{output}")


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A started server keeping its files in ``directory``; yields its URL, stops it on exit."""
    server = start_redis(Path(directory))
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started server in a temporary directory, stopped (by PID) on exit."""
    with tempfile.TemporaryDirectory(prefix="jwt-shield-redis-") as tmp:
        server = start_redis(Path(tmp))
        try:
            yield server
        finally:
            server.stop()
