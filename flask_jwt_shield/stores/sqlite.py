"""``sqlite:///path.db``: the embedded default for one machine.

Persistent (revocations survive a restart) and shared by the worker processes of one host:
WAL journal, a busy timeout, one connection per thread and process, and ``BEGIN IMMEDIATE``
around every read-modify-write so that two workers cannot rotate one refresh token twice.

A warm request reads no table and runs no SQLite statement: it reads the *change counter*,
eight bytes at the start of the store's own file ``<database>.changes``, mapped read-only
(no system call: on a loaded machine a ``pread`` per request cost as much as the rest of
the check), and while the counter stands still a token found not revoked before
is answered from :class:`~flask_jwt_shield.stores.view.NotRevokedCache`.

Every write that can revoke (``_write(revoking=True)``) moves the counter, holding SQLite's
write lock, *before* its ``COMMIT``: it writes the next value both into the ``changes``
table and into the file. So by the time a revocation is visible in the database, the file
already holds a newer value, and any check that starts after the commit reads a counter its
view has not seen, reads the tables again and refuses the token: revocations apply on the
very next request in every process, as with ``PRAGMA data_version`` before.

The converse ordering -- the file moved but the commit not yet visible (or rolled back) --
is what the table copy is for: a check remembers "not revoked" only when the ``changes``
value in the snapshot it read equals the counter it read from the file before. A check that
read the moved file but an older snapshot answers from that snapshot and remembers nothing,
so no answer is ever tied to a counter value whose commit it did not see. Proof in
:meth:`SQLiteStore.check`; tests/test_sqlite_changes.py races it across processes.

The store never maps or opens SQLite's own files (the database, ``-wal``, ``-shm``) itself:
closing *any* descriptor of a file drops every POSIX lock the process holds on it
(fcntl(2)), SQLite's WAL write lock among them, which would let a second process write
during one of ours (two rotations of one refresh token). tests/test_store_contract.py pins
that. The ``.changes`` file is the store's own and is never locked.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import random
import re
import sqlite3
import threading
import time
import typing as t
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import StoreError
from .base import Family
from .base import RevocationKind
from .base import Rotation
from .base import StatusClaim
from .base import StatusHolder
from .base import StatusKind
from .base import Use
from .view import NotRevokedCache

logger = logging.getLogger("flask_jwt_shield")

_PURGE_EVERY = 60.0
#: Seconds a write may wait for the database lock, retries included.
BUSY_BUDGET = 10.0
#: Default bound of :meth:`SQLiteStore.remember_once` (all namespaces together).
MAX_REMEMBERED = 1_000_000
# The size bound is enforced every this many remember_once calls of one process (a count
# over the table is not free), so the table may overshoot by that much (at most an eighth
# of the bound) between checks.
_BOUND_EVERY = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revoked (
    kind TEXT NOT NULL, value TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS not_before (
    sub TEXT PRIMARY KEY, at REAL NOT NULL, until REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS families (
    sid TEXT PRIMARY KEY, sub TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, last_used_at REAL NOT NULL,
    current_jti TEXT NOT NULL, current_iat REAL NOT NULL,
    previous_jti TEXT, rotated_at REAL, revoked INTEGER NOT NULL DEFAULT 0,
    last_ip TEXT, last_country TEXT, claims TEXT NOT NULL, kid TEXT
);
CREATE INDEX IF NOT EXISTS families_sub ON families (sub, created_at);
CREATE TABLE IF NOT EXISTS spent (
    jti TEXT PRIMARY KEY, sid TEXT NOT NULL, at REAL NOT NULL, ip TEXT, until REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS remembered (
    namespace TEXT NOT NULL, key TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS remembered_until ON remembered (until);
CREATE TABLE IF NOT EXISTS remembered_floor (namespace TEXT PRIMARY KEY, floor REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profiles (sub TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    subject TEXT, jti TEXT, sid TEXT, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, id);
CREATE INDEX IF NOT EXISTS events_jti ON events (jti, id);
CREATE INDEX IF NOT EXISTS events_sid ON events (sid, id);
CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS status_slot (
    idx INTEGER PRIMARY KEY, jti TEXT NOT NULL, sid TEXT, sub TEXT NOT NULL, kid TEXT,
    iat REAL NOT NULL, until REAL NOT NULL, ends_at REAL, status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS status_slot_jti ON status_slot (jti);
CREATE INDEX IF NOT EXISTS status_slot_sid ON status_slot (sid);
CREATE INDEX IF NOT EXISTS status_slot_sub ON status_slot (sub);
CREATE INDEX IF NOT EXISTS status_slot_kid ON status_slot (kid);
CREATE INDEX IF NOT EXISTS status_slot_ends ON status_slot (ends_at) WHERE ends_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS status_mark (
    kind TEXT NOT NULL, value TEXT NOT NULL, at REAL, until REAL NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS status_version (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS boxes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, box TEXT NOT NULL, key TEXT NOT NULL,
    value TEXT NOT NULL, until REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS boxes_key ON boxes (box, key);
CREATE INDEX IF NOT EXISTS boxes_order ON boxes (box, seq);
"""
_SCHEMA_NAMES = frozenset(re.findall(r"IF NOT EXISTS (\w+)", _SCHEMA))
# No row until the first revoking write (a missing row reads as 0, like an empty file):
# opening a store never writes, so it never waits for another process's write lock.
_CHANGES = "SELECT coalesce((SELECT value FROM changes WHERE id = 0), 0)"

