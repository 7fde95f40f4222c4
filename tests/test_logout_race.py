""" "Log out everywhere" while a thief refreshes: no session survives (adversarial review, finding 1).

A thief holding a stolen refresh token refreshes in a loop; the owner logs out everywhere
(``revoke_subject``). Before the fix the refresh path checked revocation, then rotated, and
the atomic rotation never saw the subject's not-before time: a refresh that passed the
check before the revocation and rotated after it handed the thief a working pair, which kept
refreshing for the session's whole lifetime. Now ``revoke_subject`` ends every family of the
subject in the same atomic step, and a rotation that commits after it is refused.

A ``revocation_checker`` that takes 20 ms (a user-database lookup) widens the window between
the check and the rotation, as in the review. Threads and separate processes, on every store.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import typing as t
import uuid

import pytest
from flask import Flask

from flask_jwt_shield import InvalidGrant
from flask_jwt_shield import JWTShield
from flask_jwt_shield import StoreUnavailable
from flask_jwt_shield.stores import MemoryStore
from flask_jwt_shield.stores import RedisStore
from flask_jwt_shield.stores import SQLiteStore
from flask_jwt_shield.stores import Store

from .conftest import SECRET
from .conftest import bearer

TRIALS = 40
CHECKER_DELAY = 0.02


def _store(kind: str, where: str, prefix: str) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(where)
    return RedisStore(where, prefix=prefix)


def _app(store: Store) -> tuple[Flask, JWTShield]:
    app = Flask("logout_race")
    app.testing = True
    app.config.update(JWT_SHIELD_SECRET_KEY=SECRET, JWT_SHIELD_RATE_LIMIT=None)
    shield = JWTShield(store=store)

    @shield.revocation_checker
    def user_still_active(claims: t.Any) -> bool:
        time.sleep(CHECKER_DELAY)  # a user-database lookup
        return False

    @app.get("/api/me")
    def me() -> dict[str, str]:
        return {"ok": "yes"}

    shield.init_app(app)
    return app, shield


def _refresh_until_refused(app: Flask, shield: JWTShield, refresh_token: str, stop: t.Any) -> tuple[str, str] | None:
    """The thief: refresh in a loop; return the last pair obtained (access, refresh)."""
    last: tuple[str, str] | None = None
    with app.test_request_context("/oauth/token", method="POST"):
        for _ in range(200):
            try:
                pair = shield.refresh(refresh_token)
            except (InvalidGrant, StoreUnavailable):
                return last
            last = (pair.access_token, pair.refresh_token)
            refresh_token = pair.refresh_token
            if stop.is_set():
                return last
    return last


def _assert_nothing_survives(app: Flask, shield: JWTShield, last: tuple[str, str] | None, trial: int) -> None:
    if last is not None:
        access, refresh = last
        with app.test_request_context("/oauth/token", method="POST"), pytest.raises(InvalidGrant):
            shield.refresh(refresh)  # trial {trial}: the thief's last refresh token still rotates
        assert app.test_client().get("/api/me", headers=bearer(access)).status_code == 401, f"trial {trial}"
    with app.app_context():
        assert shield.sessions("victim") == [], f"trial {trial}: a session is still listed as live"


def _login(app: Flask, shield: JWTShield) -> str:
    with app.test_request_context("/login", method="POST"):
        return shield.issue_tokens("victim").refresh_token


def _logout_everywhere(app: Flask, shield: JWTShield, trial: int) -> None:
    time.sleep(0.01 + (trial % 7) * 0.006)  # land the revocation at a different point each time
    with app.app_context():
        shield.revoke_subject("victim")


def _where(kind: str, request: pytest.FixtureRequest, tmp_path: t.Any) -> str:
    if kind == "sqlite":
        return str(tmp_path / "shield.db")
    if kind == "redis":
        return str(request.getfixturevalue("shared_redis").url)
    if kind == "redis-cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return ""


STORES = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


@pytest.mark.parametrize("kind", STORES)
def test_log_out_everywhere_racing_a_refreshing_thread_leaves_no_session(
    kind: str, request: pytest.FixtureRequest, tmp_path: t.Any
) -> None:
    store = _store(kind, _where(kind, request, tmp_path), f"race{uuid.uuid4().hex[:10]}")
    app, shield = _app(store)
    try:
        for trial in range(TRIALS):
            refresh_token = _login(app, shield)
            stop = threading.Event()
            result: list[tuple[str, str] | None] = []
            thief = threading.Thread(target=_collect, args=(result, app, shield, refresh_token, stop))
            thief.start()
            _logout_everywhere(app, shield, trial)
            stop.set()
            thief.join(30)
            assert not thief.is_alive()
            _assert_nothing_survives(app, shield, result[0], trial)
    finally:
        store.close()


def _collect(into: list[tuple[str, str] | None], *args: t.Any) -> None:
    into.append(_refresh_until_refused(*args))


def _thief_process(kind: str, where: str, prefix: str, jobs: t.Any, results: t.Any, stop: t.Any) -> None:
    """A separate server process refreshing the stolen tokens it is handed."""
    app, shield = _app(_store(kind, where, prefix))
    while True:
        refresh_token = jobs.get(timeout=60)
        if refresh_token is None:
            return
        results.put(("started", None))
        results.put(("done", _refresh_until_refused(app, shield, refresh_token, stop)))


@pytest.mark.parametrize(
    "kind",
    ["sqlite", pytest.param("redis", marks=pytest.mark.redis), pytest.param("redis-cluster", marks=pytest.mark.redis)],
)
def test_log_out_everywhere_racing_a_refreshing_process_leaves_no_session(
    kind: str, request: pytest.FixtureRequest, tmp_path: t.Any
) -> None:
    where, prefix = _where(kind, request, tmp_path), f"race{uuid.uuid4().hex[:10]}"
    store = _store(kind, where, prefix)
    app, shield = _app(store)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited locks
    jobs, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    thief = ctx.Process(target=_thief_process, args=(kind, where, prefix, jobs, results, stop))
    thief.start()
    try:
        for trial in range(TRIALS):
            stop.clear()
            jobs.put(_login(app, shield))
            assert results.get(timeout=60)[0] == "started"
            _logout_everywhere(app, shield, trial)
            stop.set()
            tag, last = results.get(timeout=60)
            assert tag == "done"
            _assert_nothing_survives(app, shield, last, trial)
    finally:
        jobs.put(None)
        thief.join(30)
        if thief.is_alive():
            thief.kill()
        store.close()
        try:
            while True:
                results.get_nowait()
        except queue.Empty:
            pass
