"""The Redis store beyond the shared contract: URIs, bounds and TTLs, atomic rotation across
processes, AOF restarts, faults (down, hung, back), and the local view of revocations with
its cross-process propagation delay -- all against real redis-server processes and a real
three-master Redis Cluster started by the tests."""

from __future__ import annotations

import json
import logging
import multiprocessing
import statistics
import threading
import time
import typing as t
import uuid
from pathlib import Path

import pytest
import redis

from flask_jwt_shield.errors import ConfigurationError
from flask_jwt_shield.errors import StoreError
from flask_jwt_shield.stores import Family
from flask_jwt_shield.stores import RedisStore
from flask_jwt_shield.stores import store_from_uri

from .conftest import AppFactory
from .conftest import bearer
from .redis_util import RedisCluster
from .redis_util import RedisServer
from .redis_util import start_cluster
from .redis_util import start_redis

pytestmark = pytest.mark.redis

NOW = time.time()
FAR = NOW + 10_000


def family(sid: str = "s1", sub: str = "alice", jti: str = "r1", created: float = NOW) -> Family:
    return Family(
        sid=sid,
        sub=sub,
        created_at=created,
        expires_at=created + 1000,
        last_used_at=created,
        current_jti=jti,
        current_iat=created,
    )


def raw(url: str) -> t.Any:
    if url.startswith("redis+cluster://"):
        host, _, port = url[len("redis+cluster://") :].partition(":")
        return redis.RedisCluster(host=host, port=int(port), decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


def unique() -> str:
    return "t" + uuid.uuid4().hex[:12]


def wait_until(condition: t.Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds pass (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


@pytest.fixture(params=["redis", "redis-cluster"])
def server_url(request: pytest.FixtureRequest) -> str:
    server: RedisServer | RedisCluster = request.getfixturevalue(
        "shared_redis" if request.param == "redis" else "redis_cluster"
    )
    return server.url


# -- URIs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://h:6380/1",
        "unix:///run/redis.sock?db=2",
        "redis+cluster://127.0.0.1:7000",
        "redis+cluster://a:7000,b:7001",
    ],
)
def test_store_from_uri_builds_a_redis_store_without_connecting(uri: str) -> None:
    store = store_from_uri(uri)
    assert isinstance(store, RedisStore)
    assert store.cluster == uri.startswith("redis+cluster")
    store.close()


def test_cluster_uri_needs_a_node() -> None:
    with pytest.raises(ConfigurationError, match="redis\\+cluster://host"):
        store_from_uri("redis+cluster://")


def test_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = start_redis(tmp_path / "unix", extra=["--unixsocket", str(sock), "--unixsocketperm", "700"])
    try:
        store = RedisStore(f"unix://{sock}?db=0")
        store.revoke("jti", "stolen", until=FAR)
        assert store.check(jti="stolen", sid=None, sub="a", kid="k", iat=NOW, now=NOW) == "token"
        assert store.rate_limit_storage_uri == f"redis+unix://{sock}?db=0"
        store.close()
    finally:
        server.stop()


def test_cluster_keys_of_one_subjects_operation_share_a_slot(redis_cluster: RedisCluster) -> None:
    """Everything one subject's operations touch (families, index, spent list, not-before,
    the revocations its checks read) lives in its stripe's slot; the subjects spread over
    every master (scale-out issue, item 1)."""
    store = RedisStore(redis_cluster.url, prefix=unique())
    store.create_family(family(), max_sessions=5, idle_ttl=500, until=FAR)
    store.rotate(
        "s1", "r1", new_jti="r2", new_iat=NOW, now=NOW, idle_ttl=500, grace=0, ip=None, country=None, until=FAR
    )
    store.revoke("jti", "x", until=FAR)
    client = raw(redis_cluster.url)
    tag = store.tag_of("alice")
    keys = list(client.scan_iter(match=tag + ":*"))
    store.revoke_subject("alice", at=NOW, until=FAR)  # ends the family: the index empties
    keys += list(client.scan_iter(match=tag + ":*"))
    assert {k[len(tag) + 1 :].split(":")[0] for k in keys} >= {"f", "fs", "sp", "nb", "r"}
    assert len({client.keyslot(k) for k in keys}) == 1
    for i in range(60):
        store.create_family(family(f"u{i}", sub=f"user{i}"), max_sessions=5, idle_ttl=500, until=FAR)
    spread = store.keys_per_node()
    assert len(spread) == 3 and min(spread.values()) > 0, spread
    store.close()


# -- bounds and expiry -------------------------------------------------------------------


def test_revocation_entries_carry_a_ttl(server_url: str) -> None:
    store = RedisStore(server_url, prefix=unique())
    until = time.time() + 100
    store.revoke("jti", "a", until=until)
    store.revoke_subject("alice", at=NOW, until=until)
    store.revoke_family("s9", until=until)
    client = raw(server_url)
    tag = store.tag_of("alice")
    for key in (f"{tag}:r:j:a", f"{tag}:nb:alice", f"{tag}:r:s:s9"):
        ttl = client.pttl(key) / 1000
        assert 100 < ttl <= 100 + 60 + 1, key  # gone a minute after the last token it covers
    store.close()


def test_event_log_is_capped_at_retention(server_url: str) -> None:
    store = RedisStore(server_url, prefix=unique())
    for i in range(40):
        store.add_event({"id": str(i), "kind": "token-rejected", "at": NOW + i}, retention=25)
    assert raw(server_url).xlen(store.prefix + ":events") == 25
    assert [e["id"] for e in store.events(limit=3)] == ["39", "38", "37"]
    store.close()


def test_subject_index_and_spent_list_stay_bounded(server_url: str) -> None:
    store = RedisStore(server_url, prefix=unique())
    for i in range(30):
        store.create_family(family(f"s{i}", jti=f"r{i}", created=NOW + i), max_sessions=3, idle_ttl=500, until=FAR)
    client = raw(server_url)
    tag = store.tag_of("alice")
    assert client.zcard(f"{tag}:fs:alice") == 3
    jti = "r29"
    for i in range(100):
        r = store.rotate(
            "s29",
            jti,
            new_jti=f"n{i}",
            new_iat=NOW,
            now=NOW + 30 + i,
            idle_ttl=500,
            grace=0,
            ip=None,
            country=None,
            until=FAR,
        )
        assert r.outcome == "rotated"
        jti = f"n{i}"
    assert client.llen(f"{tag}:sp:s29") == 64
    reuse = store.rotate(
        "s29",
        "n90",
        new_jti="x",
        new_iat=NOW,
        now=NOW + 200,
        idle_ttl=500,
        grace=0,
        ip="198.51.100.7",
        country=None,
        until=FAR,
    )
    assert reuse.outcome == "reused" and reuse.first_use is not None and reuse.first_use.at == NOW + 30 + 91
    store.close()


def test_profiles_expire(server_url: str) -> None:
    store = RedisStore(server_url, prefix=unique(), profile_ttl=3600)
    store.put_profile("alice", {"countries": ["DE"]})
    assert 3590 < raw(server_url).ttl(f"{store.prefix}:p:alice") <= 3600
    store.close()


# -- atomic rotation across processes -------------------------------------------------------


def _rotate_in_child(url: str, prefix: str, barrier: t.Any, results: t.Any, n: int) -> None:
    store = RedisStore(url, prefix=prefix)
    barrier.wait()
    r = store.rotate(
        "s1",
        "r1",
        new_jti=f"new-{n}",
        new_iat=NOW,
        now=NOW + 1,
        idle_ttl=500,
        grace=0,
        ip=None,
        country=None,
        until=FAR,
    )
    results.put(r.outcome)
    store.close()


def test_sixteen_processes_race_one_refresh_token(server_url: str) -> None:
    prefix = unique()
    parent = RedisStore(server_url, prefix=prefix)
    parent.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited locks
    n = 16
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_rotate_in_child, args=(server_url, prefix, barrier, results, i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    outcomes = sorted(results.get(timeout=5) for _ in range(n))
    assert outcomes.count("rotated") == 1
    assert set(outcomes) - {"rotated"} <= {"reused", "revoked"} and "reused" in outcomes
    assert parent.check(jti="x", sid="s1", sub="alice", kid="k", iat=NOW, now=NOW + 2) == "family"
    parent.close()


# -- persistence -----------------------------------------------------------------------


def test_aof_restart_keeps_revocations_and_families(tmp_path: Path, make_app: AppFactory) -> None:
    server = start_redis(tmp_path / "aof", appendonly=True)
    try:
        app, shield = make_app({"JWT_SHIELD_STORE_URI": server.url, "JWT_SHIELD_RATE_LIMIT": None})
        client = app.test_client()
        revoked = client.post("/login?sub=alice").get_json()
        kept = client.post("/login?sub=bob").get_json()
        assert client.get("/api/me", headers=bearer(revoked["access_token"])).status_code == 200
        with app.app_context():
            shield.revoke_family(shield.sessions("alice")[0].sid)
        server.restart()  # SHUTDOWN, then a new redis-server process on the same files
        # the same app, not restarted: it reconnects, and nothing was forgotten
        assert client.get("/api/me", headers=bearer(revoked["access_token"])).status_code == 401
        assert client.post("/refresh", json={"refresh_token": revoked["refresh_token"]}).status_code == 400
        assert client.get("/api/me", headers=bearer(kept["access_token"])).status_code == 200
        assert client.post("/refresh", json={"refresh_token": kept["refresh_token"]}).status_code == 200
    finally:
        server.stop()


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["down", "hung"])
def test_fail_closed_answers_503_then_recovers(make_app: AppFactory, redis_server: RedisServer, fault: str) -> None:
    app, shield = make_app(
        {
            "JWT_SHIELD_STORE_URI": redis_server.url,
            "JWT_SHIELD_RATE_LIMIT": "1000/minute",
            "JWT_SHIELD_REDIS_TIMEOUT": 0.2,
            "JWT_SHIELD_REDIS_CONNECT_TIMEOUT": 0.2,
        }
    )
    client = app.test_client()
    with app.app_context():
        before, during = shield.create_access_token("alice"), shield.create_access_token("bob")
    assert client.get("/api/me", headers=bearer(before)).status_code == 200
    if fault == "down":
        redis_server.stop()
    else:
        redis_server.pause()
    try:
        started = time.monotonic()
        r = client.get("/api/me", headers=bearer(during))
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert r.get_json()["error"]
        assert time.monotonic() - started < 3  # a bounded wait, never a hang
    finally:
        if fault == "hung":
            redis_server.resume()
    if fault == "down":
        redis_server.restart()
    # Redis is back: normal service, without restarting the app (bounded retry loop)
    assert wait_until(lambda: client.get("/api/me", headers=bearer(during)).status_code == 200, 5)


def test_fail_open_allows_and_records_while_down(
    make_app: AppFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    app, shield = make_app(
        {"JWT_SHIELD_STORE_URI": redis_server.url, "JWT_SHIELD_FAIL_MODE": "open", "JWT_SHIELD_REDIS_TIMEOUT": 0.2}
    )
    with app.app_context():
        token = shield.create_access_token("alice")
    redis_server.stop()
    caplog.set_level(logging.INFO)
    r = app.test_client().get("/api/me", headers=bearer(token))
    assert r.status_code == 200
    audit = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "flask_jwt_shield.audit"]
    assert "store-unavailable" in [a["kind"] for a in audit]
    assert token not in caplog.text


def test_store_errors_are_store_errors(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, timeout=0.2, connect_timeout=0.2)
    redis_server.stop()
    for call in (
        lambda: store.check(jti="j", sid=None, sub="a", kid="k", iat=NOW, now=NOW),
        lambda: store.revoke("jti", "j", FAR),
        lambda: store.create_family(family(), max_sessions=1, idle_ttl=5, until=FAR),
        lambda: store.events(),
        lambda: store.purge(NOW),
    ):
        with pytest.raises(StoreError):
            call()
    store.close()


# -- the local view --------------------------------------------------------------------


def commands_processed(client: t.Any) -> int:
    info = client.info("stats")
    if isinstance(next(iter(info.values())), dict):  # a cluster answers per node
        return sum(int(node["total_commands_processed"]) for node in info.values())
    return int(info["total_commands_processed"])


def test_a_warm_check_waits_on_no_redis_round_trip(server_url: str) -> None:
    store = RedisStore(server_url, prefix=unique(), max_delay=5.0)
    assert store.check(jti="j", sid="s", sub="a", kid="k", iat=NOW, now=NOW) is None
    assert wait_until(store.watching, 5)
    assert store.check(jti="j", sid="s", sub="a", kid="k", iat=NOW, now=NOW) is None  # remembered now
    client = raw(server_url)
    before = commands_processed(client)
    for _ in range(2000):
        assert store.check(jti="j", sid="s", sub="a", kid="k", iat=NOW, now=NOW) is None
    # 2000 checks, and Redis saw only our INFO calls and a few pings of the subscriber
    assert commands_processed(client) - before < 50
    store.close()


def test_revocation_in_this_process_applies_at_once(server_url: str) -> None:
    store = RedisStore(server_url, prefix=unique(), max_delay=5.0)
    for kind, reason in (("jti", "token"), ("sid", "family"), ("kid", "key")):
        token: dict[str, t.Any] = {
            "jti": f"j-{kind}",
            "sid": f"s-{kind}",
            "sub": "a",
            "kid": f"k-{kind}",
            "iat": NOW,
            "now": NOW,
        }
        assert store.check(**token) is None
        assert wait_until(store.watching, 5)
        assert store.check(**token) is None and store.view_of("a").fresh(f"j-{kind}")
        store.revoke(kind, token[kind], until=FAR)  # type: ignore[arg-type]
        assert store.check(**token) == reason
    token = {"jti": "j-sub", "sid": None, "sub": "bob", "kid": "k", "iat": NOW, "now": NOW}
    assert store.check(**token) is None and store.check(**token) is None
    store.revoke_subject("bob", at=NOW, until=FAR)
    assert store.check(**token) == "subject"
    store.close()


def test_lost_invalidation_connection_distrusts_the_view(server_url: str) -> None:
    store = RedisStore(server_url, prefix=unique(), max_delay=0.5)
    assert store.check(jti="j", sid=None, sub="a", kid="k", iat=NOW, now=NOW) is None
    assert wait_until(store.watching, 5)
    client = raw(server_url)
    client.client_kill_filter(_type="pubsub")  # cut the subscription
    # A revocation whose message can no longer arrive (written straight into Redis)
    client.set(store.tag_of("a") + ":r:j:j", repr(FAR))
    started = time.monotonic()
    assert wait_until(lambda: store.check(jti="j", sid=None, sub="a", kid="k", iat=NOW, now=NOW) == "token", 5)
    assert time.monotonic() - started <= 0.5 + 0.1  # never stale beyond max_delay
    # the subscriber comes back by itself and the view is trusted again
    assert wait_until(store.watching, 5)
    store.close()


def test_hung_redis_never_leaves_a_stale_answer(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, max_delay=0.3, timeout=0.2)
    assert store.check(jti="j", sid=None, sub="a", kid="k", iat=NOW, now=NOW) is None
    assert wait_until(store.watching, 5)
    redis_server.pause()
    try:
        # trust lapses within max_delay; from then on the check asks Redis, which fails
        assert wait_until(lambda: not store.watching(), 0.3 + 0.1)
        with pytest.raises(StoreError):
            store.check(jti="j", sid=None, sub="a", kid="k", iat=NOW, now=NOW)
    finally:
        redis_server.resume()
    assert wait_until(store.watching, 5)
    store.close()


def _observe_revocations(url: str, prefix: str, n: int, conn: t.Any) -> None:
    store = RedisStore(url, prefix=prefix, max_delay=1.0)
    delays_seen: list[float] = []
    for i in range(n):
        jti = f"p{i}"
        store.check(jti=jti, sid=None, sub="a", kid="k", iat=NOW, now=NOW)
        wait_until(store.watching, 5)
        store.check(jti=jti, sid=None, sub="a", kid="k", iat=NOW, now=NOW)
        conn.send(("ready", store.view_of("a").fresh(jti)))
        deadline = time.monotonic() + 5
        while store.check(jti=jti, sid=None, sub="a", kid="k", iat=NOW, now=NOW) is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.0001)  # a busy process serves other requests between checks
        seen = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of this host
        delays_seen.append(seen)
        conn.send(("seen", seen))
    store.close()
    conn.close()


