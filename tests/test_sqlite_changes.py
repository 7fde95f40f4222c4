"""The SQLite store's change counter: the warm check reads one counter from the store's own
file, and no remembered "not revoked" outlives a revocation committed before a check starts.

Cross-process tests spawn fresh interpreters (see test_store_contract.py for why not fork).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import time
import typing as t
from pathlib import Path

import pytest

from flask_jwt_shield.errors import StoreError
from flask_jwt_shield.stores import SQLiteStore

NOW = 1_800_000_000.0
FAR = NOW + 10_000


def check(store: SQLiteStore, jti: str) -> str | None:
    return store.check(jti=jti, sid=None, sub="alice", kid="k", iat=NOW, now=NOW)


def _answers_from_memory(store: SQLiteStore, jti: str) -> bool:
    """True if ``check`` answers without touching the database (this thread's connection is
    swapped for a closed one meanwhile: any query raises)."""
    local = store._local
    conn = local.conn
    blocked = sqlite3.connect(":memory:")
    blocked.close()
    local.conn, local.pid = blocked, os.getpid()
    try:
        return check(store, jti) is None
    except StoreError:
        return False
    finally:
        local.conn = conn


def test_a_check_between_the_counter_move_and_the_commit_remembers_nothing(tmp_path: Path) -> None:
    """The window the table copy closes: the file already holds the revocation's counter
    value, the commit is not visible yet. A check then answers from the old snapshot (the
    request is concurrent with the revocation) but must not remember that answer under the
    new value, or every later check would trust it."""
    path = str(tmp_path / "shield.db")
    reader, writer = SQLiteStore(path), SQLiteStore(path)
    for _ in range(3):
        assert check(reader, "warm") is None
    assert _answers_from_memory(reader, "warm")
    conn = writer._connection()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO revoked (kind, value, until) VALUES ('jti', 'warm', ?)", (FAR,))
    writer._move_changes(conn)  # as _write does, before COMMIT
    assert check(reader, "warm") is None  # the old snapshot: not revoked yet
    assert check(reader, "warm") is None
    conn.execute("COMMIT")
    assert check(reader, "warm") == "token"  # the first check after the commit
    writer.close()
    reader.close()


def test_a_counter_ahead_of_the_table_stops_the_view_until_the_next_write(tmp_path: Path) -> None:
    """A writer that moved the file and then rolled back or died before its commit: no check
    trusts the view (each one reads the tables) until the next revoking write."""
    path = str(tmp_path / "shield.db")
    store = SQLiteStore(path)
    store.revoke("jti", "other", until=FAR)
    for _ in range(3):
        assert check(store, "warm") is None
    assert _answers_from_memory(store, "warm")
    fd = os.open(path + ".changes", os.O_RDWR)
    try:
        ahead = int.from_bytes(os.pread(fd, 8, 0), "little") + 5
        os.pwrite(fd, ahead.to_bytes(8, "little"), 0)
    finally:
        os.close(fd)
    for _ in range(3):
        assert check(store, "warm") is None
        assert not _answers_from_memory(store, "warm")
    SQLiteStore(path).revoke("jti", "another", until=FAR)  # the next revoking write resyncs
    for _ in range(2):
        assert check(store, "warm") is None
    assert _answers_from_memory(store, "warm")
    store.close()


def _write_in_child(path: str, what: str) -> None:
    store = SQLiteStore(path, local_view=what != "revoke-no-view")
    if what == "event":
        store.add_event({"at": NOW, "kind": "login", "subject": "alice"}, retention=100)
    else:
        store.revoke("jti", "warm", until=FAR)
    store.close()


def _in_child(path: str, what: str) -> None:
    child = multiprocessing.get_context("spawn").Process(target=_write_in_child, args=(path, what))
    child.start()
    child.join(30)
    assert child.exitcode == 0


def test_writes_that_cannot_revoke_keep_every_processs_view(tmp_path: Path) -> None:
    path = str(tmp_path / "shield.db")
    store = SQLiteStore(path)
    for _ in range(3):
        assert check(store, "warm") is None
    _in_child(path, "event")
    assert _answers_from_memory(store, "warm")  # PRAGMA data_version would have moved
    # a store without a local view (the CLI, JWT_SHIELD_REVOCATION_MAX_DELAY = 0) still
    # moves the counter for everybody else
    _in_child(path, "revoke-no-view")
    assert check(store, "warm") == "token"
    store.close()


def test_the_change_counter_is_the_stores_own_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shield.db")
    store = SQLiteStore(path)
    assert check(store, "warm") is None
    store.revoke("jti", "x", until=FAR)
    assert os.path.getsize(path + ".changes") == 8
    (stored,) = store._connection().execute("SELECT value FROM changes").fetchone()
    assert int.from_bytes(Path(path + ".changes").read_bytes(), "little") == stored
    store.close()
    assert check(store, "x") == "token"  # reopens after close
    store.close()


def test_an_unwritable_change_counter_is_a_store_error(tmp_path: Path) -> None:
    path = str(tmp_path / "shield.db")
    os.mkdir(path + ".changes")  # a directory cannot be opened for writing
    store = SQLiteStore(path)
    with pytest.raises(StoreError):
        check(store, "warm")
    with pytest.raises(StoreError):
        store.revoke("jti", "x", until=FAR)


# -- the race, across processes ------------------------------------------------------------


def _checker(path: str, rounds: int, conn: t.Any) -> None:
    """Keep the token warm, then check it in a tight loop while the other process revokes
    it. Count every "not revoked" after the revoker said its revocation returned, and every
    "not revoked" after a "revoked" (the answer never goes back)."""
    store = SQLiteStore(path)
    stale = hits = 0
    for i in range(rounds):
        jti = f"race-{i}"
        for _ in range(3):
            check(store, jti)
        conn.send("warm")
        revoked = False
        while not conn.poll():
            answer = check(store, jti)
            if answer == "token":
                revoked = True
            elif revoked:
                stale += 1
            else:
                hits += 1
        conn.recv()  # the revocation has committed (revoke() returned)
        for _ in range(3):
            if check(store, jti) != "token":
                stale += 1
    conn.send((stale, hits))
    store.close()


def _noise(path: str, stop: t.Any) -> None:
    """Other writers meanwhile: revocations of other tokens and events move the counter (or
    not) at random moments."""
    store = SQLiteStore(path)
    n = 0
    while not stop.is_set():
        n += 1
        if n % 2:
            store.revoke("jti", f"noise-{n}", until=FAR)
        else:
            store.add_event({"at": NOW, "kind": "login", "subject": "bob"}, retention=100)
        time.sleep(random.uniform(0, 0.002))
    store.close()


def test_no_stale_not_revoked_after_a_revocation_commits_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shield.db")
    revoker = SQLiteStore(path)
    revoker.revoke("jti", "setup", until=FAR)  # creates the schema and the counter
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    stop = ctx.Event()
    rounds = 150
    checker = ctx.Process(target=_checker, args=(path, rounds, theirs))
    noise = ctx.Process(target=_noise, args=(path, stop))
    checker.start()
    noise.start()
    try:
        for i in range(rounds):
            assert ours.poll(30)
            assert ours.recv() == "warm"
            time.sleep(random.uniform(0, 0.003))
            revoker.revoke("jti", f"race-{i}", until=FAR)
            ours.send("committed")
        assert ours.poll(60)
        stale, hits = ours.recv()
    finally:
        stop.set()
        checker.join(60)
        noise.join(60)
        revoker.close()
    assert checker.exitcode == 0
    assert noise.exitcode == 0
    assert stale == 0
    assert hits > rounds  # the checker did answer from its view during the races
