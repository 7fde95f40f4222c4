"""The store's status-list contract (draft-ietf-oauth-status-list): index allocation and
revocation bits behave the same on every backend. Parametrised over every backend."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_jwt_shield.errors import StoreError
from flask_jwt_shield.statuslist.codec import StatusList
from flask_jwt_shield.stores import Family
from flask_jwt_shield.stores import RedisStore
from flask_jwt_shield.stores import Rotation
from flask_jwt_shield.stores import SQLiteStore
from flask_jwt_shield.stores import Store
from flask_jwt_shield.stores.base import StatusClaim
from flask_jwt_shield.stores.base import StatusHolder
from flask_jwt_shield.stores.base import status_candidates

from .test_store_contract import BACKENDS
from .test_store_contract import make_store

NOW = 1_800_000_000.0
SIZE = 1024


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, request, tmp_path)
    s.backend = request.param  # type: ignore[attr-defined]
    yield s
    s.close()


def holder(
    jti: str,
    *,
    sub: str = "alice",
    sid: str | None = "s1",
    kid: str | None = "k1",
    iat: float = NOW,
    until: float = NOW + 100,
    ends_at: float | None = None,
) -> StatusHolder:
    return StatusHolder(jti=jti, sub=sub, sid=sid, kid=kid, iat=iat, until=until, ends_at=ends_at)


def claim(store: Store, h: StatusHolder, *, now: float = NOW, size: int = SIZE) -> int:
    for _ in range(200):
        idx = store.status_claim(h, status_candidates(size, 8), now=now)
        if idx is not None:
            return idx
    raise AssertionError("no free index")


def statuses(store: Store, *, now: float = NOW, size: int = SIZE) -> StatusList:
    _, data = store.status_bits(size, version=None, now=now)
    assert data is not None and len(data) == size // 8
    return StatusList(bytearray(data))


def revoked(store: Store, indices: dict[str, int], *, now: float = NOW) -> set[str]:
    lst = statuses(store, now=now)
    return {name for name, idx in indices.items() if lst[idx]}


def test_claims_are_distinct_random_and_start_valid(store: Store) -> None:
    indices = [claim(store, holder(f"j{i}")) for i in range(50)]
    assert len(set(indices)) == 50
    assert indices != sorted(indices)  # random, not issue order
    lst = statuses(store)
    assert all(lst[i] == 0 for i in indices)


def test_same_jti_gets_its_index_again(store: Store) -> None:
    idx = claim(store, holder("j"))
    assert store.status_claim(holder("j"), [(idx + 1) % SIZE], now=NOW + 1) == idx


def test_taken_candidates_answer_none_and_reuse_waits_for_until(store: Store) -> None:
    idx = claim(store, holder("old", until=NOW + 100))
    store.status_mark("jti", "old", at=None, until=NOW + 100, now=NOW)
    assert store.status_claim(holder("new", until=NOW + 300), [idx], now=NOW + 99) is None
    # the index is free once the holder's `until` has passed, and starts VALID again
    assert store.status_claim(holder("new", until=NOW + 300), [idx], now=NOW + 100) == idx
    assert statuses(store, now=NOW + 100)[idx] == 0


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("jti", "a1", {"a1"}),
        ("sid", "s1", {"a1", "a2"}),
        ("sub", "alice", {"a1", "a2", "a3"}),
        ("kid", "k2", {"a3", "b1"}),
    ],
)
def test_each_mark_sets_exactly_its_tokens(
    store: Store, kind: t.Literal["jti", "sid", "sub", "kid"], value: str, expected: set[str]
) -> None:
    indices = {
        "a1": claim(store, holder("a1", sid="s1", kid="k1")),
        "a2": claim(store, holder("a2", sid="s1", kid="k1")),
        "a3": claim(store, holder("a3", sid="s2", kid="k2")),
        "b1": claim(store, holder("b1", sub="bob", sid="s3", kid="k2")),
        "b2": claim(store, holder("b2", sub="bob", sid=None, kid=None)),
    }
    at = NOW if kind == "sub" else None
    version, _ = store.status_bits(SIZE, version=None, now=NOW)
    assert store.status_mark(kind, value, at=at, until=NOW + 1000, now=NOW) == len(expected)
    assert revoked(store, indices) == expected
    assert store.status_bits(SIZE, version=version, now=NOW)[1] is not None  # the version moved
    # marking again changes nothing, and says so
    assert store.status_mark(kind, value, at=at, until=NOW + 1000, now=NOW) == 0


def test_subject_mark_spares_tokens_issued_after_it(store: Store) -> None:
    before = claim(store, holder("before", iat=NOW - 0.000001))
    same = claim(store, holder("same", iat=NOW))
    after = claim(store, holder("after", iat=NOW + 0.000001, sid="s2"))
    store.status_mark("sub", "alice", at=NOW, until=NOW + 1000, now=NOW)
    assert revoked(store, {"before": before, "same": same, "after": after}) == {"before", "same"}


def test_a_token_claimed_after_its_revocation_starts_invalid(store: Store) -> None:
    store.status_mark("sid", "s9", at=None, until=NOW + 1000, now=NOW)
    store.status_mark("sub", "carol", at=NOW, until=NOW + 1000, now=NOW)
    indices = {
        "in-revoked-session": claim(store, holder("x1", sid="s9")),
        "subject-before": claim(store, holder("x2", sub="carol", sid="s5", iat=NOW - 1)),
        "subject-after": claim(store, holder("x3", sub="carol", sid="s6", iat=NOW + 1)),
        "other": claim(store, holder("x4", sid="s7")),
    }
    assert revoked(store, indices) == {"in-revoked-session", "subject-before"}
    # a mark is forgotten after its `until`
    late = claim(store, holder("x5", sid="s9", until=NOW + 2000), now=NOW + 1000)
    assert statuses(store, now=NOW + 1000)[late] == 0


def test_a_session_end_sets_the_bit_at_that_instant(store: Store) -> None:
    idx = claim(store, holder("j", ends_at=NOW + 10, until=NOW + 100))
    quiet = claim(store, holder("k", ends_at=NOW + 500, until=NOW + 100))  # ends after it expires
    assert statuses(store, now=NOW + 9)[idx] == 0
    lst = statuses(store, now=NOW + 10)
    assert lst[idx] == 1 and lst[quiet] == 0


def test_version_moves_only_with_a_bit(store: Store) -> None:
    version, data = store.status_bits(SIZE, version=None, now=NOW)
    assert data == bytes(SIZE // 8)
    claim(store, holder("j"))  # starts VALID: no bit moved
    assert store.status_bits(SIZE, version=version, now=NOW) == (version, None)
    store.status_mark("jti", "j", at=None, until=NOW + 100, now=NOW)
    newer, data = store.status_bits(SIZE, version=version, now=NOW)
    assert newer != version and data is not None and any(data)


def test_purge_keeps_live_holders(store: Store) -> None:
    idx = claim(store, holder("live", until=NOW + 1000))
    claim(store, holder("gone", until=NOW + 10))
    store.purge(NOW + 20)
    assert store.status_claim(holder("other"), [idx], now=NOW + 20) is None
    assert store.status_claim(holder("live", until=NOW + 1000), [], now=NOW + 20) == idx


# -- allocation under contention: threads, and processes on the shared backends ----------


def test_claims_never_collide_across_threads(store: Store) -> None:
    size, threads, each = 128, 8, 12  # 96 of 128 indices: candidates collide all the time
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(each):
            idx = claim(store, holder(f"t{n}-{i}", sid=f"s{n}"), size=size)
            with lock:
                results.append(idx)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(results) == threads * each
    assert len(set(results)) == len(results)


def _claim_in_process(backend: str, location: str, prefix: str, n: int, barrier: t.Any, results: t.Any) -> None:
    store: Store = SQLiteStore(location) if backend == "sqlite" else RedisStore(location, prefix=prefix)
    barrier.wait()
    try:
        results.put([claim(store, holder(f"p{n}-{i}", sid=f"s{n}"), size=128) for i in range(16)])
    finally:
        store.close()


@pytest.mark.parametrize(
    "backend",
    ["sqlite", pytest.param("redis", marks=pytest.mark.redis), pytest.param("redis-cluster", marks=pytest.mark.redis)],
)
def test_claims_never_collide_across_processes(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        location = str(tmp_path / "shield.db")
        SQLiteStore(location).purge(NOW)  # creates the schema
    else:
        server = request.getfixturevalue("shared_redis" if backend == "redis" else "redis_cluster")
        location = server.url
    ctx = multiprocessing.get_context("spawn")
    n = 6  # 96 of 128 indices
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(backend, location, prefix, i, barrier, results)) for i in range(n)
    ]
    for p in procs:
        p.start()
    claimed = [idx for _ in range(n) for idx in results.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(claimed) == 96 and len(set(claimed)) == 96


def test_a_mark_covering_many_tokens_sets_them_all(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # On Redis, in batches (a key's revocation may cover every live token): batches of 7 here.
    monkeypatch.setattr("flask_jwt_shield.stores.redis.STATUS_MARK_BATCH", 7)
    indices = {f"t{i}": claim(store, holder(f"t{i}", sid=f"s{i}", until=NOW + 100 + i % 3)) for i in range(40)}
    other = claim(store, holder("other", kid="k2"))
    assert store.status_mark("kid", "k1", at=None, until=NOW + 1000, now=NOW) == 40
    assert revoked(store, {**indices, "other": other}) == set(indices)


# -- a claim made with the family's write (one transaction / round trip) --------------------


def _family(sid: str = "s1", jti: str = "r1") -> Family:
    return Family(
        sid=sid,
        sub="alice",
        created_at=NOW,
        expires_at=NOW + 1000,
        last_used_at=NOW,
        current_jti=jti,
        current_iat=NOW,
        claims={},
    )


def _rotate(store: Store, status: StatusClaim | None, *, jti: str = "r1", new_jti: str = "r2") -> Rotation:
    return store.rotate(
        "s1",
        jti,
        new_jti=new_jti,
        new_iat=NOW + 1,
        now=NOW + 1,
        idle_ttl=500,
        grace=0,
        ip=None,
        country=None,
        until=NOW + 2000,
        status=status,
    )


def test_a_new_family_claims_its_first_index_with_it(store: Store) -> None:
    first = StatusClaim(holder("a1"), status_candidates(SIZE, 8), NOW)
    store.create_family(_family(), max_sessions=10, idle_ttl=500, until=NOW + 2000, status=first)
    assert first.made and first.idx is not None
    assert store.get_family("s1") is not None
    assert store.status_claim(holder("a1"), [(first.idx + 1) % SIZE], now=NOW) == first.idx  # held by a1


def test_a_rotation_claims_first_and_spends_nothing_without_an_index(store: Store) -> None:
    store.create_family(_family(), max_sessions=10, idle_ttl=500, until=NOW + 2000)
    taken = claim(store, holder("other", until=NOW + 500))
    full = StatusClaim(holder("a2"), [taken] * 8, NOW + 1)
    assert _rotate(store, full).outcome == "unclaimed"
    assert full.made and full.idx is None
    family = store.get_family("s1")
    assert family is not None and family.current_jti == "r1"  # unspent: the retry is no reuse
    free = (taken + 1) % SIZE
    rotation = _rotate(store, StatusClaim(holder("a2"), [taken, free], NOW + 1))
    assert rotation.outcome == "rotated" and rotation.family is not None and rotation.family.current_jti == "r2"
    assert store.status_claim(holder("a2"), [(free + 1) % SIZE], now=NOW + 1) == free


def test_a_claim_that_fails_leaves_the_refresh_token_unspent(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_family(_family(), max_sessions=10, idle_ttl=500, until=NOW + 2000)
    backend = t.cast(t.Any, store).backend
    if backend == "memory":

        def fail(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
            raise StoreError("down")

        monkeypatch.setattr(store, "status_claim", fail)
    elif backend == "sqlite":

        def broken(*args: t.Any) -> t.NoReturn:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(store, "_status_claim", broken)
    else:  # a script error on the server: a record the claim script cannot read
        real = t.cast(t.Any, store)._claim_call

        def garbled(*args: t.Any) -> tuple[list[str], list[t.Any]]:
            keys, argv = real(*args)
            return keys, [argv[0], "{not json", *argv[2:]]

        monkeypatch.setattr(store, "_claim_call", garbled)
    with pytest.raises(StoreError):
        _rotate(store, StatusClaim(holder("a2"), status_candidates(SIZE, 8), NOW + 1))
    family = store.get_family("s1")
    assert family is not None and family.current_jti == "r1"
    monkeypatch.undo()
    assert _rotate(store, StatusClaim(holder("a2"), status_candidates(SIZE, 8), NOW + 1)).outcome == "rotated"


def test_sqlite_makes_one_transaction_of_the_write_and_its_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(str(tmp_path / "one.db"))
    begun: list[int] = []
    real = store._begin_immediate

    def counted(conn: t.Any) -> None:
        begun.append(1)
        real(conn)

    monkeypatch.setattr(store, "_begin_immediate", counted)
    monkeypatch.setattr(store, "_last_purge", float("inf"))  # no purge in between
    first = StatusClaim(holder("a1"), status_candidates(SIZE, 8), NOW)
    store.create_family(_family(), max_sessions=10, idle_ttl=500, until=NOW + 2000, status=first)
    assert len(begun) == 1 and first.idx is not None
    second = StatusClaim(holder("a2"), status_candidates(SIZE, 8), NOW + 1)
    assert _rotate(store, second).outcome == "rotated"
    assert len(begun) == 2 and second.idx is not None
    store.close()


@pytest.mark.redis
@pytest.mark.parametrize("server", ["shared_redis", "redis_cluster"])
def test_redis_claims_in_the_pipeline_even_after_a_script_flush(request: pytest.FixtureRequest, server: str) -> None:
    # The claim goes by EVALSHA in the family write's pipeline; a server that lost its
    # scripts (a restart, SCRIPT FLUSH) answers NOSCRIPT, and that script runs again.
    url = request.getfixturevalue(server).url
    store = RedisStore(url, prefix=f"t{uuid.uuid4().hex[:12]}")
    try:
        t.cast(t.Any, store)._client().script_flush()
        first = StatusClaim(holder("a1"), status_candidates(SIZE, 8), NOW)
        store.create_family(_family(), max_sessions=10, idle_ttl=500, until=NOW + 2000, status=first)
        assert first.made and first.idx is not None and store.get_family("s1") is not None
        t.cast(t.Any, store)._client().script_flush()
        second = StatusClaim(holder("a2"), status_candidates(SIZE, 8), NOW + 1)
        assert _rotate(store, second).outcome == "rotated" and second.idx is not None
        assert second.idx != first.idx
    finally:
        store.close()
