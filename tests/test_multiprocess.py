"""One store shared by real gunicorn worker processes: SQLite on one host (also across a
restart), and Redis shared by several separate app servers, as on several hosts."""

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
def gunicorn(
    db: Path | None, workers: int = 2, env: dict[str, str] | None = None, *, preload: bool = False
) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [
            *gunicorn_command(),
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "2",
            *(["--preload"] if preload else []),
            "tests.multiworker_app:create_app()",
        ],
        cwd=ROOT,
        env={**os.environ, "SHIELD_TEST_DB": str(db), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # bounded: until the server answers or the deadline passes
            try:
                call(port, "GET", "/pid")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read().decode() if process.stderr is not None else ""
                    raise RuntimeError(f"gunicorn did not start: {stderr[-2000:]}") from None
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
        for _ in range(200):  # until both workers have served (and cached) the token; bounded
            results = burst(port, pair["access_token"])
            assert {status for status, _ in results} == {200}
            pids |= {body["worker"] for _, body in results}
            if len(pids) == 2:
                break
        assert len(pids) == 2, "both workers should have answered"
        assert call(port, "POST", "/logout", pair["access_token"])[0] == 200
        refused_by: set[int] = set()
        for _ in range(200):  # every worker, not just the one that revoked, refuses the token now
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
        for _ in range(200):  # the reuse revoked it, for every worker (bounded)
            for status, body in burst(port, successor["access_token"]):
                assert status == 401
                refused_by.add(body["worker"])
            if len(refused_by) >= 2:
                break
        assert len(refused_by) >= 2


# -- Redis: separate app servers (as on separate hosts) sharing one Redis -------------------


@contextmanager
def two_app_servers(redis_url: str, rate_limit: str | None = None) -> Iterator[tuple[int, int]]:
    """gunicorn with two workers, and a second, separate gunicorn, on one Redis."""
    env = {"SHIELD_TEST_STORE_URI": redis_url, "SHIELD_TEST_RATE_LIMIT": rate_limit or ""}
    with gunicorn(None, workers=2, env=env) as first, gunicorn(None, workers=1, env=env) as second:
        yield first, second


@pytest.mark.redis
def test_redis_revocation_crosses_app_servers_within_the_bound(redis_url: str) -> None:
    with two_app_servers(redis_url) as (a, b):
        pair = call(a, "POST", "/login")[1]
        token = pair["access_token"]
        for port in (a, b):  # both servers have seen (and remembered) the token
            for status, _ in burst(port, token):
                assert status == 200
        started = time.monotonic()
        assert call(a, "POST", "/logout", token)[0] == 200
        deadline = started + 5
        while call(b, "GET", "/api/me", token)[0] == 200:  # bounded polling
            assert time.monotonic() < deadline, "the other server never refused the revoked token"
        delay = time.monotonic() - started
        # JWT_SHIELD_REVOCATION_MAX_DELAY (1 s), plus the HTTP round trips of this test
        assert delay < 1.5, delay
        for port in (a, b):
            for status, body in burst(port, token):
                assert status == 401 and body["error"] == "invalid_token"
        assert call(b, "POST", "/refresh", body={"refresh_token": pair["refresh_token"]})[0] == 400


@pytest.mark.redis
def test_redis_refresh_race_across_app_servers_has_one_successor(redis_url: str) -> None:
    with two_app_servers(redis_url) as (a, b):
        pair = call(a, "POST", "/login")[1]
        body = {"refresh_token": pair["refresh_token"]}
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: call(a if i % 2 else b, "POST", "/refresh", body=body), range(16)))
        assert [status for status, _ in results].count(200) == 1
        assert all(r["error"] == "invalid_grant" for status, r in results if status != 200)
        assert len({r["worker"] for _, r in results}) >= 2  # the race really crossed processes
        successor = next(r for status, r in results if status == 200)
        # the reuse revoked the whole session, the successor included, on both servers
        deadline = time.monotonic() + 5
        while any(call(port, "GET", "/api/me", successor["access_token"])[0] != 401 for port in (a, b)):
            assert time.monotonic() < deadline


@pytest.mark.redis
def test_redis_per_token_limit_is_one_budget_across_app_servers(redis_url: str) -> None:
    # JWT_SHIELD_RATE_LIMIT_STORAGE_URI is unset: the counters live in the store's Redis.
    with two_app_servers(redis_url, rate_limit="10/hour") as (a, b):
        token = call(a, "POST", "/login")[1]["access_token"]
        statuses = [call(a if i % 2 else b, "GET", "/api/me", token)[0] for i in range(16)]
        assert statuses == [200] * 10 + [429] * 6


@pytest.mark.redis
@pytest.mark.parametrize("run", range(2))
def test_redis_leased_limit_stays_within_its_bound_across_gunicorn_workers(redis_url: str, run: int) -> None:
    workers = 4
    env = {
        "SHIELD_TEST_STORE_URI": redis_url,
        "SHIELD_TEST_RATE_LIMIT": "100/minute",
        "SHIELD_TEST_RATE_LIMIT_MODE": "leased",
    }
    with gunicorn(None, workers=workers, env=env) as port:
        token = call(port, "POST", "/login", body={})[1]["access_token"]
        stop = time.monotonic() + 2.0

        def client(_: int) -> list[tuple[int, int]]:
            seen = []
            while time.monotonic() < stop:
                status, body = call(port, "GET", "/api/me", token)
                seen.append((status, body["worker"] if isinstance(body, dict) else 0))
            return seen

        with ThreadPoolExecutor(16) as pool:
            seen = [s for chunk in pool.map(client, range(16)) for s in chunk]
    admitted = sum(1 for status, _ in seen if status == 200)
    assert {status for status, _ in seen} == {200, 429}
    assert len({worker for status, worker in seen if status == 200}) > 1  # several processes admitted
    # L <= admitted <= L + N (docs/ratelimits.rst, "Leased mode")
    assert 100 <= admitted <= 100 + workers, admitted
