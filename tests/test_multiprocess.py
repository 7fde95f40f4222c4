"""The SQLite store shared by real gunicorn worker processes, and across a restart."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import typing as t
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.client import HTTPConnection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def gunicorn_command() -> list[str]:
    if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None:
        message = "gunicorn is not installed (pip install -e '.[bench]'); the multi-worker tests need it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return [sys.executable, "-m", "gunicorn"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def gunicorn(db: Path, workers: int = 2, *, env: dict[str, str] | None = None,
             preload: bool = False) -> Iterator[int]:  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [*gunicorn_command(), "-w", str(workers), "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2",
         *(["--preload"] if preload else []), "tests.multiworker_app:create_app()"],
        cwd=ROOT, env={**os.environ, "SHIELD_TEST_DB": str(db), **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:  # bounded: until the server answers or the deadline passes
            try:
                call(port, "GET", "/pid")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start: {process.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def call(port: int, method: str, path: str, token: str | None = None, body: t.Any = None) -> tuple[int, t.Any]:
    conn = HTTPConnection("127.0.0.1", port, timeout=5)  # a new connection: any worker may answer
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        body = json.loads(response.read() or b"null")
        if isinstance(body, dict):
            body["worker"] = int(response.headers["X-Worker-Pid"])
        return response.status, body
    finally:
        conn.close()


def burst(port: int, token: str, n: int = 8) -> list[tuple[int, t.Any]]:
    """``n`` concurrent requests: an idle sync worker takes whatever a busy one cannot."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(port, "GET", "/api/me", token), range(n)))


def test_revocation_reaches_every_worker_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "shield.db"
    with gunicorn(db) as port:
        status, pair = call(port, "POST", "/login")
        assert status == 200
        pids: set[int] = set()
        for _ in range(20):  # until both workers have served (and cached) the token; bounded
            results = burst(port, pair["access_token"])
            assert {status for status, _ in results} == {200}
            pids |= {body["worker"] for _, body in results}
            if len(pids) == 2:
                break
        assert len(pids) == 2, "both workers should have answered"
        assert call(port, "POST", "/logout", pair["access_token"])[0] == 200
        refused_by: set[int] = set()
        for _ in range(20):  # every worker, not just the one that revoked, refuses the token now
            for status, body in burst(port, pair["access_token"]):
                assert status == 401 and body["error"] == "invalid_token"
                refused_by.add(body["worker"])
            if refused_by == pids:
                break
        assert refused_by == pids
        status, body = call(port, "POST", "/refresh", body={"refresh_token": pair["refresh_token"]})
        assert status == 400 and body["error"] == "invalid_grant"
        second = call(port, "POST", "/login?sub=bob")[1]
    with gunicorn(db) as port:  # a restart: new processes, same file
        assert call(port, "GET", "/api/me", pair["access_token"])[0] == 401
        assert call(port, "GET", "/api/me", second["access_token"])[0] == 200
        status, body = call(port, "POST", "/refresh", body={"refresh_token": second["refresh_token"]})
        assert status == 200


def test_refresh_reuse_detected_across_workers(tmp_path: Path) -> None:
    with gunicorn(tmp_path / "shield.db", workers=3) as port:
        pair = call(port, "POST", "/login")[1]
        results = [call(port, "POST", "/refresh", body={"refresh_token": pair["refresh_token"]}) for _ in range(6)]
        assert [status for status, _ in results].count(200) == 1  # one successor, whichever worker
        assert all(body["error"] == "invalid_grant" for status, body in results if status != 200)
        successor = next(body for status, body in results if status == 200)
        refused_by: set[int] = set()
        for _ in range(20):  # the reuse revoked it, for every worker (bounded)
            for status, body in burst(port, successor["access_token"]):
                assert status == 401
                refused_by.add(body["worker"])
            if len(refused_by) >= 2:
                break
        assert len(refused_by) >= 2
