"""Serve the example app in a process of its own, on 127.0.0.1, as ``make run`` does.

``python -m tests.example_server INSTANCE_DIR`` builds ``example_app.app.create_app`` with that
instance folder, serves it with werkzeug's threaded HTTP server on a free port, and prints
the port on its first line. :func:`serve` starts it, waits (bounded) for the port, and
stops it by its PID afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 30.0


class Server:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


@contextmanager
def serve(instance: Path) -> Iterator[Server]:
    """The example app served from another process, with its state in ``instance``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.example_server", str(instance)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = _read_port(process)
        yield Server(process, port)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _read_port(process: subprocess.Popen[str]) -> int:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=STARTUP_TIMEOUT):
            raise RuntimeError(f"the example app did not start within {STARTUP_TIMEOUT} s")
    line = process.stdout.readline().strip()
    if not line.isdigit():
        raise RuntimeError(f"the example app did not start: {line!r} (exit code {process.poll()})")
    return int(line)


def main(argv: list[str]) -> None:
    from werkzeug.serving import make_server

    from example_app.app import create_app

    app = create_app(instance_path=argv[0])
    server = make_server("127.0.0.1", 0, app, threaded=True)

    def stop(*_: t.Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(server.server_port, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
