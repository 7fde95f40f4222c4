"""The leased rate limit mode on a real ``redis-server``: the overshoot bound across real
processes, the announcement of an exhausted window, leases of a dead process coming back,
spikes counted through the rounds, and Redis down under both fail modes.

Each :class:`TokenRateLimiter` in leased mode has its own process id and threads, so two of
them in one test process are two processes as far as the protocol goes; the bound itself is
checked with separate OS processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import typing as t
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from flask_jwt_shield.errors import ConfigurationError
from flask_jwt_shield.ratelimit import LimiterStorageError
from flask_jwt_shield.ratelimit import SpikeReport
from flask_jwt_shield.ratelimit import TokenRateLimiter
from flask_jwt_shield.ratelimit.leases import CREDIT

from .conftest import AppFactory
from .conftest import bearer
from .redis_util import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent


def leased(url: str, limits: str = "100/minute", **kwargs: t.Any) -> TokenRateLimiter:
    return TokenRateLimiter(limits, storage_uri=url, mode="leased", sync_interval=0.05, **kwargs)


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # bounded: until the condition holds or the deadline passes
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ------------------------------------------------------------------ the bound, N processes

HAMMER = """
import json, sys, time
from flask_jwt_shield.ratelimit import SpikeReport
from flask_jwt_shield.ratelimit import TokenRateLimiter
url, token, start, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
engine = TokenRateLimiter("100/minute", storage_uri=url, mode="leased", sync_interval=0.05)
engine.check("warm-up-" + token)  # threads running, subscribed, as in a serving process
while time.time() < start:
    time.sleep(0.001)
admitted = refused = 0
# until the end, and at least until refused once (a child that started late on a busy machine)
while time.time() < start + seconds or (refused == 0 and time.time() < start + seconds + 30):
    if engine.check(token).allowed:
        admitted += 1
    else:
        refused += 1