def measure_propagation(url: str, n: int) -> list[float]:
    """Revoke ``n`` tokens here and time when another process stops accepting each one."""
    prefix = unique()
    revoker = RedisStore(url, prefix=prefix)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited locks
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_observe_revocations, args=(url, prefix, n, theirs))
    child.start()
    delays = []
    try:
        for i in range(n):
            kind, fresh = ours.recv()
            assert kind == "ready" and fresh, "the observer must be answering from its local view"
            started = time.monotonic()
            revoker.revoke("jti", f"p{i}", until=FAR)
            kind, seen = ours.recv()
            delays.append(seen - started)
    finally:
        child.join(30)
        revoker.close()
    assert child.exitcode == 0
    return delays


def test_cross_process_propagation_delay(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    delays = measure_propagation(server_url, 200)
    p50 = statistics.median(delays)
    p99 = sorted(delays)[int(len(delays) * 0.99) - 1]
    with capsys.disabled():
        print(
            f"\npropagation {server_url.split(':')[0]}: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms,"
            f" max {max(delays) * 1000:.2f} ms over {len(delays)} revocations"
        )
    assert max(delays) < 1.0  # the documented bound (JWT_SHIELD_REVOCATION_MAX_DELAY)


# -- Redis Cluster resharding ------------------------------------------------------------


def test_resharding_the_state_slot_costs_no_answer(redis_cluster: RedisCluster) -> None:
    """Move the slot holding the shield's state to another master while a store uses it:
    the client's slot map is stale, Redis answers MOVED (ASK while the slot migrates), and
    every call still gets its right answer."""
    store = RedisStore(redis_cluster.url, prefix=unique(), max_delay=0)  # every check reads Redis
    store.create_family(family(), max_sessions=5, idle_ttl=500, until=FAR)
    store.revoke("jti", "stolen", until=FAR)
    assert store.check(jti="stolen", sid="s1", sub="alice", kid="k", iat=NOW, now=NOW) == "token"
    slot = raw(redis_cluster.url).keyslot(store.tag_of("alice"))  # alice's stripe
    nodes = {n.port: redis.Redis(port=n.port, decode_responses=True) for n in redis_cluster.nodes}
    ids = {port: c.execute_command("CLUSTER", "MYID") for port, c in nodes.items()}
    (owner,) = [port for port, c in nodes.items() if int(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) > 0]
    target = next(port for port in nodes if port != owner)
    src, dst = nodes[owner], nodes[target]
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    # migrating: the keys have moved, the slot is not yet handed over (ASK redirections)
    assert store.get_family("s1") is not None
    for c in nodes.values():
        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    # handed over: the store's slot map still names the old owner (MOVED)
    assert store.check(jti="stolen", sid="s1", sub="alice", kid="k", iat=NOW, now=NOW) == "token"
    assert store.check(jti="fine", sid="s1", sub="alice", kid="k", iat=NOW, now=NOW) is None
    r = store.rotate(
        "s1", "r1", new_jti="r2", new_iat=NOW, now=NOW + 1, idle_ttl=500, grace=0, ip=None, country=None, until=FAR
    )
    assert r.outcome == "rotated"
    store.revoke_family("s1", until=FAR)
    assert store.check(jti="fine", sid="s1", sub="alice", kid="k", iat=NOW, now=NOW) == "family"
    assert int(dst.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) > 0
    store.close()


# -- rate limits on the store's Redis ----------------------------------------------------------


def test_rate_limits_use_the_stores_redis_by_default(make_app: AppFactory, server_url: str) -> None:
    """JWT_SHIELD_RATE_LIMIT_STORAGE_URI unset: two apps (as two hosts) on one Redis store
    share one per-token budget, on one server and on a cluster alike."""
    config = {"JWT_SHIELD_STORE_URI": server_url, "JWT_SHIELD_RATE_LIMIT": "3/hour"}
    first, shield = make_app(config)
    second, _ = make_app(config)
    assert first.extensions["jwt_shield"].limiter.storage.__class__.__name__ in {"RedisStorage", "RedisClusterStorage"}
    with first.app_context():
        token = shield.create_access_token("alice")
    clients = [first.test_client(), second.test_client()]
    statuses = [clients[i % 2].get("/api/me", headers=bearer(token)).status_code for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_adaptive_counters_on_the_cluster(redis_cluster: RedisCluster, make_app: AppFactory) -> None:
    app, shield = make_app(
        {"JWT_SHIELD_STORE_URI": redis_cluster.url, "JWT_SHIELD_ADAPTIVE": True, "JWT_SHIELD_RATE_LIMIT": None}
    )
    with app.app_context():
        token = shield.create_access_token("alice")
    client = app.test_client()
    assert all(client.get("/api/me", headers=bearer(token)).status_code == 200 for _ in range(5))


def test_explicit_rate_limit_storage_wins(make_app: AppFactory, redis_url: str) -> None:
    app, _ = make_app({"JWT_SHIELD_STORE_URI": redis_url, "JWT_SHIELD_RATE_LIMIT_STORAGE_URI": "memory://"})
    assert "Memory" in app.extensions["jwt_shield"].limiter.storage.__class__.__name__


def test_cluster_failover_costs_no_answer(tmp_path: Path) -> None:
    """A replica takes over the master holding the shield's state (CLUSTER FAILOVER) while
    a store keeps working: no call fails, nothing is lost."""
    cluster = start_cluster(tmp_path / "cluster", replicas=1)
    try:
        store = RedisStore(cluster.url, prefix=unique(), max_delay=0)
        store.revoke("jti", "stolen", until=FAR)
        store.create_family(family(), max_sessions=5, idle_ttl=500, until=FAR)
        slot = raw(cluster.url).keyslot(store.tag_of("alice"))
        clients = {n.port: redis.Redis(port=n.port, decode_responses=True) for n in cluster.nodes}
        ids = {c.execute_command("CLUSTER", "MYID"): port for port, c in clients.items()}
        owner_port = raw(cluster.url).nodes_manager.get_node_from_slot(slot).port
        owner_client = clients[owner_port]

        def replica_in_sync() -> bool:
            role = owner_client.execute_command("ROLE")
            return role[0] == "master" and any(str(r[2]) == str(role[1]) for r in role[2])

        assert wait_until(replica_in_sync, 20), "the master's replica never caught up"
        lines = owner_client.execute_command("CLUSTER", "NODES").splitlines()
        owner_id = next(
            line.split()[0]
            for line in lines
            if "master" in line.split()[2]
            and any(
                (lambda lo, _, hi: int(lo) <= slot <= int(hi or lo))(*part.partition("-"))
                for part in line.split()[8:]
                if not part.startswith("[")
            )
        )
        replica_id = next(line.split()[0] for line in lines if line.split()[3] == owner_id)
        replica = clients[ids[replica_id]]
        errors: list[BaseException] = []
        answers: list[str | None] = []
        stop = threading.Event()

        def keep_asking() -> None:
            n = 0
            while not stop.is_set():  # bounded by the failover below
                n += 1
                try:
                    answers.append(store.check(jti="stolen", sid="s1", sub="alice", kid="k", iat=NOW, now=NOW))
                    store.revoke("jti", f"more-{n}", until=FAR)
                except StoreError as exc:
                    errors.append(exc)

        worker = threading.Thread(target=keep_asking)
        worker.start()
        try:
            replica.execute_command("CLUSTER", "FAILOVER")
            assert wait_until(lambda: replica.execute_command("ROLE")[0] == "master", 20)
            time.sleep(0.5)  # let the worker run against the new topology for a moment
        finally:
            stop.set()
            worker.join(30)
        assert errors == [] and answers and set(answers) == {"token"}
        assert store.get_family("s1") is not None
        r = store.rotate(
            "s1", "r1", new_jti="r2", new_iat=NOW, now=NOW + 1, idle_ttl=500, grace=0, ip=None, country=None, until=FAR
        )
        assert r.outcome == "rotated"
        store.close()
    finally:
        cluster.stop()


def test_a_dropped_store_ends_its_subscriber(server_url: str) -> None:
    import gc

    store = RedisStore(server_url, prefix=unique())
    store.check(jti="j", sid=None, sub="a", kid="k", iat=NOW, now=NOW)
    assert wait_until(store.watching, 5)
    watcher = store._watcher
    assert watcher is not None and watcher.is_alive()
    del store
    gc.collect()
    watcher.join(5)
    assert not watcher.is_alive()


# -- a cluster bus that stalls silently (issue 24, finding 3) -------------------------------


@pytest.fixture(scope="module")
def partitionable_cluster(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisCluster]:
    """A three-master cluster whose bus links pass through proxies that can stall them."""
    cluster = start_cluster(tmp_path_factory.mktemp("partitionable-cluster"), bus_proxies=True)
    try:
        yield cluster
    finally:
        cluster.stop()


def node_ids(cluster: RedisCluster) -> dict[int, str]:
    """Port -> cluster node id."""
    return {n.port: redis.Redis(port=n.port).execute_command("CLUSTER", "MYID").decode() for n in cluster.nodes}


def state_tag(prefix: str, sub: str = "a") -> str:
    """The hash tag of ``sub``'s stripe under ``prefix`` (where its state and revocations live)."""
    return RedisStore("redis://unused", prefix=prefix).tag_of(sub)


def slot_owner(cluster: RedisCluster, prefix: str, sub: str = "a") -> int:
    """The port of the master that owns the slot of ``prefix``'s state of subject ``sub``,
    asked of the nodes."""
    slot = raw(cluster.url).keyslot(state_tag(prefix, sub))
    client = redis.Redis(port=cluster.nodes[0].port, decode_responses=True)
    for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if int(start) <= slot <= int(end):
            return int(master[1])
    raise AssertionError(f"slot {slot} is not covered")


def every_node_reports_ok(cluster: RedisCluster) -> bool:
    for node in cluster.nodes:
        client = redis.Redis(port=node.port, decode_responses=True)
        if client.cluster("info")["cluster_state"] != "ok":
            return False
        if "fail" in client.execute_command("CLUSTER", "NODES"):  # neither "fail" nor "fail?"
            return False
    return True


def stall_bus(cluster: RedisCluster, sender: int, receivers: list[int]) -> t.Callable[[], None]:
    """Stall the bus links from node ``sender`` to ``receivers`` (ports); returns the undo."""
    ids = node_ids(cluster)
    proxies = [p for n, p in zip(cluster.nodes, cluster.proxies, strict=True) if n.port in receivers]
    for proxy in proxies:
        proxy.stall(ids[sender])

    def release() -> None:
        for proxy in proxies:
            proxy.release(ids[sender])

    return release


def bus_is_cut(sender: int, receiver: int) -> bool:
    """True if a PUBLISH on ``sender`` no longer reaches a subscriber on ``receiver``."""
    channel = "probe-" + uuid.uuid4().hex
    pubsub = redis.Redis(port=receiver).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    try:
        redis.Redis(port=sender).publish(channel, "hello")
        return pubsub.get_message(timeout=0.5) is None
    finally:
        pubsub.close()


def subject_owned_away_from_first_node(cluster: RedisCluster, prefix: str) -> str:
    """A subject whose stripe's slot is not on the node a client lists first: a subscriber
    placed by anything but "the owner of the slot" then sits behind the stalled links."""
    client = raw(cluster.url)
    first = client.get_nodes()[0].port
    for i in range(1000):  # two thirds of the subjects qualify
        if slot_owner(cluster, prefix, f"user{i}") != first:
            return f"user{i}"
    raise AssertionError("every stripe on one node")


def accepted_after_revocation(
    observer: RedisStore, revoker: RedisStore, jti: str, *, watch_for: float, sub: str = "a"
) -> float:
    """Revoke ``jti`` through ``revoker``; return how long ``observer`` kept accepting it
    (polled as a busy server would, for ``watch_for`` seconds; still accepted then: ``inf``)."""
    token = {"jti": jti, "sid": None, "sub": sub, "kid": "k", "iat": NOW, "now": NOW}
    started = time.monotonic()
    revoker.revoke("jti", jti, until=FAR)
    last_accepted = started
    while time.monotonic() - started < watch_for:
        if observer.check(**token) is None:  # type: ignore[arg-type]
            last_accepted = time.monotonic()
        time.sleep(0.001)
    if observer.check(**token) is None:  # type: ignore[arg-type]
        return float("inf")
    return last_accepted - started


MARGIN = 0.2  # scheduling of the polling loop on a busy machine


def test_a_stalled_bus_to_the_subscribers_node_never_keeps_a_revoked_token_accepted(
    partitionable_cluster: RedisCluster,
) -> None:
    """The bus link from the node owning the store's slot to the other nodes stalls while
    every node still reports ``ok``: a revocation made on another host is refused here
    within JWT_SHIELD_REVOCATION_MAX_DELAY -- the subscriber sits on the owner, and its
    lease is confirmed there, not by PONGs from whichever node it happens to use."""
    cluster = partitionable_cluster
    prefix = unique()
    sub = subject_owned_away_from_first_node(cluster, prefix)
    max_delay = 1.0
    observer = RedisStore(cluster.url, prefix=prefix, max_delay=max_delay)  # this host
    revoker = RedisStore(cluster.url, prefix=prefix, max_delay=max_delay)  # another host
    token = {"jti": "stolen", "sid": None, "sub": sub, "kid": "k", "iat": NOW, "now": NOW}
    assert observer.check(**token) is None  # type: ignore[arg-type]
    assert wait_until(observer.watching, 5)
    assert observer.check(**token) is None and observer.view_of(sub).fresh("stolen")  # type: ignore[arg-type]
    owner = slot_owner(cluster, prefix, sub)
    others = [n.port for n in cluster.nodes if n.port != owner]
    release = stall_bus(cluster, owner, others)
    try:
        assert all(bus_is_cut(owner, other) for other in others), "the bus stall did not take"
        time.sleep(max_delay)  # the subscription had a whole lease to notice nothing
        assert every_node_reports_ok(cluster)  # a partition no node notices
        assert observer.watching()
        stale = accepted_after_revocation(observer, revoker, "stolen", watch_for=max_delay + 1.0, sub=sub)
        fresh_host = RedisStore(cluster.url, prefix=prefix)
        assert fresh_host.check(**token) == "token"  # type: ignore[arg-type]
        fresh_host.close()
        assert stale <= max_delay + MARGIN, f"revoked token accepted {stale:.3f} s after its revocation"
        assert every_node_reports_ok(cluster)
    finally:
        release()
        observer.close()
        revoker.close()


def subscriber_port(store: RedisStore) -> int | None:
    """The port of the node where the subscriber watches subject ``a``'s stripe."""
    watcher = store._watcher
    return watcher.ports().get(store.stripe("a")) if watcher is not None else None


def test_a_subscriber_away_from_the_owner_is_never_trusted(partitionable_cluster: RedisCluster) -> None:
    """PONGs from a node that does not own the store's slot renew nothing: placed there (as
    after a move it has not noticed yet), the subscriber never trusts the view, and with
    the bus from the owner stalled a revoked token is refused at once."""
    cluster = partitionable_cluster
    prefix = unique()
    owner = slot_owner(cluster, prefix)
    elsewhere = next(n.port for n in cluster.nodes if n.port != owner)
    observer = RedisStore(cluster.url, prefix=prefix, max_delay=1.0)
    revoker = RedisStore(cluster.url, prefix=prefix)

    placed: list[int] = []

    def elsewhere_connection(node: t.Any) -> t.Any:
        placed.append(elsewhere)
        options: dict[str, t.Any] = {"port": elsewhere, "socket_timeout": 1.0, "decode_responses": True, "protocol": 3}
        return redis.connection.Connection(**options)

    observer.subscriber_connection = elsewhere_connection  # type: ignore[method-assign]
    release = stall_bus(cluster, owner, [elsewhere])
    try:
        token = {"jti": "stolen", "sid": None, "sub": "a", "kid": "k", "iat": NOW, "now": NOW}
        assert observer.check(**token) is None  # type: ignore[arg-type]
        assert wait_until(lambda: elsewhere in placed, 5)
        assert not wait_until(lambda: observer.watching("a"), 1.5)  # placed there, never trusted
        assert accepted_after_revocation(observer, revoker, "stolen", watch_for=0.5) == 0.0
    finally:
        release()
        observer.close()
        revoker.close()


def move_slot(cluster: RedisCluster, prefix: str, target: int) -> None:
    """Migrate the slot of ``prefix``'s state, keys and all, to the master on port ``target``."""
    slot = raw(cluster.url).keyslot(state_tag(prefix))
    owner = slot_owner(cluster, prefix)
    ids = node_ids(cluster)
    nodes = {n.port: redis.Redis(port=n.port, decode_responses=True) for n in cluster.nodes}
    src, dst = nodes[owner], nodes[target]
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    if keys:
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    for client in nodes.values():
        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])


