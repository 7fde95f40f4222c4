"""The store contract: every backend behaves the same. Parametrised over every backend."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_jwt_shield.errors import ConfigurationError
from flask_jwt_shield.errors import StoreError
from flask_jwt_shield.stores import Family
from flask_jwt_shield.stores import MemoryStore
from flask_jwt_shield.stores import RedisStore
from flask_jwt_shield.stores import SQLiteStore
from flask_jwt_shield.stores import Store
from flask_jwt_shield.stores import store_from_uri
from flask_jwt_shield.stores.view import NotRevokedCache

NOW = 1_800_000_000.0
FAR = NOW + 10_000


BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


def make_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh store of ``backend``; Redis ones share a session server, apart by key prefix."""
    if backend == "memory":
        return MemoryStore()
    if backend == "sqlite":
        return SQLiteStore(str(tmp_path / "shield.db"))
    server = request.getfixturevalue("shared_redis" if backend == "redis" else "redis_cluster")
    return RedisStore(server.url, prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, request, tmp_path)
    yield s
    s.close()


def family(sid: str = "s1", sub: str = "alice", created: float = NOW, jti: str = "r1") -> Family:
    return Family(
        sid=sid,
        sub=sub,
        created_at=created,
        expires_at=created + 1000,
        last_used_at=created,
        current_jti=jti,
        current_iat=created,
        claims={"role": "admin"},
    )


def check(
    store: Store,
    *,
    jti: str = "j",
    sid: str | None = None,
    sub: str = "alice",
    kid: str = "k",
    iat: float = NOW,
    now: float = NOW,
) -> str | None:
    return store.check(jti=jti, sid=sid, sub=sub, kid=kid, iat=iat, now=now)


def test_nothing_revoked(store: Store) -> None:
    assert check(store, sid="s") is None


@pytest.mark.parametrize(("kind", "reason"), [("jti", "token"), ("sid", "family"), ("kid", "key")])
def test_revoke_by_kind(store: Store, kind: t.Literal["jti", "sid", "kid"], reason: str) -> None:
    store.revoke(kind, "v", until=NOW + 100)
    values = {
        "jti": "v" if kind == "jti" else "j",
        "sid": "v" if kind == "sid" else "s",
        "kid": "v" if kind == "kid" else "k",
    }
    assert check(store, jti=values["jti"], sid=values["sid"], kid=values["kid"]) == reason
    # other tokens are untouched
    assert check(store, jti="other", sid="other", kid="other") is None
    # after `until` the entry no longer applies, and purge drops it
    assert check(store, jti=values["jti"], sid=values["sid"], kid=values["kid"], now=NOW + 101) is None
    assert store.purge(NOW + 101) >= 1


def test_revocation_never_shortened(store: Store) -> None:
    store.revoke("jti", "v", until=NOW + 100)
    store.revoke("jti", "v", until=NOW + 10)
    assert check(store, jti="v", now=NOW + 50) == "token"


def test_subject_not_before_is_exact(store: Store) -> None:
    store.revoke_subject("alice", at=NOW, until=FAR)
    assert check(store, iat=NOW - 0.000001) == "subject"
    assert check(store, iat=NOW) == "subject"
    assert check(store, iat=NOW + 0.000001) is None
    assert check(store, sub="bob", iat=NOW - 5) is None
    assert store.not_before("alice", NOW) == NOW
    assert store.not_before("bob", NOW) is None


def test_subject_not_before_only_moves_forward(store: Store) -> None:
    store.revoke_subject("alice", at=NOW, until=FAR)
    store.revoke_subject("alice", at=NOW - 100, until=FAR)
    assert store.not_before("alice", NOW) == NOW