print(json.dumps([admitted, refused]))
"""


@pytest.mark.parametrize("run", range(3))
def test_four_processes_hammering_one_token_stay_within_the_bound(redis_url: str, run: int) -> None:
    processes = 4
    start = time.time() + 3.0  # every child has imported and warmed up by then
    children = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, redis_url, f"tok-{run}", repr(start), "1.5"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    admitted = sum(a for a, _ in results)
    assert all(refused > 0 for _, refused in results), results  # each one hammered past the limit
    # L <= admitted <= L + N * CREDIT (docs/ratelimits.rst, "Leased mode")
    assert 100 <= admitted <= 100 + processes * CREDIT, results


def test_one_process_admits_exactly_the_limit(redis_url: str) -> None:
    engine = leased(redis_url, "30/minute")
    allowed = [engine.check("solo").allowed for _ in range(60)]
    assert allowed == [True] * 30 + [False] * 30
    engine.close()


def test_two_windows_are_taken_in_order_and_a_refusal_spends_nothing_after_it(redis_url: str) -> None:
    # As the fixed-window limiter: the shortest window first, stopping at the first refusal,
    # so a request the second window refuses spends nothing of the minute's budget.
    engine = leased(redis_url, "8/minute;5/second")
    first = [engine.check("two-windows") for _ in range(10)]
    assert [d.allowed for d in first] == [True] * 5 + [False] * 5
    assert {d.limit.amount for d in first[5:] if d.limit is not None} == {5}
    time.sleep(1.2)  # the next one-second window; the minute has 3 left
    second = [engine.check("two-windows") for _ in range(10)]
    assert [d.allowed for d in second] == [True] * 3 + [False] * 7
    assert second[3].limit is not None and second[3].limit.amount == 8
    engine.close()


# ------------------------------------------------------------------ announcements


def test_a_window_exhausted_in_one_process_is_refused_in_another(redis_url: str) -> None:
    a, b = leased(redis_url, "20/minute"), leased(redis_url, "20/minute")
    assert b.check("another-token").allowed  # b serves: its threads run, it listens
    b_book = b._leases
    assert b_book is not None
    until(lambda: b_book.listening)
    admitted = 0
    while a.check("hammered").allowed:
        admitted += 1
        assert admitted <= 20 + CREDIT
    assert admitted == 20
    exhausted_at = time.monotonic()
    # The script that exhausted the window announced it (a's refusal came after that).
    client = redis.Redis.from_url(redis_url)
    (key,) = client.keys("*hammered*lease")
    until(lambda: b_book.exhausted(key.decode()), timeout=1.0)
    delay = time.monotonic() - exhausted_at
    assert delay < 1.0  # typically well under a millisecond on loopback
    decision = b.check("hammered")
    assert not decision.allowed  # no credit spent: b knows the window is exhausted
    assert decision.retry_after > 0
    assert int(client.hget(key, "r") or 0) == 20
    a.close()
    b.close()


def test_without_the_announcement_a_process_spends_at_most_its_credit(redis_url: str) -> None:
    a = leased(redis_url, "10/minute")
    while a.check("quiet").allowed:
        pass
    # a process that has not subscribed yet (its first request ever) does not hear it
    late = leased(redis_url, "10/minute")
    allowed = [late.check("quiet").allowed for _ in range(5)]
    assert allowed == [True] * CREDIT + [False] * (5 - CREDIT)
    a.close()
    late.close()


# ------------------------------------------------------------------ leases of a dead process


def test_the_lease_of_a_dead_process_comes_back_after_its_ttl(redis_url: str) -> None:
    dead, alive = leased(redis_url, "40/minute"), leased(redis_url, "40/minute")
    for _ in range(4):
        assert dead.check("shared").allowed
    dead_book = dead._leases
    assert dead_book is not None
    dead_book.round()  # settled: Redis knows what it used and what it holds
    client = redis.Redis.from_url(redis_url)
    (key,) = client.keys("*shared*lease")
    held = int(client.hget(key, f"h:{dead_book.process}") or 0)
    assert held > 0
    used = int(client.hget(key, "r") or 0) - held
    dead.close()  # dies without giving its lease back

    def hammer() -> int:
        count = 0
        while alive.check("shared").allowed:
            count += 1
        return count

    first = hammer()
    assert used + held + first == 40  # the dead lease is still reserved
    time.sleep(dead_book.lease_ttl + 0.2)
    # a process that knows the window exhausted refuses locally; its next round, asking
    # for the refused demand, finds the dead lease taken back and gets it
    second = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        second += hammer()
        time.sleep(0.01)
    assert second == held  # taken back after the TTL, and given out again
    assert used + first + second == 40
    alive.close()


HOLDER = """
import sys, time
from flask_jwt_shield.ratelimit import TokenRateLimiter
engine = TokenRateLimiter("40/minute", storage_uri=sys.argv[1], mode="leased", sync_interval=0.05)
for _ in range(4):
    assert engine.check("killed").allowed
