"""The revocation bound per shard on a real Redis Cluster (scale-out issue, item 2).

Subjects' state lives in stripes spread over the masters; each process watches every
stripe on the master that owns it (sharded pub/sub) and trusts its remembered "not revoked"
answers per stripe. Faults against real clusters started by the tests: a master frozen
(trust in its stripes lapses, the others keep theirs), a master killed with SIGKILL and
replaced by its replica (no acknowledged revocation lost, no stale answer past the bound),
and a stripe's slot moved while revocations keep coming.
"""

from __future__ import annotations

import threading
import time
import typing as t
import uuid
from pathlib import Path

import pytest
import redis

from flask_jwt_shield.errors import StoreError
from flask_jwt_shield.stores import RedisStore

from .redis_util import RedisCluster
from .redis_util import start_cluster
from .test_redis_store import node_ids

pytestmark = pytest.mark.redis

MAX_DELAY = 0.5
MARGIN = 0.25  # scheduling of the polling loops on a busy machine
ISSUED = time.time() - 5  # every token here was issued before any revocation


def unique() -> str:
    return "t" + uuid.uuid4().hex[:12]


def wait_until(condition: t.Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def owner_port(cluster: RedisCluster, store: RedisStore, sub: str) -> int:
    """The port of the master that owns ``sub``'s stripe, asked of a node."""
    slot = store.slot_of(store.tag_of(sub))
    client = redis.Redis(port=cluster.nodes[0].port, decode_responses=True)
    for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if int(start) <= slot <= int(end):
            return int(master[1])
    raise AssertionError(f"slot {slot} is not covered")


def subjects_by_owner(cluster: RedisCluster, store: RedisStore, n: int = 64) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for i in range(n):
        found.setdefault(owner_port(cluster, store, f"user{i}"), []).append(f"user{i}")
    return found


def token(sub: str, jti: str) -> dict[str, t.Any]:
    return {"jti": jti, "sid": None, "sub": sub, "kid": "k", "iat": ISSUED, "now": time.time()}


def accepted(store: RedisStore, sub: str, jti: str) -> bool:
    """Whether ``store`` answers "not revoked" (a store error is a refusal: fail closed)."""
    try:
        return store.check(**token(sub, jti)) is None
    except StoreError:
        return False


def warm(store: RedisStore, sub: str, jti: str) -> None:
    assert store.check(**token(sub, jti)) is None
    assert wait_until(lambda: store.watching(sub), 10)
    assert store.check(**token(sub, jti)) is None and store.view_of(sub).fresh(jti)


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisCluster]:
    """A three-master cluster of this module's own: its masters get frozen."""
    cluster = start_cluster(tmp_path_factory.mktemp("shards-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


def test_subjects_spread_over_every_master(own_cluster: RedisCluster) -> None:
    store = RedisStore(own_cluster.url, prefix=unique())
    by_owner = subjects_by_owner(own_cluster, store)
    assert len(by_owner) == 3 and min(len(v) for v in by_owner.values()) >= 10
    # the stripes' slots lie in equal bands: each master of an even split owns 5 or 6
    owners = {owner_port(own_cluster, store, f"user{i}") for i in range(64)}
    assert len(owners) == 3
    store.close()


def test_a_frozen_master_distrusts_its_stripes_only(own_cluster: RedisCluster) -> None:
    """A master stops answering (SIGSTOP; shorter than the cluster's node timeout, so no
    node notices): within the bound, remembered answers of its stripes are no longer
    trusted, while the stripes on the other masters keep theirs all along -- and a
    revocation made there still arrives."""
    prefix = unique()
    observer = RedisStore(own_cluster.url, prefix=prefix, max_delay=MAX_DELAY, timeout=0.2)
    revoker = RedisStore(own_cluster.url, prefix=prefix, max_delay=MAX_DELAY, timeout=0.2)
    by_owner = subjects_by_owner(own_cluster, observer)
    # not the node the URL names: the clients' topology refreshes start there
    frozen_port = sorted(p for p in by_owner if p != own_cluster.nodes[0].port)[0]
    other_port = own_cluster.nodes[0].port
    frozen_sub, other_sub = by_owner[frozen_port][0], by_owner[other_port][0]
    warm(observer, frozen_sub, "f1")
    warm(observer, other_sub, "o1")
    # the revoker is up: it has read the layout, and its script is known to every node
    # (redis-py loads a script on every master at once)
    revoker.revoke_subject(by_owner[other_port][1], time.time(), time.time() + 3600)
    frozen = next(n for n in own_cluster.nodes if n.port == frozen_port)
    frozen.pause()
    try:
        started = time.monotonic()
        lapsed = None
        other_trusted = True
        while time.monotonic() - started < 1.2:  # well under the 2 s cluster-node-timeout
            if lapsed is None and not observer.watching(frozen_sub):
                lapsed = time.monotonic() - started
            other_trusted = other_trusted and observer.watching(other_sub)
            time.sleep(0.005)
        assert lapsed is not None and lapsed <= MAX_DELAY + MARGIN, lapsed
        assert other_trusted, "a stripe on a healthy master lost its trust"
        assert observer.view_of(other_sub).fresh("o1")  # its remembered answers kept
        revoker.revoke_subject(other_sub, time.time(), time.time() + 3600)
        assert wait_until(lambda: not accepted(observer, other_sub, "o1"), MAX_DELAY + MARGIN)
    finally:
        frozen.resume()
    assert wait_until(lambda: observer.watching(frozen_sub), 10)
    observer.close()
    revoker.close()


def test_a_killed_master_loses_no_revocation(tmp_path: Path) -> None:
    """SIGKILL the master owning a stripe while revocations keep coming; its replica takes
    over. Every revocation that was acknowledged holds afterwards (each waited for a replica),
    and the observer never answers "not revoked" for a revoked subject past the bound."""
    cluster = start_cluster(tmp_path / "cluster", replicas=1)
    try:
        prefix = unique()
        observer = RedisStore(cluster.url, prefix=prefix, max_delay=MAX_DELAY)
        revoker = RedisStore(cluster.url, prefix=prefix, max_delay=MAX_DELAY)
        masters = {
            int(n.port)
            for n in revoker._client().get_nodes()
            if n.server_type == "primary"  # the replicas' ports are not owners
        }
        by_owner = {port: subs for port, subs in subjects_by_owner(cluster, observer, 96).items() if port in masters}
        victim_port = sorted(p for p in by_owner if p != cluster.nodes[0].port)[0]  # not the URL's node
        victims = by_owner[victim_port]
        victim_client = redis.Redis(port=victim_port, decode_responses=True)

        def replica_in_sync() -> bool:
            role = victim_client.execute_command("ROLE")
            return role[0] == "master" and any(str(r[2]) == str(role[1]) for r in role[2])

        assert wait_until(replica_in_sync, 20), "the master's replica never caught up"
        watched = victims[0]
        warm(observer, watched, "w1")
        acknowledged: dict[str, float] = {}
        stale: list[float] = []
        stop = threading.Event()

        def keep_revoking() -> None:
            i = 1
            while not stop.is_set() and i < len(victims):
                try:
                    revoker.revoke_subject(victims[i], time.time(), time.time() + 3600)
                    acknowledged[victims[i]] = time.monotonic()
                    i += 1
                except StoreError:
                    time.sleep(0.05)  # the failover is under way: try again

        worker = threading.Thread(target=keep_revoking)
        worker.start()
        victim = next(n for n in cluster.nodes if n.port == victim_port)
        time.sleep(0.05)
        victim.process.kill()  # SIGKILL: no goodbye to anyone
        victim.process.wait(timeout=5)
        # the watched subject is logged out everywhere as soon as the cluster takes writes again
        deadline = time.monotonic() + 30
        while True:
            try:
                revoker.revoke_subject(watched, time.time(), time.time() + 3600)
                acked_at = time.monotonic()
                break
            except StoreError:
                assert time.monotonic() < deadline, "the replica never took over"
                time.sleep(0.05)
        while time.monotonic() - acked_at < MAX_DELAY + 1.0:
            if accepted(observer, watched, "w1"):
                stale.append(time.monotonic() - acked_at)
            time.sleep(0.002)
        stop.set()
        worker.join(30)
        assert not stale or max(stale) <= MAX_DELAY + MARGIN, f"revoked subject accepted {max(stale):.3f} s late"
        fresh = RedisStore(cluster.url, prefix=prefix, max_delay=0)
        lost = [sub for sub in [*acknowledged, watched] if fresh.not_before(sub, time.time()) is None]
        assert not lost, f"acknowledged revocations lost in the failover: {lost}"
        assert len(acknowledged) >= 1
        fresh.close()
        observer.close()
        revoker.close()
    finally:
        cluster.stop()


def test_a_stripe_moved_under_load(own_cluster: RedisCluster) -> None:
    """A stripe's slot migrates, keys and all, to another master while one thread keeps
    revoking its subjects and another keeps checking: every acknowledged revocation holds
    afterwards, and the observer, which moves its subscription to the new owner, refuses a
    revocation made there within the bound."""
    prefix = unique()
    observer = RedisStore(own_cluster.url, prefix=prefix, max_delay=MAX_DELAY)
    revoker = RedisStore(own_cluster.url, prefix=prefix, max_delay=MAX_DELAY)
    subs = [f"user{i}" for i in range(400) if observer.stripe(f"user{i}") == observer.stripe("user0")]
    watched = subs[0]
    warm(observer, watched, "w1")
    acknowledged: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_revoking() -> None:
        for sub in subs[1:]:
            if stop.is_set():
                return
            for _attempt in range(50):
                try:
                    revoker.revoke_subject(sub, time.time(), time.time() + 3600)
                    acknowledged.append(sub)
                    break
                except StoreError as exc:  # TRYAGAIN while the keys move: fine, try again
                    errors.append(exc)
                    time.sleep(0.01)

    def keep_checking() -> None:
        while not stop.is_set():
            accepted(observer, watched, "w1")

    threads = [threading.Thread(target=keep_revoking), threading.Thread(target=keep_checking)]
    for thread in threads:
        thread.start()
    try:
        old = owner_port(own_cluster, observer, watched)
        new = next(n.port for n in own_cluster.nodes if n.port != old)
        time.sleep(0.05)
        slot = observer.slot_of(observer.tag_of(watched))
        ids = node_ids(own_cluster)
        nodes = {n.port: redis.Redis(port=n.port, decode_responses=True) for n in own_cluster.nodes}
        nodes[new].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[old])
        nodes[old].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[new])
        while keys := nodes[old].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            nodes[old].execute_command("MIGRATE", "127.0.0.1", new, "", 0, 5000, "KEYS", *keys)
        for client in nodes.values():
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[new])
        time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert acknowledged, errors[-3:]
    fresh = RedisStore(own_cluster.url, prefix=prefix, max_delay=0)
    lost = [sub for sub in acknowledged if fresh.not_before(sub, time.time()) is None]
    assert not lost, f"acknowledged revocations lost in the move: {lost}"
    fresh.close()
    assert wait_until(lambda: observer.watching(watched), 10)  # confirmed at the new owner
    assert observer._watcher is not None and observer._watcher.ports()[observer.stripe(watched)] == new
    assert observer.check(**token(watched, "w2")) is None and observer.check(**token(watched, "w2")) is None
    started = time.monotonic()
    revoker.revoke_subject(watched, time.time(), time.time() + 3600)
    assert wait_until(lambda: not accepted(observer, watched, "w2"), MAX_DELAY + MARGIN)
    assert time.monotonic() - started <= MAX_DELAY + MARGIN
    # move it back for the next test of this module
    move_slot_back(own_cluster, slot, new, old)
    observer.close()
    revoker.close()


def move_slot_back(cluster: RedisCluster, slot: int, source: int, target: int) -> None:
    ids = node_ids(cluster)
    nodes = {n.port: redis.Redis(port=n.port, decode_responses=True) for n in cluster.nodes}
    nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    while keys := nodes[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        nodes[source].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    for client in nodes.values():
        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
