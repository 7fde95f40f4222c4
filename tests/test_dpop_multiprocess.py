"""The DPoP replay cache holds across real processes: gunicorn workers on one SQLite file,
and separate app servers on one Redis. The same proof sent to all of them at once is
accepted exactly once."""

from __future__ import annotations

import json
import typing as t
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import pytest

from flask_jwt_shield.dpop import DPoPKey

from .test_multiprocess import gunicorn


def dpop_call(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, t.Any]]:
    conn = HTTPConnection("127.0.0.1", port, timeout=10)  # a new connection: any worker may answer
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        body = json.loads(response.read() or b"{}")
        body["worker"] = int(response.headers["X-Worker-Pid"])
        return response.status, body
    finally:
        conn.close()


def login(port: int, key: DPoPKey) -> str:
    status, body = dpop_call(port, "POST", "/login", {"DPoP": key.proof("POST", f"http://127.0.0.1:{port}/login")})
    assert status == 200 and body["token_type"] == "DPoP", body
    return t.cast(str, body["access_token"])


def replay_race(ports: list[int], token: str, key: DPoPKey) -> list[tuple[int, dict[str, t.Any]]]:
    """One proof, sent 12 times at once, spread over ``ports``. Every server sees the same
    URL (htu): the proof names the first port, and the others are told it is their Host."""
    url = f"http://127.0.0.1:{ports[0]}/api/me"
    headers = {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", url, token), "Host": f"127.0.0.1:{ports[0]}"}
    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(lambda i: dpop_call(ports[i % len(ports)], "GET", "/api/me", headers), range(12)))


def check_race(ports: list[int], token: str, key: DPoPKey) -> None:
    workers: set[int] = set()
    for _ in range(20):  # bounded: until the race has crossed processes at least once
        results = replay_race(ports, token, key)
        assert [status for status, _ in results].count(200) == 1, results
        assert all(body["error"] == "invalid_dpop_proof" for status, body in results if status != 200)
        workers = {body["worker"] for _, body in results}
        if len(workers) >= 2:
            break
    assert len(workers) >= 2, "the replays should have reached more than one process"


def test_replayed_proof_refused_by_every_gunicorn_worker_on_sqlite(tmp_path: Path) -> None:
    with gunicorn(tmp_path / "shield.db", workers=3, env={"SHIELD_TEST_DPOP": "optional"}) as port:
        key = DPoPKey.generate()
        check_race([port], login(port, key), key)


@pytest.mark.redis
def test_replayed_proof_refused_across_app_servers_on_redis(redis_url: str) -> None:
    env = {"SHIELD_TEST_STORE_URI": redis_url, "SHIELD_TEST_DPOP": "optional"}
    with gunicorn(None, workers=2, env=env) as first, gunicorn(None, workers=1, env=env) as second:
        key = DPoPKey.generate()
        check_race([first, second], login(first, key), key)