engine._leases.round()
print(engine._leases.process, flush=True)
time.sleep(60)
"""


def test_the_lease_of_a_killed_process_comes_back(redis_url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        process = child.stdout.readline().strip()
        client = redis.Redis.from_url(redis_url)
        (key,) = client.keys("*killed*lease")
        held = int(client.hget(key, f"h:{process}") or 0)
        used = int(client.hget(key, "r") or 0) - held
        assert held > 0 and used == 4
    finally:
        child.send_signal(signal.SIGKILL)  # no chance to give anything back
        child.wait(timeout=10)
    alive = leased(redis_url, "40/minute")
    admitted = 0
    deadline = time.monotonic() + (alive._leases.lease_ttl if alive._leases else 1.0) + 1.5
    while time.monotonic() < deadline:
        admitted += alive.check("killed").allowed
        time.sleep(0.002)
    assert used + admitted == 40  # every unit the dead process held came back, none twice
    alive.close()


# ------------------------------------------------------------------ spikes and sustain


def test_a_spike_is_reported_once_across_processes(redis_url: str) -> None:
    reported = 0.0
    a = leased(redis_url, "5/minute", spike_threshold="30/minute")
    b = leased(redis_url, "5/minute", spike_threshold="30/minute")
    reports: list[SpikeReport] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not reports or time.monotonic() < reported + 0.5):
        for engine in (a, b):
            spike = engine.check("spiky").spike
            if spike is not None:
                reports.append(spike)
                reported = time.monotonic()
        time.sleep(0.002)
    assert len(reports) == 1, reports
    assert reports[0].count > 30 and reports[0].threshold.amount == 30
    a.close()
    b.close()


def test_refused_minutes_reach_the_sustain_counters(redis_url: str) -> None:
    a = leased(redis_url, "2/minute", spike_sustain="1/10 minutes")
    b = leased(redis_url, "2/minute", spike_sustain="1/10 minutes")
    assert [a.check("pressing").allowed for _ in range(3)] == [True, True, False]
    reports: list[SpikeReport] = []
    allowed = 0
    deadline = time.monotonic() + 3
    while not reports and time.monotonic() < deadline:
        for engine in (a, b):
            decision = engine.check("pressing")
            allowed += decision.allowed  # b was not listening when a exhausted the window: its credit
            if decision.spike is not None:
                reports.append(decision.spike)
        time.sleep(0.01)
    assert allowed <= CREDIT
    (report,) = reports
    assert report.sustained and report.count == 1
    # the same counters as the exact mode: a process in that mode sees the minute counted
    client = redis.Redis.from_url(redis_url)
    assert [int(client.get(k) or 0) for k in client.keys("*sustain*refused*")] == [1]
    a.close()
    b.close()


def test_the_bound_holds_on_a_cluster() -> None:
    from .redis_util import running_cluster

    with running_cluster() as cluster:
        engines = [leased(cluster.url) for _ in range(4)]
        for engine in engines:
            assert engine.check("warm-up").allowed
        time.sleep(0.3)
        admitted = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for engine in engines:
                admitted += engine.check("on-a-cluster").allowed
        assert 100 <= admitted <= 100 + len(engines) * CREDIT
        for engine in engines:
            engine.close()


def _data_calls(ports: list[int]) -> dict[str, int]:
    """Commands each master ran since its stats were reset, by name, summed over the masters
    (the cluster's own and the stats' commands left out)."""
    calls: dict[str, int] = {}
    for port in ports:
        node = redis.Redis(port=port, decode_responses=True)
        try:
            for name, stats in node.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                if command.split("|")[0] not in ("cluster", "info", "config", "ping", "command", "hello", "client"):
                    calls[command] = calls.get(command, 0) + int(stats["calls"])
        finally:
            node.close()
    return calls


def _reset_stats(ports: list[int]) -> None:
    for port in ports:
        node = redis.Redis(port=port)
        try:
            node.config_resetstat()
        finally:
            node.close()


def test_a_tokens_counters_share_one_slot_so_a_round_is_one_call_to_one_master() -> None:
    """Every key of a token -- its window, its spike counter, its refused minutes -- carries
    the token's hash tag. On a cluster they live on one master, and a settlement round of
    that token is one pipelined call to that master alone."""
    from .redis_util import running_cluster

    with running_cluster() as cluster:
        ports = [node.port for node in cluster.nodes]
        engine = leased(cluster.url, "20/minute", spike_threshold="30/minute", spike_sustain="1/10 minutes")
        book = engine._leases
        assert book is not None
        results = [engine.check("one-token").allowed for _ in range(40)]
        assert 20 <= sum(results) <= 20 + CREDIT and not results[-1]
        book.round()
        _reset_stats(ports)
        results = [engine.check("one-token").allowed for _ in range(10)]  # spikes and refusals
        assert not any(results)
        book.round()  # or the background thread's round, whichever runs first
        until(lambda: _data_calls(ports).get("evalsha", 0) >= 2)
        calls = _data_calls(ports)
        slots = set()
        for port in ports:
            node = redis.Redis(port=port, decode_responses=True)
            try:
                keys = [key for key in node.keys("*one-token*")]
                slots |= {node.cluster("KEYSLOT", key) for key in keys}
            finally:
                node.close()
        assert len(slots) == 1, slots  # window, spike, sustain: one slot
        assert len(book._connections._wires) == 1  # the rounds spoke to one master
        assert calls.get("evalsha", 0) >= 2, calls  # the spike counter and the refused minute, sent
        engine.close()


def test_the_exact_mode_on_a_cluster_is_one_script_call_per_check() -> None:
    """The exact mode hits a token's spike counter and its windows in one script on a
    cluster too (their keys share the token's slot): one command per check, and the budget
    exact."""
    from .redis_util import running_cluster

    with running_cluster() as cluster:
        ports = [node.port for node in cluster.nodes]
        engine = TokenRateLimiter("5/minute;50/hour", storage_uri=cluster.url, spike_threshold="6/minute")
        assert engine.check("warm-up").allowed  # the slot map read, the script loaded
        _reset_stats(ports)
        decisions = [engine.check("exact") for _ in range(8)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
        spikes = [n for n, d in enumerate(decisions) if d.spike is not None and not d.spike.sustained]
        assert spikes == [6]  # the seventh attempt crossed 6/minute, reported once
        calls = _data_calls(ports)  # a script's own commands count too, under their names
        assert calls.get("evalsha", 0) + calls.get("eval", 0) == 8, calls  # not one per key
        engine.close()


def _move_slot(ports: list[int], key: str) -> tuple[int, int]:
    """Migrate ``key``'s slot, keys and all, to another master; (from port, to port)."""
    nodes = {port: redis.Redis(port=port, decode_responses=True) for port in ports}
    try:
        slot = next(iter(nodes.values())).cluster("KEYSLOT", key)
        owner = next(p for p, n in nodes.items() if n.cluster("COUNTKEYSINSLOT", slot) and n.exists(key))
        target = next(p for p in ports if p != owner)
        ids = {p: n.cluster("MYID") for p, n in nodes.items()}
        nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
        nodes[owner].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        keys = nodes[owner].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        nodes[owner].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for node in nodes.values():
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        return owner, target
    finally:
        for node in nodes.values():
            node.close()


def test_a_window_whose_slot_moves_keeps_its_count_on_the_new_master() -> None:
    """The rounds run on connections of their own, one per master. When a window's slot
    moves, the old master answers MOVED (the script did not run there); the round sends it
    again through the cluster client, which follows it, and nothing is lost or counted
    twice: the window still admits the limit and at most the credit more."""
    from .redis_util import running_cluster

    with running_cluster() as cluster:
        engine = leased(cluster.url)
        book = engine._leases
        assert book is not None
        admitted = sum(engine.check("moving").allowed for _ in range(30))
        book.round()
        (key,) = [k for k in book._windows if "moving" in k]
        moved_from, moved_to = _move_slot([node.port for node in cluster.nodes], key)
        admitted += sum(engine.check("moving").allowed for _ in range(20))
        # This round or the background thread's, whichever runs first, meets MOVED on the
        # old master and sends the settlement again through the cluster client.
        book.round()
        on_new = redis.Redis(port=moved_to, decode_responses=True)
        try:
            until(lambda: int(on_new.hget(key, "r") or 0) >= admitted)
            assert not book._down
            assert int(on_new.hget(key, "r") or 0) >= admitted == 50
        finally:
            on_new.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and engine.check("moving").allowed:
            admitted += 1
        assert 100 <= admitted <= 100 + CREDIT, (admitted, moved_from, moved_to)
        engine.close()


# ------------------------------------------------------------------ Redis down


def test_stop_does_not_wait_for_a_round_stuck_on_a_frozen_redis(redis_server: RedisServer) -> None:
    """An app shutting down must not hang on a Redis that stopped answering: ``close()``
    shuts the rounds' connections without waiting for the round in progress, which then
    fails at once instead of after its five-second socket timeout."""
    import threading

    engine = TokenRateLimiter(
        "100/minute",
        storage_uri=redis_server.url,
        mode="leased",
        sync_interval=5,
        storage_options={"socket_timeout": 5},
    )
    book = engine._leases
    assert book is not None
    assert engine.check("stuck").allowed  # on credit: settled by a round, which connects
    until(lambda: not book._windows["LIMITS:jwt_shield/rate/{stuck}/100/1/minute/lease"].credit_spent)
    assert engine.check("stuck").allowed  # something to settle again
    outcome: list[BaseException | bool] = []

    def settle() -> None:
        try:
            outcome.append(book.round())
        except BaseException as exc:  # the test looks at what ended the round
            outcome.append(exc)

    redis_server.pause()
    try:
        stuck = threading.Thread(target=settle)
        stuck.start()
        time.sleep(0.3)  # the round has sent and waits for its reply
        assert stuck.is_alive()
        started = time.monotonic()
        engine.close()
        assert time.monotonic() - started < 1.0
        stuck.join(timeout=2.0)
        assert not stuck.is_alive() and isinstance(outcome[0], Exception)  # failed, not timed out
    finally:
        redis_server.resume()


def test_redis_down_raises_once_the_lease_is_void(redis_server: RedisServer) -> None:
    engine = leased(redis_server.url, "1000/minute")
    for _ in range(5):
        assert engine.check("down").allowed
    book = engine._leases
    assert book is not None
    book.round()
    redis_server.stop()
    # the lease still holds: the process decides alone
    assert engine.check("down").allowed
    time.sleep(book.lease_ttl + 0.3)
    with pytest.raises(LimiterStorageError):
        engine.check("down")
    with pytest.raises(LimiterStorageError):
        engine.check("never-seen")
    engine.close()


@pytest.mark.parametrize(("mode", "status"), [("closed", 503), ("open", 200)])
def test_redis_down_follows_the_fail_mode_in_leased_mode(
    make_app: AppFactory, redis_server: RedisServer, mode: str, status: int
) -> None:
    from .test_ratelimit import tokens

    app, shield = make_app(
        {
            "JWT_SHIELD_RATE_LIMIT": "100/hour",
            "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": redis_server.url,
            "JWT_SHIELD_RATE_LIMIT_MODE": "leased",
            "JWT_SHIELD_RATE_LIMIT_SYNC_INTERVAL": 0.05,
            "JWT_SHIELD_FAIL_MODE": mode,
        }
    )
    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    assert client.get("/api/me", headers=bearer(a)).status_code == 200
    redis_server.stop()
    time.sleep(1.5)  # past the lease TTL (1 s at this interval): nothing local decides any more
    r = client.get("/api/me", headers=bearer(a))
    assert r.status_code == status
    if status == 503:
        assert r.headers["Retry-After"]
    with app.app_context():
        assert shield.events(kind="store-unavailable")


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"JWT_SHIELD_RATE_LIMIT_MODE": "lazy"}, "JWT_SHIELD_RATE_LIMIT_MODE"),
        ({"JWT_SHIELD_RATE_LIMIT_SYNC_INTERVAL": 0}, "JWT_SHIELD_RATE_LIMIT_SYNC_INTERVAL"),
        ({"JWT_SHIELD_RATE_LIMIT_SYNC_INTERVAL": 60}, "JWT_SHIELD_RATE_LIMIT_SYNC_INTERVAL"),
        (
            {"JWT_SHIELD_RATE_LIMIT_MODE": "leased", "JWT_SHIELD_RATE_LIMIT_STRATEGY": "moving-window"},
            "fixed-window",
        ),
    ],
)
def test_leased_mode_settings_are_checked_at_init(
    make_app: AppFactory, redis_url: str, config: dict[str, t.Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_app({"JWT_SHIELD_RATE_LIMIT_STORAGE_URI": redis_url, **config})


def test_leased_mode_on_memory_storage_changes_nothing() -> None:
    engine = TokenRateLimiter("3/minute", mode="leased")
    assert [engine.check("m").allowed for _ in range(4)] == [True, True, True, False]


def test_an_app_in_leased_mode_answers_429_with_its_headers(make_app: AppFactory, redis_url: str) -> None:
    from .test_ratelimit import tokens

    app, shield = make_app(
        {
            "JWT_SHIELD_RATE_LIMIT": "3/minute",
            "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": redis_url,
            "JWT_SHIELD_RATE_LIMIT_MODE": "leased",
            "JWT_SHIELD_RATE_LIMIT_HEADERS": True,
        }
    )
    (a,) = tokens(app, shield, "alice")
    client = app.test_client()
    responses = [client.get("/api/me", headers=bearer(a)) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].headers["RateLimit-Limit"] == "3"
    assert 0 <= int(responses[0].headers["RateLimit-Remaining"]) <= 3  # this process's view
    refused = responses[3]
    assert refused.headers["RateLimit-Limit"] == "3" and refused.headers["RateLimit-Remaining"] == "0"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    with app.app_context():
        assert shield.events(kind="rate-limited")