_CHECK = """
SELECT
  (SELECT 1 FROM revoked WHERE kind = 'jti' AND value = ? AND until > ?),
  (SELECT 1 FROM revoked WHERE kind = 'sid' AND value = ? AND until > ?),
  (SELECT at FROM not_before WHERE sub = ? AND until > ?),
  (SELECT 1 FROM revoked WHERE kind = 'kid' AND value = ? AND until > ?),
  (SELECT value FROM changes WHERE id = 0)
"""

_FAMILY_COLUMNS = (
    "sid, sub, created_at, expires_at, last_used_at, current_jti, current_iat,"
    " previous_jti, rotated_at, revoked, last_ip, last_country, claims, kid"
)
# A family ended by its subject's not-before instant or by the revocation of its key
# (Family.ended_by, in SQL): parameters (now, now).
_ENDED = (
    " (created_at <= coalesce((SELECT at FROM not_before WHERE not_before.sub = families.sub AND until > ?), -1)"
    " OR EXISTS (SELECT 1 FROM revoked WHERE kind = 'kid' AND value = families.kid AND until > ?))"
)


def _family(row: tuple[t.Any, ...]) -> Family:
    return Family(
        sid=row[0],
        sub=row[1],
        created_at=row[2],
        expires_at=row[3],
        last_used_at=row[4],
        current_jti=row[5],
        current_iat=row[6],
        previous_jti=row[7],
        rotated_at=row[8],
        revoked=bool(row[9]),
        last_ip=row[10],
        last_country=row[11],
        claims=json.loads(row[12]),
        kid=row[13],
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file written by an earlier version up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(families)")}
    if "kid" not in columns:
        try:
            conn.execute("ALTER TABLE families ADD COLUMN kid TEXT")
        except sqlite3.OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise


def _has_schema(conn: sqlite3.Connection) -> bool:
    """Whether every table and index of :data:`_SCHEMA` exists (a read: opening a file
    that is already set up writes nothing)."""
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    return _SCHEMA_NAMES <= names


def _close_changes(fd: int, view: mmap.mmap) -> None:
    view.close()
    os.close(fd)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, extended codes included (``BUSY_SNAPSHOT`` ...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class SQLiteStore:
    """State in one SQLite file. ``path`` is a filesystem path.

    :param local_view: answer repeat checks of a token from memory while the change
        counter in ``<path>.changes`` stands still (``False``: query on every check).
    :param max_remembered: the bound of :meth:`remember_once` (all namespaces together).
    """

    def __init__(self, path: str, *, local_view: bool = True, max_remembered: int = MAX_REMEMBERED) -> None:
        self.path = path
        self._local = threading.local()
        self._last_purge = 0.0
        self.view = NotRevokedCache() if local_view else None
        self._max_remembered = max_remembered
        self._remembered_calls = 0
        self._bound_every = max(1, min(_BOUND_EVERY, max_remembered // 8))
        #: How many times a write transaction was begun again after SQLite answered busy.
        self.busy_retries = 0
        self._retries_lock = threading.Lock()
        self._changes_path = path + ".changes"
        self._changes_fd: int | None = None
        self._changes_map: mmap.mmap | None = None
        self._changes_lock = threading.Lock()
        self._close_changes: t.Callable[[], None] = lambda: None

    # -- connections -----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        # A connection must not cross a fork (gunicorn preloading): reopen in the child.
        if conn is not None and local.pid == os.getpid():
            return conn
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open the SQLite store {self.path!r}: {exc}") from exc
        conn = self._open()
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        """A new connection with the schema in place, retried within the busy budget.

        Processes that open a new file at once race to create it: switching the journal to
        WAL and creating the tables are writes, and a peer's commit between this
        connection's read of the schema and its write answers "busy" at once, without the
        busy handler (one open in a few hundred lost that way under contention). Every
        statement here is idempotent, so the whole open is tried again.
        """
        deadline = time.monotonic() + BUSY_BUDGET
        while True:
            conn: sqlite3.Connection | None = None
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_BUDGET, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout={int(BUSY_BUDGET * 1000)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                if not _has_schema(conn):
                    conn.executescript(_SCHEMA)
                _migrate(conn)
                return conn
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                left = deadline - time.monotonic()
                if not (isinstance(exc, sqlite3.OperationalError) and _busy(exc)) or left < 0.01:
                    raise StoreError(f"cannot open the SQLite store {self.path!r}: {exc}") from exc
            with self._retries_lock:
                self.busy_retries += 1
            time.sleep(min(left / 2, random.uniform(0.001, 0.02)))  # noqa: S311 (jitter)

    def _changes_file(self) -> int:
        """The descriptor of ``<path>.changes``, opened once per store, and its first eight
        bytes mapped read-only for the warm check (both kept across a fork: ``pread`` and
        ``pwrite`` use no file offset, the mapping is shared)."""
        fd = self._changes_fd
        if fd is not None:
            return fd
        with self._changes_lock:
            if self._changes_fd is None:
                try:
                    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                    fd = os.open(self._changes_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                    try:
                        # A new file is empty (counter 0). Growing it to eight bytes adds
                        # zeros and never touches bytes a writer already wrote; the
                        # mapping needs them. The store never shrinks the file.
                        if os.fstat(fd).st_size < 8:
                            os.ftruncate(fd, 8)
                        view = mmap.mmap(fd, 8, access=mmap.ACCESS_READ)
                    except BaseException:
                        os.close(fd)
                        raise
                except (OSError, ValueError) as exc:
                    raise StoreError(
                        f"cannot open the SQLite store's change counter {self._changes_path!r}: {exc}"
                    ) from exc
                self._changes_map = view
                self._changes_fd = fd
                self._close_changes = weakref.finalize(self, _close_changes, fd, view)
            return self._changes_fd

    def _move_changes(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction (SQLite's write lock held, so no other writer moves it
        meanwhile), before ``COMMIT``: the next counter value, into the table and the file."""
        fd = self._changes_file()
        (stored,) = conn.execute(_CHANGES).fetchone()
        value = max(stored, int.from_bytes(os.pread(fd, 8, 0), "little")) + 1
        conn.execute(
            "INSERT INTO changes (id, value) VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET value = excluded.value",
            (value,),
        )
        os.pwrite(fd, value.to_bytes(8, "little"), 0)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    @contextmanager
    def _write(self, *, revoking: bool = True) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed whole or not at all.

        ``revoking=False`` for writes that cannot revoke a token (events, profiles, one-time
        keys, purges): the change counter stays put, so no process forgets its view of
        "not revoked". Every other write moves the counter before it commits.
        """
        try:
            conn = self._connection()
            self._begin_immediate(conn)
            try:
                yield conn
                if revoking:
                    self._move_changes(conn)  # before COMMIT: see the module docstring
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc
        if revoking and self.view is not None:
            self.view.invalidate()
        now = time.time()
        if now - self._last_purge > _PURGE_EVERY:
            self._last_purge = now
            try:
                self.purge(now)
            except StoreError as exc:  # the write above is committed: never a 503 for it
                logger.warning("SQLite store %r: purge skipped: %s", self.path, exc)

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, retried while SQLite answers "busy" or "locked" within the
        busy budget (:data:`BUSY_BUDGET` seconds in all).

        The busy handler makes most contention wait, but some cases answer at once without
        calling it (a snapshot that moved under the connection, a peer recovering or
        resetting the WAL file, a lock held by a connection that is closing): a legitimate
        write must not lose to those. Nothing has run in the transaction yet, so trying
        again is safe. Each retry shortens the busy timeout to what is left of the budget.
        """
        deadline = time.monotonic() + BUSY_BUDGET
        retried = False
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    left = deadline - time.monotonic()
                    if not _busy(exc) or left < 0.01:
                        raise
                with self._retries_lock:
                    self.busy_retries += 1
                retried = True
                time.sleep(min(left / 2, random.uniform(0.001, 0.02)))  # noqa: S311 (jitter)
                conn.execute(f"PRAGMA busy_timeout={max(1, int((deadline - time.monotonic()) * 1000))}")
        finally:
            if retried:
                conn.execute(f"PRAGMA busy_timeout={int(BUSY_BUDGET * 1000)}")

    # -- revocation --------------------------------------------------------------------

    def check(self, *, jti: str, sid: str | None, sub: str, kid: str, iat: float, now: float) -> str | None:
        """Why the token is revoked, or ``None``; from the local view while the change
        counter stands still.

        Why a remembered "not revoked" never hides a revocation committed before the check
        that trusts it starts: the answer was remembered in a generation whose signal is the
        counter value ``c`` read from the file, and only if the snapshot it came from holds
        ``c`` in the ``changes`` table, so that snapshot includes every commit up to the one
        that wrote ``c`` (values grow in commit order: each is written under the write
        lock). A revocation committed later wrote a larger value into the file before its
        commit, so a check starting after that commit reads a value other than ``c`` and
        misses the view. (The signal moves only with the generation, so a matching signal
        and a matching generation mean the same ``c``: :meth:`NotRevokedCache.observe`.)
        """
        view = self.view
        generation = 0
        signal = b""
        if view is not None:
            changes = self._changes_map
            try:
                if changes is None:
                    self._changes_file()
                    changes = t.cast(mmap.mmap, self._changes_map)
                signal = changes[:8]  # no system call; the page is the file's page cache
            except (OSError, ValueError) as exc:
                raise StoreError(f"SQLite store {self.path!r}: change counter: {exc}") from exc
            if view.holds(jti, signal):
                return None
            view.reset_after_fork()
            generation = view.observe(signal)
        with self._read() as conn:
            row = conn.execute(_CHECK, (jti, now, sid or "", now, sub, now, kid, now)).fetchone()
        if row[0]:
            return "token"
        if row[1] and sid is not None:
            return "family"
        if row[2] is not None and iat <= row[2]:
            return "subject"
        if row[3]:
            return "key"
        if view is not None and (row[4] or 0) == int.from_bytes(signal, "little"):
            view.remember(jti, generation)
        return None

    def revoke(self, kind: RevocationKind, value: str, until: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO revoked (kind, value, until) VALUES (?, ?, ?)"
                " ON CONFLICT (kind, value) DO UPDATE SET until = max(until, excluded.until)",
                (kind, value, until),
            )

    def is_revoked(self, kind: RevocationKind, value: str, *, now: float) -> bool:
        with self._read() as conn:
            row = conn.execute(
                "SELECT 1 FROM revoked WHERE kind = ? AND value = ? AND until > ?", (kind, value, now)
            ).fetchone()
        return row is not None

    def revoke_subject(self, sub: str, at: float, until: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO not_before (sub, at, until) VALUES (?, ?, ?) ON CONFLICT (sub) DO UPDATE"
                " SET at = max(at, excluded.at), until = max(until, excluded.until)",
                (sub, at, until),
            )
            # In the same transaction: every session the subject had ends with it, so no
            # rotation can commit after this one (Family.ended_by).
            ended = conn.execute(
                "SELECT sid FROM families WHERE sub = ? AND revoked = 0 AND created_at <= ?", (sub, at)
            ).fetchall()
            for (sid,) in ended:
                self._revoke_family(conn, sid, until)

    def not_before(self, sub: str, now: float) -> float | None:
        with self._read() as conn:
            row = conn.execute("SELECT at FROM not_before WHERE sub = ? AND until > ?", (sub, now)).fetchone()
        return row[0] if row else None

    # -- refresh families --------------------------------------------------------------

    def create_family(
        self, family: Family, *, max_sessions: int, idle_ttl: float, until: float, status: StatusClaim | None = None
    ) -> list[str]:
        f = family
        with self._write() as conn:
            if status is not None:  # one transaction for both: one commit per login
                status.idx = self._status_claim(conn, status.holder, status.candidates, status.now)
                status.made = True
            conn.execute(
                f"INSERT INTO families ({_FAMILY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    f.sid,
                    f.sub,
                    f.created_at,
                    f.expires_at,
                    f.last_used_at,
                    f.current_jti,
                    f.current_iat,
                    f.previous_jti,
                    f.rotated_at,
                    int(f.revoked),
                    f.last_ip,
                    f.last_country,
                    json.dumps(f.claims),
                    f.kid,
                ),
            )
            not_before = conn.execute(
                "SELECT at FROM not_before WHERE sub = ? AND until > ?", (f.sub, f.created_at)
            ).fetchone()
            if f.ended_by(not_before[0] if not_before else None, False):
                self._revoke_family(conn, f.sid, until)  # a login racing "log out everywhere"
            rows = conn.execute(
                "SELECT sid FROM families WHERE sub = ? AND revoked = 0 AND expires_at > ?"
                " AND last_used_at + ? > ? ORDER BY created_at, rowid",
                (f.sub, f.created_at, idle_ttl, f.created_at),
            ).fetchall()
            dropped = [r[0] for r in rows[: max(0, len(rows) - max_sessions)]]
            for sid in dropped:
                self._revoke_family(conn, sid, until)
        return dropped

    def rotate(
        self,
        sid: str,
        jti: str,
        *,
        new_jti: str,
        new_iat: float,
        now: float,
        idle_ttl: float,
        grace: float,
        ip: str | None,
        country: str | None,
        until: float,
        kid: str | None = None,
        new_kid: str | None = None,
        status: StatusClaim | None = None,
    ) -> Rotation:
        with self._write() as conn:
            if status is not None:
                # First, in the same transaction: a claim that fails rolls the whole
                # rotation back, and one that finds no free index writes nothing.
                status.idx = self._status_claim(conn, status.holder, status.candidates, status.now)
                status.made = True
                if status.idx is None:
                    return Rotation("unclaimed")
            row = conn.execute(f"SELECT {_FAMILY_COLUMNS} FROM families WHERE sid = ?", (sid,)).fetchone()
            if row is None:
                return Rotation("unknown")
            family = _family(row)
            was_revoked = family.revoked
            not_before, key_revoked = conn.execute(
                "SELECT (SELECT at FROM not_before WHERE sub = ? AND until > ?),"
                " (SELECT 1 FROM revoked WHERE kind = 'kid' AND value = ? AND until > ?)",
                (family.sub, now, kid, now),
            ).fetchone()
            outcome = family.spend(
                jti,
                new_jti=new_jti,
                new_iat=new_iat,
                now=now,
                idle_ttl=idle_ttl,
                grace=grace,
                ip=ip,
                country=country,
                not_before=not_before,
                key_revoked=bool(key_revoked),
                new_kid=new_kid,
            )
            if outcome == "revoked" and not was_revoked:
                self._revoke_family(conn, sid, until)
            if outcome == "reused":
                spent = conn.execute("SELECT at, ip FROM spent WHERE jti = ?", (jti,)).fetchone()
                self._revoke_family(conn, sid, until)
                return Rotation("reused", family, Use(spent[0], spent[1]) if spent else None)
            if outcome == "rotated":
                conn.execute(
                    "INSERT OR REPLACE INTO spent (jti, sid, at, ip, until) VALUES (?, ?, ?, ?, ?)",
                    (jti, sid, now, ip, family.expires_at),
                )
            if outcome in ("rotated", "grace"):
                conn.execute(
                    "UPDATE families SET current_jti = ?, current_iat = ?, previous_jti = ?, rotated_at = ?,"
                    " last_used_at = ?, last_ip = ?, last_country = ?, kid = ? WHERE sid = ?",
                    (
                        family.current_jti,
                        family.current_iat,
                        family.previous_jti,
                        family.rotated_at,
                        family.last_used_at,
                        family.last_ip,
                        family.last_country,
                        family.kid,
                        sid,
                    ),
                )
            return Rotation(outcome, family)

    def get_family(self, sid: str) -> Family | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {_FAMILY_COLUMNS} FROM families WHERE sid = ?", (sid,)).fetchone()
        return _family(row) if row else None

    def revoke_family(self, sid: str, until: float) -> Family | None:
        with self._write() as conn:
            self._revoke_family(conn, sid, until)
            row = conn.execute(f"SELECT {_FAMILY_COLUMNS} FROM families WHERE sid = ?", (sid,)).fetchone()
        return _family(row) if row else None

    @staticmethod
    def _revoke_family(conn: sqlite3.Connection, sid: str, until: float) -> None:
        conn.execute("UPDATE families SET revoked = 1 WHERE sid = ?", (sid,))
        conn.execute(
            "INSERT INTO revoked (kind, value, until) VALUES ('sid', ?, ?)"
            " ON CONFLICT (kind, value) DO UPDATE SET until = max(until, excluded.until)",
            (sid, until),
        )

    def families(self, sub: str, *, now: float, idle_ttl: float) -> list[Family]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_FAMILY_COLUMNS} FROM families WHERE sub = ? AND revoked = 0"
                f" AND expires_at > ? AND last_used_at + ? > ? AND NOT {_ENDED} ORDER BY created_at, rowid",
                (sub, now, idle_ttl, now, now, now),
            ).fetchall()
        return [_family(r) for r in rows]

    # -- detector state and events -------------------------------------------------------

    def get_profile(self, sub: str) -> dict[str, t.Any] | None:
        with self._read() as conn:
            row = conn.execute("SELECT data FROM profiles WHERE sub = ?", (sub,)).fetchone()
        return t.cast(dict[str, t.Any], json.loads(row[0])) if row else None

    def put_profile(self, sub: str, profile: dict[str, t.Any]) -> None:
        with self._write(revoking=False) as conn:
            conn.execute("INSERT OR REPLACE INTO profiles (sub, data) VALUES (?, ?)", (sub, json.dumps(profile)))

    def add_event(self, event: dict[str, t.Any], *, retention: int) -> None:
        with self._write(revoking=False) as conn:
            cursor = conn.execute(
                "INSERT INTO events (at, kind, subject, jti, sid, data) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event["at"],
                    event["kind"],
                    event.get("subject"),
                    event.get("jti"),
                    event.get("sid"),
                    json.dumps(event),
                ),
            )
            # Ids grow by one per event, so the newest id bounds the table by primary key.
            conn.execute("DELETE FROM events WHERE id <= ?", ((cursor.lastrowid or 0) - retention,))

    def events(
        self,
        *,
        subject: str | None = None,
        jti: str | None = None,
        sid: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, t.Any]]:
        where: list[str] = []
        params: list[t.Any] = []
        for column, value in (("subject", subject), ("jti", jti), ("sid", sid), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        sql = "SELECT data FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._read() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- one-time keys (the DPoP replay cache) ---------------------------------------------

    def remember_once(self, namespace: str, key: str, until: float, *, now: float) -> bool:
        self._remembered_calls += 1
        with self._write(revoking=False) as conn:
            row = conn.execute("SELECT floor FROM remembered_floor WHERE namespace = ?", (namespace,)).fetchone()
            if row is not None and until <= row[0]:
                return False  # it may be a key dropped to stay within the bound
            # Inserted, or an expired entry replaced: one row changed. A live entry: none.
            changed = conn.execute(
                "INSERT INTO remembered (namespace, key, until) VALUES (?, ?, ?) ON CONFLICT (namespace, key)"
                " DO UPDATE SET until = excluded.until WHERE remembered.until <= ?",
                (namespace, key, until, now),
            ).rowcount
            if self._remembered_calls % self._bound_every == 0:
                self._bound_remembered(conn, now)
        return changed == 1

    def _bound_remembered(self, conn: sqlite3.Connection, now: float) -> None:
        conn.execute("DELETE FROM remembered WHERE until <= ?", (now,))
        (count,) = conn.execute("SELECT count(*) FROM remembered").fetchone()
        excess = count - self._max_remembered
        if excess <= 0:
            return
        dropped = conn.execute(
            "SELECT namespace, max(until) FROM (SELECT namespace, until FROM remembered ORDER BY until LIMIT ?)"
            " GROUP BY namespace",
            (excess,),
        ).fetchall()
        conn.execute(
            "DELETE FROM remembered WHERE (namespace, key) IN"
            " (SELECT namespace, key FROM remembered ORDER BY until LIMIT ?)",
            (excess,),
        )
        for namespace, floor in dropped:
            conn.execute(
                "INSERT INTO remembered_floor (namespace, floor) VALUES (?, ?)"
                " ON CONFLICT (namespace) DO UPDATE SET floor = max(floor, excluded.floor)",
                (namespace, floor),
            )

    # -- the status list -----------------------------------------------------------------
    # One row per index a live (or not yet reclaimed) token holds; its bit is the row's
    # ``status``, and the list is rendered from the rows with status 1. None of these
    # writes can revoke a token at this app (the status list speaks to other services),
    # so they leave the change counter alone.

    def status_claim(self, holder: StatusHolder, candidates: t.Sequence[int], *, now: float) -> int | None:
        with self._write(revoking=False) as conn:
            return self._status_claim(conn, holder, candidates, now)

    def _status_claim(
        self, conn: sqlite3.Connection, holder: StatusHolder, candidates: t.Sequence[int], now: float
    ) -> int | None:
        row = conn.execute(
            "SELECT idx FROM status_slot WHERE jti = ? AND until > ? LIMIT 1", (holder.jti, now)
        ).fetchone()
        if row is not None:
            return int(row[0])
        for idx in candidates:
            old = conn.execute("SELECT until, status FROM status_slot WHERE idx = ?", (idx,)).fetchone()
            if old is not None and old[0] > now:
                continue
            status = 1 if self._status_marked(conn, holder, now) else 0
            ends_at = holder.ends_at if holder.ends_at is not None and holder.ends_at < holder.until else None
            conn.execute(
                "INSERT OR REPLACE INTO status_slot (idx, jti, sid, sub, kid, iat, until, ends_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (idx, holder.jti, holder.sid, holder.sub, holder.kid, holder.iat, holder.until, ends_at, status),
            )
            if status != (old[1] if old is not None else 0):
                self._status_moved(conn)
            return idx
        return None

    @staticmethod
    def _status_marked(conn: sqlite3.Connection, holder: StatusHolder, now: float) -> bool:
        kinds: tuple[StatusKind, ...] = ("jti", "sid", "sub", "kid")
        for kind in kinds:
            value = getattr(holder, kind)
            if value is None:
                continue
            mark = conn.execute(
                "SELECT at FROM status_mark WHERE kind = ? AND value = ? AND until > ?", (kind, value, now)
            ).fetchone()
            if mark is not None and holder.marked_by(kind, value, mark[0]):
                return True
        return False

    @staticmethod
    def _status_moved(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO status_version (id, value) VALUES (0, 1) ON CONFLICT (id) DO UPDATE SET value = value + 1"
        )

    def status_mark(self, kind: StatusKind, value: str, *, at: float | None, until: float, now: float) -> int:
        if kind not in ("jti", "sid", "sub", "kid"):
            raise ValueError(kind)
        with self._write(revoking=False) as conn:
            old = conn.execute(
                "SELECT at, until FROM status_mark WHERE kind = ? AND value = ? AND until > ?", (kind, value, now)
            ).fetchone()
            if old is not None:
                at = max(at, old[0]) if at is not None and old[0] is not None else at
                until = max(until, old[1])
            conn.execute(
                "INSERT OR REPLACE INTO status_mark (kind, value, at, until) VALUES (?, ?, ?, ?)",
                (kind, value, at, until),
            )
            # kind is one of four column names, checked above.
            sql = f"UPDATE status_slot SET status = 1 WHERE {kind} = ? AND until > ? AND status = 0"
            params: tuple[t.Any, ...] = (value, now)
            if kind == "sub":
                sql += " AND iat <= ?"
                params += (at,)
            changed = conn.execute(sql, params).rowcount
            if changed:
                self._status_moved(conn)
            return int(changed)

    def status_bits(self, size: int, *, version: int | None, now: float) -> tuple[int, bytes | None]:
        with self._read() as conn:
            due = conn.execute(
                "SELECT 1 FROM status_slot WHERE ends_at <= ? AND until > ? AND status = 0 LIMIT 1", (now, now)
            ).fetchone()
        if due is not None:
            with self._write(revoking=False) as conn:
                changed = conn.execute(
                    "UPDATE status_slot SET status = 1, ends_at = NULL WHERE ends_at <= ? AND until > ? AND status = 0",
                    (now, now),
                ).rowcount
                if changed:
                    self._status_moved(conn)
        with self._read() as conn:
            conn.execute("BEGIN")  # one snapshot: the version and the rows it counts
            try:
                row = conn.execute("SELECT value FROM status_version WHERE id = 0").fetchone()
                current = int(row[0]) if row is not None else 0
                if current == version:
                    return current, None
                data = bytearray(-(-size // 8))
                for (idx,) in conn.execute("SELECT idx FROM status_slot WHERE status = 1 AND idx < ?", (size,)):
                    data[idx >> 3] |= 1 << (idx & 7)
                return current, bytes(data)
            finally:
                conn.execute("COMMIT")

    # -- ordered boxes (the transmitter's streams and undelivered SETs) --------------------

    def box_put(self, box: str, key: str, value: str, until: float, *, max_items: int, now: float) -> int:
        with self._write(revoking=False) as conn:
            conn.execute("DELETE FROM boxes WHERE box = ? AND key = ?", (box, key))
            conn.execute("INSERT INTO boxes (box, key, value, until) VALUES (?, ?, ?, ?)", (box, key, value, until))
            conn.execute("DELETE FROM boxes WHERE box = ? AND until <= ?", (box, now))
            (count,) = conn.execute("SELECT count(*) FROM boxes WHERE box = ?", (box,)).fetchone()
            excess = count - max_items
            if excess <= 0:
                return 0
            conn.execute(
                "DELETE FROM boxes WHERE seq IN (SELECT seq FROM boxes WHERE box = ? ORDER BY seq LIMIT ?)",
                (box, excess),
            )
            return int(excess)

    def box_items(self, box: str, *, now: float, limit: int) -> list[tuple[str, str]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key, value FROM boxes WHERE box = ? AND until > ? ORDER BY seq LIMIT ?", (box, now, limit)
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def box_delete(self, box: str, keys: t.Sequence[str]) -> int:
        if not keys:
            return 0
        with self._write(revoking=False) as conn:
            return sum(conn.execute("DELETE FROM boxes WHERE box = ? AND key = ?", (box, key)).rowcount for key in keys)

    # -- maintenance ----------------------------------------------------------------------

    def purge(self, now: float) -> int:
        self._last_purge = now  # before the write below, which would otherwise purge again
        dropped = 0
        with self._write(revoking=False) as conn:
            for sql in (
                "DELETE FROM revoked WHERE until <= ?",
                "DELETE FROM not_before WHERE until <= ?",
                "DELETE FROM spent WHERE until <= ?",
                "DELETE FROM families WHERE expires_at <= ?",
                "DELETE FROM remembered WHERE until <= ?",
                "DELETE FROM remembered_floor WHERE floor <= ?",
                "DELETE FROM status_mark WHERE until <= ?",
                "DELETE FROM boxes WHERE until <= ?",
            ):
                dropped += conn.execute(sql, (now,)).rowcount
        return dropped

    def close(self) -> None:
        """Close this thread's connection and the change counter's descriptor (call it when
        no other thread uses the store; both reopen on the next use)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        with self._changes_lock:
            if self._changes_fd is not None:
                self._changes_fd = self._changes_map = None
                self._close_changes()