def test_the_subscriber_follows_its_slot_to_the_new_owner(partitionable_cluster: RedisCluster) -> None:
    """The store's slot migrates to a master whose bus link to the subscriber's node is
    stalled: the revocation the new owner runs is refused here within the bound, and the
    subscriber moves to the new owner, trusted again only once confirmed there."""
    cluster = partitionable_cluster
    prefix = unique()
    max_delay = 1.0
    observer = RedisStore(cluster.url, prefix=prefix, max_delay=max_delay)
    revoker = RedisStore(cluster.url, prefix=prefix, max_delay=max_delay)
    revoker.revoke("jti", "earlier", until=FAR)  # a key that has to move with the slot
    token = {"jti": "stolen", "sid": None, "sub": "a", "kid": "k", "iat": NOW, "now": NOW}
    assert observer.check(**token) is None and wait_until(observer.watching, 5)  # type: ignore[arg-type]
    old_owner = slot_owner(cluster, prefix)
    assert subscriber_port(observer) == old_owner
    new_owner = next(n.port for n in cluster.nodes if n.port != old_owner)
    release = stall_bus(cluster, new_owner, [old_owner])
    try:
        assert observer.check(**token) is None and observer.view_of("a").fresh("stolen")  # type: ignore[arg-type]
        move_slot(cluster, prefix, new_owner)
        stale = accepted_after_revocation(observer, revoker, "stolen", watch_for=max_delay + 1.0)
        assert stale <= max_delay + MARGIN, f"revoked token accepted {stale:.3f} s after its revocation"
        assert wait_until(lambda: observer.watching() and subscriber_port(observer) == new_owner, 5)
        assert observer.check(jti="earlier", sid=None, sub="a", kid="k", iat=NOW, now=NOW) == "token"
        # confirmed at the new owner: its revocations reach the view without the bus
        again = {"jti": "later", "sid": None, "sub": "a", "kid": "k", "iat": NOW, "now": NOW}
        assert observer.check(**again) is None and observer.check(**again) is None  # type: ignore[arg-type]
        assert observer.view_of("a").fresh("later") and observer.watching()
        assert accepted_after_revocation(observer, revoker, "later", watch_for=0.8) < max_delay / 2
    finally:
        release()
        observer.close()
        revoker.close()


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_check_config_refuses_a_redis_that_may_evict(tmp_path: Path, make_app: AppFactory, policy: str) -> None:
    """Scale-out issue, item 4: revocations and DPoP replay entries must never be evicted
    silently. An evicting maxmemory-policy (volatile-* too: every key here has a TTL) is a
    check-config warning, so --strict fails."""
    from flask_jwt_shield.cli import cli

    server = start_redis(tmp_path / "evicting", extra=["--maxmemory", "64mb", "--maxmemory-policy", policy])
    try:
        app, _ = make_app({"JWT_SHIELD_STORE_URI": server.url})
        result = app.test_cli_runner().invoke(cli, ["check-config", "--strict", "--offline"])
        assert result.exit_code == 1
        assert f"maxmemory-policy {policy}" in result.output and "noeviction" in result.output
        with app.app_context():
            raw = redis.Redis.from_url(server.url)
            raw.config_set("maxmemory-policy", "noeviction")
            raw.close()
        assert "maxmemory-policy" not in app.test_cli_runner().invoke(cli, ["check-config", "--offline"]).output
    finally:
        server.stop()