def test_family_rotation(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    r = store.rotate(
        "s1",
        "r1",
        new_jti="r2",
        new_iat=NOW + 1,
        now=NOW + 1,
        idle_ttl=500,
        grace=0,
        ip="192.0.2.1",
        country="DE",
        until=FAR,
    )
    assert r.outcome == "rotated"
    assert r.family is not None and r.family.current_jti == "r2" and r.family.claims == {"role": "admin"}
    got = store.get_family("s1")
    assert got is not None and got.current_jti == "r2" and got.last_ip == "192.0.2.1" and got.last_country == "DE"


def test_reuse_revokes_family_and_reports_first_use(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    store.rotate(
        "s1",
        "r1",
        new_jti="r2",
        new_iat=NOW,
        now=NOW + 1,
        idle_ttl=500,
        grace=0,
        ip="192.0.2.1",
        country=None,
        until=FAR,
    )
    r = store.rotate(
        "s1",
        "r1",
        new_jti="r3",
        new_iat=NOW,
        now=NOW + 2,
        idle_ttl=500,
        grace=0,
        ip="203.0.113.9",
        country=None,
        until=FAR,
    )
    assert r.outcome == "reused"
    assert r.first_use is not None and r.first_use.at == NOW + 1 and r.first_use.ip == "192.0.2.1"
    assert check(store, sid="s1", now=NOW + 3) == "family"
    # the legitimate successor is dead too
    again = store.rotate(
        "s1", "r2", new_jti="r4", new_iat=NOW, now=NOW + 3, idle_ttl=500, grace=0, ip=None, country=None, until=FAR
    )
    assert again.outcome == "revoked"


def test_grace_accepts_only_the_immediate_predecessor(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    kw: dict[str, t.Any] = {"idle_ttl": 500, "grace": 10, "ip": None, "country": None, "until": FAR}
    assert store.rotate("s1", "r1", new_jti="r2", new_iat=NOW, now=NOW + 1, **kw).outcome == "rotated"
    g = store.rotate("s1", "r1", new_jti="x", new_iat=NOW, now=NOW + 5, **kw)
    assert g.outcome == "grace" and g.family is not None and g.family.current_jti == "r2"
    assert store.rotate("s1", "r2", new_jti="r3", new_iat=NOW, now=NOW + 6, **kw).outcome == "rotated"
    # r1 is two generations old now: reuse, even inside the grace period
    assert store.rotate("s1", "r1", new_jti="y", new_iat=NOW, now=NOW + 7, **kw).outcome == "reused"


def test_grace_period_ends(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    kw: dict[str, t.Any] = {"idle_ttl": 500, "grace": 10, "ip": None, "country": None, "until": FAR}
    store.rotate("s1", "r1", new_jti="r2", new_iat=NOW, now=NOW + 1, **kw)
    assert store.rotate("s1", "r1", new_jti="x", new_iat=NOW, now=NOW + 12, **kw).outcome == "reused"


def test_absolute_and_idle_expiry(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=100, until=FAR)
    kw: dict[str, t.Any] = {"grace": 0, "ip": None, "country": None, "until": FAR}
    assert store.rotate("s1", "r1", new_jti="r2", new_iat=NOW, now=NOW + 101, idle_ttl=100, **kw).outcome == "expired"
    store.create_family(family("s2", jti="q1"), max_sessions=10, idle_ttl=100, until=FAR)
    t0 = NOW
    jti = "q1"
    for i in range(1, 12):  # used every 90 s: never idle, but the absolute lifetime (1000 s) ends
        now = t0 + 90 * i
        r = store.rotate("s2", jti, new_jti=f"q{i + 1}", new_iat=now, now=now, idle_ttl=100, **kw)
        if now < NOW + 1000:
            assert r.outcome == "rotated"
            jti = f"q{i + 1}"
        else:
            assert r.outcome == "expired"


def test_unknown_family(store: Store) -> None:
    r = store.rotate(
        "nope", "r1", new_jti="r2", new_iat=NOW, now=NOW, idle_ttl=100, grace=0, ip=None, country=None, until=FAR
    )
    assert r.outcome == "unknown"


def test_max_sessions_revokes_oldest(store: Store) -> None:
    for i in range(3):
        dropped = store.create_family(
            family(f"s{i}", created=NOW + i, jti=f"r{i}"), max_sessions=2, idle_ttl=500, until=FAR
        )
    assert dropped == ["s0"]
    assert [f.sid for f in store.families("alice", now=NOW + 3, idle_ttl=500)] == ["s1", "s2"]
    assert check(store, sid="s0", now=NOW + 3) == "family"
    assert store.families("bob", now=NOW, idle_ttl=500) == []


def test_revoke_family_returns_it(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    f = store.revoke_family("s1", until=FAR)
    assert f is not None and f.revoked and f.sub == "alice"
    assert store.families("alice", now=NOW, idle_ttl=500) == []
    assert store.revoke_family("unknown", until=FAR) is None
    assert check(store, sid="unknown") == "family"


def test_profiles(store: Store) -> None:
    assert store.get_profile("alice") is None
    store.put_profile("alice", {"countries": ["DE"], "last": {"lat": 1.5}})
    assert store.get_profile("alice") == {"countries": ["DE"], "last": {"lat": 1.5}}


def test_events_query_and_retention(store: Store) -> None:
    for i in range(12):
        kind = "token-revoked" if i % 2 else "token-rejected"
        subject = "alice" if i < 6 else "bob"
        store.add_event(
            {"id": str(i), "kind": kind, "at": NOW + i, "subject": subject, "jti": f"j{i}", "sid": None}, retention=10
        )
    everything = store.events(limit=100)
    assert [e["id"] for e in everything] == [str(i) for i in range(11, 1, -1)]  # newest first, 10 kept
    assert [e["id"] for e in store.events(subject="alice")] == ["5", "4", "3", "2"]
    assert [e["id"] for e in store.events(kind="token-revoked", limit=2)] == ["11", "9"]
    assert [e["id"] for e in store.events(jti="j7")] == ["7"]
    assert [e["id"] for e in store.events(since=NOW + 10)] == ["11", "10"]


def test_purge_drops_expired_families(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    assert store.purge(NOW + 1001) >= 1
    assert store.get_family("s1") is None


# -- one-time keys (the DPoP replay cache) --------------------------------------------------


def test_remember_once(store: Store) -> None:
    assert store.remember_once("dpop-jti", "k1", NOW + 60, now=NOW) is True
    assert store.remember_once("dpop-jti", "k1", NOW + 60, now=NOW + 30) is False
    assert store.remember_once("other", "k1", NOW + 60, now=NOW) is True  # namespaces are apart
    assert store.remember_once("dpop-jti", "k2", NOW + 60, now=NOW) is True
    # after `until` the key is forgotten, and purge drops it
    assert store.remember_once("dpop-jti", "k1", NOW + 200, now=NOW + 61) is True
    assert store.remember_once("dpop-jti", "k1", NOW + 200, now=NOW + 62) is False
    assert store.purge(NOW + 300) >= 2


@pytest.fixture(params=["memory", "sqlite"])
def small_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = (
        MemoryStore(max_remembered=16)
        if request.param == "memory"
        else SQLiteStore(str(tmp_path / "shield.db"), max_remembered=16)
    )
    yield s
    s.close()


def test_remember_once_is_bounded_and_never_accepts_a_dropped_key_twice(small_store: Store) -> None:
    store = small_store
    # Far more live keys than the bound: the oldest are dropped, and a floor guards them.
    for i in range(200):
        assert store.remember_once("dpop-jti", f"k{i}", NOW + 60 + i, now=NOW) is True
    for i in range(200):
        assert store.remember_once("dpop-jti", f"k{i}", NOW + 60 + i, now=NOW) is False, i
    # A new key dated after everything dropped is still welcome.
    assert store.remember_once("dpop-jti", "fresh", NOW + 1000, now=NOW) is True
    # The floor of one namespace does not touch another.
    assert store.remember_once("other", "k0", NOW + 60, now=NOW) is True
    if isinstance(store, SQLiteStore):
        with store._read() as conn:
            (rows,) = conn.execute("SELECT count(*) FROM remembered").fetchone()
        assert rows <= 16 + 2
    else:
        assert len(t.cast(MemoryStore, store)._remembered) <= 16
    # Once everything has expired, the floor goes too.
    store.purge(NOW + 2000)
    assert store.remember_once("dpop-jti", "k0", NOW + 3000, now=NOW + 2000) is True


def _remember_in_process(path: str, barrier: t.Any, results: t.Any) -> None:
    store = SQLiteStore(path)
    barrier.wait()
    results.put(store.remember_once("dpop-jti", "same-proof", NOW + 60, now=NOW))


def test_sqlite_remember_once_is_atomic_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shield.db")
    SQLiteStore(path).purge(NOW)  # creates the schema
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_remember_in_process, args=(path, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(results.get(timeout=5) for _ in range(n)) == [False] * (n - 1) + [True]


# -- SQLite specifics -------------------------------------------------------------------
#
# The cross-process tests spawn fresh interpreters: a child forked from pytest's process
# inherits its threads' locks (alert workers, Redis listeners, limiter timers) and once hung
# on one. Forking is tested on purpose where it matters (connections reopened after fork).


def test_sqlite_survives_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "shield.db")
    first = SQLiteStore(path)
    first.revoke("jti", "stolen", until=FAR)
    first.revoke_subject("alice", at=NOW, until=FAR)
    first.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    first.close()
    second = SQLiteStore(path)
    assert check(second, jti="stolen") == "token"
    assert check(second, iat=NOW - 1) == "subject"
    assert second.get_family("s1") is not None


def _rotate_in_process(path: str, barrier: t.Any, results: t.Any, n: int) -> None:
    store = SQLiteStore(path)
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


def test_sqlite_rotation_is_atomic_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shield.db")
    SQLiteStore(path).create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_rotate_in_process, args=(path, barrier, results, i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    outcomes = sorted(results.get(timeout=5) for _ in range(n))
    assert outcomes.count("rotated") == 1
    # with grace 0 every other attempt is reuse (or meets the family already revoked by it)
    assert set(outcomes) - {"rotated"} <= {"reused", "revoked"}
    assert "reused" in outcomes


def _try_write(path: str) -> str:
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
        "try:\n    c.execute('BEGIN IMMEDIATE'); print('wrote')\n"
        "except sqlite3.OperationalError as e:\n    print('locked')\n"
    )
    return subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=30).stdout.strip()


def test_sqlite_store_never_drops_another_connections_write_lock(tmp_path: Path) -> None:
    """fcntl(2): closing any descriptor of a file drops every lock the process holds on it.

    A store that opened and closed the database's files itself (say, to map the -shm
    WAL index) while another connection of the process was mid-transaction let a second
    process write at the same time: two rotations of one refresh token. Every store
    operation here runs while this process holds the write lock; no other process may
    get it meanwhile.
    """
    path = str(tmp_path / "shield.db")
    SQLiteStore(path).create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    holder = sqlite3.connect(path, timeout=10, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE families SET last_ip = 'holder' WHERE sid = 's1'")
    assert _try_write(path) == "locked"
    store = SQLiteStore(path)
    for _ in range(3):  # the first checks set up the connection and the local view
        assert check(store, jti="warm") is None
        assert _try_write(path) == "locked"
    store.get_family("s1")
    store.close()
    assert _try_write(path) == "locked"
    holder.execute("ROLLBACK")
    assert _try_write(path) == "wrote"
    holder.close()


def _revoke_in_child(path: str) -> None:
    SQLiteStore(path).revoke("jti", "warm", until=FAR)


@pytest.mark.parametrize("local_view", [True, False])
def test_sqlite_warm_check_reads_nothing_yet_sees_every_revocation_at_once(tmp_path: Path, local_view: bool) -> None:
    path = str(tmp_path / "shield.db")
    store = SQLiteStore(path, local_view=local_view)
    writer = SQLiteStore(path)  # another connection of this process
    for _ in range(3):  # the first checks set the view up
        assert check(store, jti="warm") is None
    if local_view:
        conn = store._local.conn
        store._local.conn = None
        try:
            # warm: answered by the change counter alone, no query of the tables (the
            # thread's connection is swapped for a closed one)
            blocked = sqlite3.connect(":memory:")
            blocked.close()
            store._local.conn, store._local.pid = blocked, os.getpid()
            assert check(store, jti="warm") is None
        finally:
            store._local.conn = conn
    # a revocation by another process applies on the very next check
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_revoke_in_child, args=(path,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert check(store, jti="warm") == "token"
    # and one by another connection of this process
    writer.revoke("kid", "k", until=FAR)
    assert check(store, jti="other") == "key"
    writer.close()
    store.close()


def test_sqlite_unreachable_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SQLiteStore(str(blocker / "shield.db"))
    with pytest.raises(StoreError):
        check(store)


def test_sqlite_connection_reopened_after_fork(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "shield.db"))
    store.revoke("jti", "x", until=FAR)
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's connection
        code = 0 if check(store, jti="x") == "token" else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_forked_child_trusts_none_of_its_parents_remembered_answers() -> None:
    """The local view's "not revoked" answers do not cross a fork: the parent's subscriber,
    which would invalidate them, does not run in the child. The child still learns it is a
    new process (its store restarts the subscriber), and the parent keeps its answers."""
    view = NotRevokedCache()
    view.remember("j1", view.generation)
    assert view.fresh("j1")
    pid = os.fork()
    if pid == 0:
        code = 0 if not view.fresh("j1") and view.reset_after_fork() else 1
        view.remember("j2", view.generation)  # the child's own answers are kept
        os._exit(code if view.fresh("j2") else 2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert view.fresh("j1")
    assert not view.reset_after_fork()


@pytest.mark.parametrize(
    ("uri", "kind"),
    [("memory://", MemoryStore), ("sqlite:///shield.db", SQLiteStore), ("sqlite:////tmp/x/shield.db", SQLiteStore)],
)
def test_store_from_uri(uri: str, kind: type, tmp_path: Path) -> None:
    store = store_from_uri(uri, instance_path=str(tmp_path))
    assert isinstance(store, kind)
    if uri == "sqlite:///shield.db":
        assert t.cast(SQLiteStore, store).path == str(tmp_path / "shield.db")
    if uri.startswith("sqlite:////"):
        assert t.cast(SQLiteStore, store).path == "/tmp/x/shield.db"


@pytest.mark.parametrize("uri", ["postgres://x", "sqlite://", "sqlite:///", "bogus"])
def test_store_from_uri_refuses(uri: str) -> None:
    with pytest.raises(ConfigurationError, match="JWT_SHIELD_STORE_URI"):
        store_from_uri(uri)


# -- "log out everywhere" and key revocation end sessions (adversarial review, finding 1) ------


def _rotate(store: Store, jti: str = "r1", new: str = "r2", *, now: float = NOW + 1, kid: str | None = None) -> str:
    return store.rotate(
        "s1",
        jti,
        new_jti=new,
        new_iat=now,
        now=now,
        idle_ttl=500,
        grace=0,
        ip=None,
        country=None,
        until=FAR,
        kid=kid,
        new_kid="k2",
    ).outcome


def test_revoke_subject_ends_every_family_of_the_subject(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    store.create_family(family("other", sub="bob"), max_sessions=10, idle_ttl=500, until=FAR)
    store.revoke_subject("alice", NOW + 5, FAR)
    assert store.families("alice", now=NOW + 6, idle_ttl=500) == []
    assert check(store, jti="a", sid="s1", iat=NOW + 10, now=NOW + 6) == "family"  # the session's later tokens too
    assert _rotate(store, now=NOW + 6) == "revoked"
    assert [f.sid for f in store.families("bob", now=NOW + 6, idle_ttl=500)] == ["other"]
    store.create_family(family("s2", created=NOW + 7), max_sessions=10, idle_ttl=500, until=FAR)  # logs back in
    assert [f.sid for f in store.families("alice", now=NOW + 8, idle_ttl=500)] == ["s2"]


def test_a_login_racing_revoke_subject_is_born_ended(store: Store) -> None:
    store.revoke_subject("alice", NOW + 5, FAR)
    store.create_family(family(created=NOW + 4), max_sessions=10, idle_ttl=500, until=FAR)
    assert store.families("alice", now=NOW + 6, idle_ttl=500) == []
    assert _rotate(store, now=NOW + 6) == "revoked"


def test_rotation_with_a_revoked_key_ends_the_family(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    store.revoke("kid", "k1", FAR)
    assert _rotate(store, kid="k1") == "revoked"
    got = store.get_family("s1")
    assert got is not None and got.revoked
    assert check(store, jti="a", sid="s1", kid="k2", now=NOW + 2) == "family"


def test_sessions_whose_key_is_revoked_are_not_live(store: Store) -> None:
    store.create_family(family(), max_sessions=10, idle_ttl=500, until=FAR)
    assert _rotate(store, kid="k1") == "rotated"
    got = store.get_family("s1")
    assert got is not None and got.kid == "k2"  # the key that signs the new refresh token
    store.revoke("kid", "k2", FAR)
    assert store.families("alice", now=NOW + 2, idle_ttl=500) == []


def test_boxes_keep_order_replace_by_key_expire_and_drop_the_oldest_beyond_the_bound(store: Store) -> None:
    now = NOW
    box = "ssf-sets:stream-1"
    assert store.box_items(box, now=now, limit=10) == []
    for i in range(3):
        assert store.box_put(box, f"k{i}", f"v{i}", now + 60, max_items=3, now=now) == 0
    assert store.box_items(box, now=now, limit=10) == [("k0", "v0"), ("k1", "v1"), ("k2", "v2")]
    assert store.box_items(box, now=now, limit=2) == [("k0", "v0"), ("k1", "v1")]
    # A fourth item: the oldest live one goes, and is counted.
    assert store.box_put(box, "k3", "v3", now + 60, max_items=3, now=now) == 1
    assert [k for k, _ in store.box_items(box, now=now, limit=10)] == ["k1", "k2", "k3"]
    # Replacing a key moves it to the end and drops nothing.
    assert store.box_put(box, "k1", "v1b", now + 60, max_items=3, now=now) == 0
    assert store.box_items(box, now=now, limit=10) == [("k2", "v2"), ("k3", "v3"), ("k1", "v1b")]
    # Another box is another box.
    assert store.box_put("ssf-streams", "s", "{}", now + 60, max_items=3, now=now) == 0
    assert store.box_items("ssf-streams", now=now, limit=10) == [("s", "{}")]
    assert store.box_delete(box, ["k2", "missing", "k1"]) == 2
    assert store.box_items(box, now=now, limit=10) == [("k3", "v3")]
    assert store.box_delete(box, []) == 0
    # Expired items are not read, and an expired one is not counted as dropped.
    assert store.box_put(box, "old", "x", now + 1, max_items=3, now=now) == 0
    assert [k for k, _ in store.box_items(box, now=now + 2, limit=10)] == ["k3"]
    assert store.box_put(box, "new", "y", now + 60, max_items=2, now=now + 2) == 0
    assert [k for k, _ in store.box_items(box, now=now + 2, limit=10)] == ["k3", "new"]
