"""The leased mode: per-token limits on Redis with no round trip per request.

In the exact mode every check is a script call on Redis. In the leased mode each process
keeps a local counter per token (and limit) and admits requests from a *lease*: units of
the token's window budget that Redis has reserved for this process. A background thread
settles what the process used, renews its leases and asks for more every ``interval``
seconds (Δ), one pipelined call per round (per node on a cluster); the request path only
touches local state.

The Redis side of one limit window is a hash (``<counter key>/lease``) that expires with
the window: ``r`` counts the units used *or* reserved, and each process ``p`` holds
``h:p`` reserved units until ``e:p`` (Redis time, ms). A grant never lifts ``r`` above the
limit ``L``, so units admitted from leases never exceed ``L``. What can exceed it:

* **Credit.** A process that has no lease for a token yet (it sees the token for the first
  time in this window, or used its lease up before the next one arrived) may admit
  :data:`CREDIT` request(s) on credit; the credit is charged at the next settlement and
  given back only while the window's budget is not exhausted (``r < L`` after the charge).
  Past that, a process admits on credit at most :data:`CREDIT` more times in the window.
  Beyond its credit it asks Redis synchronously for that one request (a strict charge: no
  overshoot), so a legitimate client is never refused while budget is free.
* **Lost settlements.** A process that dies, or cannot reach Redis for longer than the
  lease TTL, never settles what it used since its last round; Redis takes its lease back
  after the TTL (so a dead process does not keep budget for the rest of the window) and
  gives it out again.

Hence, with ``N`` processes admitting one token, the admitted count of a window is at most
``L + N * CREDIT`` (+ one lease per process lost as above). When a settlement exhausts the
budget, the script announces it on a pub/sub channel; every process stops admitting on
credit for that window when the announcement arrives (after the propagation delay ``d``),
or at the latest at its next round (Δ plus one round trip), whichever comes first. See
``docs/ratelimit.rst`` ("Leased mode") for the derivation and the measured figures.

Spike counters and the sustained-refusal counters follow the same path: counted locally,
added to the same Redis keys as in the exact mode by the background round; the process
whose addition crosses a spike threshold reports it, on its next check of that token.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
import time
import typing as t
import uuid
import weakref
from typing import Final

from limits import RateLimitItem
from limits.storage import RedisStorage

from ..wire import ReplyError
from ..wire import Wire
from .decision import SpikeReport
from .storage import LimiterStorageError
from .syntax import MINUTE

__all__ = ["CREDIT", "LeaseBook"]

#: Requests a process may admit for one token window before its first lease arrives.
CREDIT: Final = 1
_MAX_REPORTS: Final = 10_000

# KEYS: the window's lease hash. ARGV: process id, units used from its lease since the last
# settlement, units admitted on credit, units asked for, the limit, the window (ms), the
# lease TTL (ms), keep the unused lease (1/0), the announcement channel.
# Returns {granted, r (used or reserved), PTTL of the window, this process's reservation}.
LEASE_LUA: Final = """
local key, pid = KEYS[1], ARGV[1]
local used, credit, ask, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fresh = redis.call('EXISTS', key) == 0
local r = tonumber(redis.call('HGET', key, 'r') or '0')
local was_open = r < limit
-- leases of other processes past their TTL go back to the window's budget
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 'e:' and tonumber(all[i + 1]) <= now and string.sub(f, 3) ~= pid then
    local held = 'h:' .. string.sub(f, 3)
    r = r - tonumber(redis.call('HGET', key, held) or '0')
    redis.call('HDEL', key, f, held)
  end
end
local h = redis.call('HGET', key, 'h:' .. pid)
if h then
  h = math.max(0, tonumber(h) - used)
else
  h = 0
  r = r + used  -- this lease was taken back: what was used from it counts now
end
r = r + credit
if ARGV[8] ~= '1' then r = r - h; h = 0 end
local granted = 0
if ask > 0 and r < limit then granted = math.min(ask, limit - r) end
h = h + granted
r = r + granted
if h > 0 then
  redis.call('HSET', key, 'r', r, 'h:' .. pid, h, 'e:' .. pid, now + tonumber(ARGV[7]))
else
  redis.call('HSET', key, 'r', r)
  redis.call('HDEL', key, 'h:' .. pid, 'e:' .. pid)
end
if fresh then redis.call('PEXPIRE', key, ARGV[6]) end
local pttl = redis.call('PTTL', key)
if was_open and r >= limit then redis.call('PUBLISH', ARGV[9], key .. '|' .. pttl) end
return {granted, r, pttl, h}
"""

# KEYS: a spike counter (the exact mode's key). ARGV: attempts to add, window (s).
# Returns {count after, PTTL}.
ADD_LUA: Final = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {n, redis.call('PTTL', KEYS[1])}
"""

# KEYS: a counter. ARGV: its window (s). INCR, with the expiry set by the first increment
# (limits' incr); the sustain counters' two steps, one key each (they may sit in two slots).
INCR_LUA: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class _Client(t.Protocol):
    def evalsha(self, sha: str, numkeys: int, /, *keys_and_args: str | int) -> t.Any: ...

    def eval(self, script: str, numkeys: int, /, *keys_and_args: str | int) -> t.Any: ...

    def pipeline(self, transaction: bool = ...) -> t.Any: ...

    def pubsub(self, **kwargs: t.Any) -> t.Any: ...

    def script_load(self, script: str) -> t.Any: ...

    def delete(self, *names: str) -> t.Any: ...


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - a script's name in Redis


_LEASE_SHA: Final = _sha(LEASE_LUA)
_ADD_SHA: Final = _sha(ADD_LUA)
_INCR_SHA: Final = _sha(INCR_LUA)
_SOURCES: Final = {_LEASE_SHA: LEASE_LUA, _ADD_SHA: ADD_LUA, _INCR_SHA: INCR_LUA}


class _Window:
    """This process's view of one token's limit window."""

    __slots__ = (
        "active",
        "allowance",
        "amount",
        "closed",
        "credit",
        "credit_spent",
        "demand",
        "expiry",
        "last_settled",
        "used",
        "valid_until",
        "window_end",
    )

    def __init__(self, amount: int, expiry: int) -> None:
        self.amount = amount  # the limit L (0 while known only from an announcement)
        self.expiry = expiry  # the window's length (s)
        self.allowance = 0  # units of the lease not used yet
        self.valid_until = 0.0  # monotonic: the lease is void past this instant
        self.window_end = math.inf  # monotonic: unknown until Redis answered once
        self.used = 0  # used from the lease since the last settlement
        self.credit = CREDIT  # credit left
        self.credit_spent = 0  # spent since the last settlement
        self.demand = 0  # attempts since the last settlement
        self.closed = False  # the window's budget is used or reserved (r >= L)
        self.active = 0.0  # monotonic: last attempt
        self.last_settled = 0.0  # monotonic: last settlement sent

    def pending(self) -> bool:
        return bool(self.used or self.credit_spent or self.demand)


class _Connections:
    """The rounds' own connections, one per node (:mod:`flask_jwt_shield.wire`): a round is
    one write and one read per node, with none of the pool's checks around them. Only the
    background thread uses them, under the book's I/O lock; :meth:`LeaseBook.stop` closes
    them from outside it."""

    def __init__(self) -> None:
        self._wires: dict[tuple[str, int] | None, Wire] = {}

    def forget(self) -> None:
        """Drop them without closing (after a fork: the parent's sockets are the parent's)."""
        self._wires = {}

    def close(self) -> None:
        wires, self._wires = self._wires, {}
        for wire in wires.values():
            with contextlib.suppress(Exception):  # closing a dead socket may fail any way it likes
                wire.close()

    def execute(self, client: t.Any, commands: list[tuple[str | int, ...]]) -> list[t.Any]:
        """Each command's reply in order, an error reply as a :class:`ReplyError`. Every
        command names its key fourth (``EVALSHA sha 1 key ...``)."""
        try:
            routes: dict[Wire, list[int]] = {}
            for index, command in enumerate(commands):
                routes.setdefault(self._wire(client, str(command[3])), []).append(index)
            for wire, indexes in routes.items():
                wire.send(*(commands[index] for index in indexes))
            replies: list[t.Any] = [None] * len(commands)
            for wire, indexes in routes.items():
                for index in indexes:
                    replies[index] = wire.reply()
        except Exception as exc:
            self.close()
            if isinstance(exc, OSError):
                raise
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return replies

    def _wire(self, client: t.Any, key: str) -> Wire:
        if hasattr(client, "get_node_from_key"):  # a cluster: the master that owns the key
            node = client.get_node_from_key(key)
            where: tuple[str, int] | None = (node.host, int(node.port))
            pool = node.redis_connection.connection_pool
        else:
            where, pool = None, client.connection_pool
        wire = self._wires.get(where)
        if wire is None:
            # What the reader reads, whatever the app's client speaks: RESP2, and none of
            # redis-py's maintenance notifications (pushed frames, RESP3 only).
            options = {k: v for k, v in pool.connection_kwargs.items() if not k.startswith("maint_notifications")}
            options["protocol"] = 2
            wire = Wire(pool.connection_class(**options))
            wire.connect()
            self._wires[where] = wire
        return wire


class LeaseBook:
    """The leased counters of one limiter in this process, and the thread that settles them.

    :param storage: the limiter's Redis storage (one server or a cluster).
    :param interval: Δ, seconds between two settlement rounds.
    :param channel: the pub/sub channel on which an exhausted window is announced.
    :param errors: what the storage raises when Redis fails.
    """

    def __init__(
        self, storage: RedisStorage, *, interval: float, channel: str, errors: tuple[type[BaseException], ...]
    ) -> None:
        self._storage = storage
        self.interval = interval
        #: a lease is void this long after the round that renewed it was sent
        self.lease_ttl = max(1.0, 10 * interval)
        #: an unused lease is given back after this long without an attempt
        self.idle_release = max(0.5, 5 * interval)
        self.channel = storage.prefixed_key(channel)
        self._errors = errors
        self._connections = _Connections()
        self._start()
        weak = weakref.ref(self)

        def after_fork() -> None:  # the parent's threads, leases and sockets do not cross a fork
            book = weak()
            if book is not None:
                book._connections.forget()
                book._start()

        os.register_at_fork(after_in_child=after_fork)

    def _start(self) -> None:
        self.process = uuid.uuid4().hex[:16]
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._spikes: dict[str, list[t.Any]] = {}  # key -> [attempts to add, identity, item]
        self._refusals: dict[tuple[str, str], tuple[str, RateLimitItem]] = {}
        self._reports: dict[str, list[SpikeReport]] = {}
        self._down = False
        self._listening = False
        self._loaded = False
        self._io = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._checked_until = 0.0
        self._listener: threading.Thread | None = None

    # -- the request path -------------------------------------------------------------------

    def take(self, key: str, item: RateLimitItem) -> bool:
        """Admit one request against the window of ``key`` (a limit of ``item``): from the
        lease, on credit, or -- with neither -- by one synchronous charge.

        :raises LimiterStorageError: when neither a lease nor Redis can decide.
        """
        self._ensure_running()
        now = time.monotonic()
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window(item.amount, item.get_expiry())
            elif now >= w.window_end:
                self._roll(w)
            w.amount, w.expiry = item.amount, item.get_expiry()  # an announcement may have made it
            w.demand += 1
            w.active = now
            if w.allowance > 0 and now < w.valid_until:
                w.allowance -= 1
                w.used += 1
                return True
            if w.closed:
                return False
            if self._down:
                raise LimiterStorageError(ConnectionError("rate limit storage unreachable in the last round"))
            if w.credit > 0:
                w.credit -= 1
                w.credit_spent += 1
                self._wake.set()
                return True
        # Neither a lease nor credit: ask Redis now, for this request only.
        try:
            return self._charge_now(key, w)
        except self._errors as exc:
            raise LimiterStorageError(exc) from exc

    def admit(
        self, spikes: tuple[tuple[str, str, RateLimitItem], ...], limits: tuple[tuple[str, RateLimitItem], ...]
    ) -> int:
        """One request of a token: count the attempt against each spike threshold of
        ``spikes`` ((key, identity, item): added to Redis in the next round) and take one unit from
        each window of ``limits`` ((key, item), as :meth:`take`), in order, stopping at the
        first that refuses. Returns the index in ``limits`` of the window that refused, or
        -1 when all admitted.

        The request path of the leased mode: while every window holds a valid lease this
        is one lock and a few counters; otherwise each remaining window goes through
        :meth:`take`.

        :raises LimiterStorageError: when neither a lease nor Redis can decide.
        """
        now = time.monotonic()
        if now >= self._checked_until:
            self._ensure_running()
            self._checked_until = now + 1.0  # whether the threads run: asked once a second
        done = 0
        with self._lock:
            counters = self._spikes
            for key, identity, item in spikes:
                entry = counters.get(key)
                if entry is None:
                    counters[key] = [1, identity, item]
                else:
                    entry[0] += 1
            windows = self._windows
            for key, _item in limits:
                w = windows.get(key)
                if w is None or w.allowance <= 0 or now >= w.valid_until or now >= w.window_end:
                    break
                w.demand += 1
                w.active = now
                w.allowance -= 1
                w.used += 1
                done += 1
        if done == len(limits):
            return -1
        for index in range(done, len(limits)):
            key, item = limits[index]
            if not self.take(key, item):
                return index
        return -1

    def note_refusal(self, marker: str, counter: str, identity: str, item: RateLimitItem) -> None:
        """A refusal in the minute whose marker key is ``marker`` (sustained spikes)."""
        with self._lock:
            self._refusals.setdefault((marker, counter), (identity, item))

    def reports(self, identity: str) -> SpikeReport | None:
        """A spike of ``identity`` found by a round since its last check (one per check; a
        second one found in the same round waits for the next check)."""
        if not self._reports:
            return None
        with self._lock:
            found = self._reports.get(identity)
            if not found:
                return None
            report = found.pop(0)
            if not found:
                del self._reports[identity]
            return report

    def window(self, key: str, item: RateLimitItem) -> tuple[int, float]:
        """(requests left as this process sees it, epoch of the window's reset)."""
        now = time.monotonic()
        w = self._windows.get(key)
        if w is None or now >= w.window_end:
            return item.amount, time.time() + item.get_expiry()
        left = w.allowance if now < w.valid_until else 0
        if not w.closed:
            left += w.credit
        # before Redis answered once, the window is the limit's whole length
        ends = w.window_end - now if w.window_end != math.inf else item.get_expiry()
        return left, time.time() + ends

    def exhausted(self, key: str) -> bool:
        """Whether this process knows the window of ``key`` exhausted (by a round of its own
        or an announcement): it then refuses with no credit until the window ends."""
        w = self._windows.get(key)
        return w is not None and w.closed and time.monotonic() < w.window_end

    @property
    def listening(self) -> bool:
        """True while this process is subscribed to the announcements."""
        return self._listening

    def forget(self, keys: list[str]) -> None:
        """Drop the windows of ``keys`` here and in Redis (:meth:`TokenRateLimiter.reset`)."""
        with self._lock:
            for key in keys:
                self._windows.pop(key, None)
        client = t.cast(_Client, self._storage.get_connection())
        for key in keys:
            client.delete(key)

    def _roll(self, w: _Window) -> None:
        """The window ended: what was left of it is void."""
        w.allowance = w.used = w.credit_spent = w.demand = 0
        w.credit = CREDIT
        w.closed = False
        w.valid_until = 0.0
        w.window_end = math.inf

    def _charge_now(self, key: str, w: _Window) -> bool:
        with self._io:  # one Redis exchange at a time: replies are applied in order
            with self._lock:
                if w.allowance > 0 and time.monotonic() < w.valid_until:  # a round brought a lease
                    w.allowance -= 1
                    w.used += 1
                    return True
                if w.closed:  # a round or an announcement found the window exhausted meanwhile
                    return False
                used, credit, ask = w.used, w.credit_spent, min(max(2, 2 * w.demand), max(1, w.amount // 4))
                w.used = w.credit_spent = 0
                sent = time.monotonic()
            reply = self._call_lease(key, w, used, credit, ask=ask, keep=True)
            with self._lock:
                self._apply(w, reply, sent)
                if w.allowance <= 0:
                    return False
                w.allowance -= 1
                w.used += 1
                return True

    # -- Redis ------------------------------------------------------------------------------

    def _client(self) -> _Client:
        return t.cast(_Client, self._storage.get_connection())

    def _lease_args(self, key: str, w: _Window, used: int, credit: int, ask: int, keep: bool) -> list[t.Any]:
        return [
            key,
            self.process,
            used,
            credit,
            ask,
            w.amount,
            w.expiry * 1000,
            int(self.lease_ttl * 1000),
            1 if keep else 0,
            self.channel,
        ]

    def _call_lease(self, key: str, w: _Window, used: int, credit: int, ask: int, keep: bool) -> t.Any:
        client = self._client()
        args = self._lease_args(key, w, used, credit, ask, keep)
        try:
            return client.evalsha(_LEASE_SHA, 1, *args)
        except Exception as exc:
            if not _no_script(exc):
                raise
            return client.eval(LEASE_LUA, 1, *args)

    def _apply(self, w: _Window, reply: t.Any, sent: float) -> None:
        """Take a lease reply in (under the lock)."""
        _granted, r, pttl, held = (int(v) for v in reply)
        w.window_end = sent + max(pttl, 0) / 1000
        if held > 0:
            w.valid_until = sent + self.lease_ttl
        # Redis holds ``held`` for this process: what was used since the call was sent
        # comes out of it (reported in the next round).
        w.allowance = max(0, held - w.used)
        w.closed = r >= w.amount
        if not w.closed:
            # The credit was charged while budget was free: it is given back. Once the
            # budget is exhausted it is not, so past that instant a process admits at most
            # CREDIT requests on credit in the window.
            w.credit = max(0, CREDIT - w.credit_spent)

    # -- the background rounds ---------------------------------------------------------------

    def _ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=_run_rounds, args=(weakref.ref(self),), daemon=True)
                self._thread.name = "jwt-shield-rate-leases"
                self._thread.start()
                self._listener = threading.Thread(target=_listen, args=(weakref.ref(self),), daemon=True)
                self._listener.name = "jwt-shield-rate-announcements"
                self._listener.start()

    def stop(self) -> None:
        """End the threads (settling nothing: what is leased comes back after the TTL)."""
        self._stopped.set()
        self._wake.set()
        # Not under the I/O lock: a round stuck on a hung Redis must not hold up the close.
        # A round that is running fails on its closed socket, and the thread ends.
        self._connections.close()

    def round(self) -> bool:
        """One settlement round: every window with something to settle, renew or ask, and
        every counter to add, in one pipelined call. False when there was nothing to send.
        Raises the storage's errors."""
        with self._io:
            return self._round()

    def _round(self) -> bool:
        now = time.monotonic()
        batch: list[tuple[str, _Window, int, int, int, bool]] = []
        with self._lock:
            for key, w in list(self._windows.items()):
                if now >= w.window_end:
                    if not w.pending():
                        del self._windows[key]
                        continue
                    self._roll(w)
                if w.amount <= 0:
                    continue  # known from an announcement only
                idle = now - w.active > self.idle_release
                if idle and not (w.allowance > 0 or w.used or w.credit_spent or w.closed):
                    # nothing held, nothing owed: forgotten (its credit is back anyway, since
                    # the window was open at its last settlement)
                    del self._windows[key]
                    continue
                ask = 0
                if w.demand and not idle and w.allowance < 2 * w.demand:
                    # enough for two rounds at the last round's pace
                    ask = min(max(2, 2 * w.demand - w.allowance), max(1, w.amount // 4))
                renew = w.allowance > 0 and now - w.last_settled > self.lease_ttl / 3
                release = idle and w.allowance > 0
                if not (w.used or w.credit_spent or ask or renew or release):
                    w.demand = 0
                    continue
                if release:
                    w.allowance = 0
                batch.append((key, w, w.used, w.credit_spent, ask, not release))
                w.used = w.credit_spent = w.demand = 0
                w.last_settled = now
            spikes = [(k, *v) for k, v in self._spikes.items()]
            self._spikes.clear()
            refusals = list(self._refusals.items())
            self._refusals.clear()
        if not (batch or spikes or refusals):
            return False
        client = self._client()
        if not self._loaded:
            for source in _SOURCES.values():
                client.script_load(source)
            self._loaded = True
        commands: list[tuple[str | int, ...]] = [
            ("EVALSHA", _LEASE_SHA, 1, *self._lease_args(key, w, used, credit, ask, keep))
            for key, w, used, credit, ask, keep in batch
        ]
        commands += [("EVALSHA", _ADD_SHA, 1, key, count, item.get_expiry()) for key, count, _i, item in spikes]
        commands += [("EVALSHA", _INCR_SHA, 1, marker, MINUTE) for (marker, _counter), _ in refusals]
        try:
            replies = self._execute(client, commands)
        except self._errors:
            with self._lock:
                self._undo(batch, spikes, refusals)
            raise
        failed: BaseException | None = None
        lease_replies = replies[: len(batch)]
        spike_replies = replies[len(batch) : len(batch) + len(spikes)]
        refusal_replies = replies[len(batch) + len(spikes) :]
        firsts: list[tuple[str, str, RateLimitItem]] = []
        with self._lock:
            for entry, reply in zip(batch, lease_replies, strict=True):
                if isinstance(reply, Exception):
                    failed = reply
                    self._undo([entry], [], [])
                else:
                    self._apply(entry[1], reply, now)
            for spike, reply in zip(spikes, spike_replies, strict=True):
                key, count, identity, item = spike
                if isinstance(reply, Exception):
                    failed = reply
                    self._undo([], [spike], [])
                    continue
                total, pttl = int(reply[0]), int(reply[1])
                if total - count < item.amount + 1 <= total:  # this addition crossed it
                    window = item.get_expiry()
                    elapsed = max(0.0, window - max(pttl, 0) / 1000)
                    if len(self._reports) > _MAX_REPORTS:
                        self._reports.clear()  # tokens that never came back: their reports are moot
                    self._reports.setdefault(identity, []).append(SpikeReport(identity, item, total, window, elapsed))
            for refusal, reply in zip(refusals, refusal_replies, strict=True):
                (_marker, counter), (identity, item) = refusal
                if isinstance(reply, Exception):
                    failed = reply
                    self._undo([], [], [refusal])
                elif int(reply) == 1:  # this minute counted for the first time anywhere
                    firsts.append((counter, identity, item))
        if failed is not None:
            if _no_script(failed):
                self._loaded = False  # a restarted or flushed server: load them again
                self._wake.set()
                return True
            raise failed
        if firsts:  # count those minutes in the span
            pipe = client.pipeline(transaction=False)
            for counter, _identity, item in firsts:
                pipe.evalsha(_INCR_SHA, 1, counter, item.get_expiry())
            for (_counter, identity, item), minutes in zip(firsts, pipe.execute(), strict=True):
                if int(minutes) >= item.amount:
                    report = SpikeReport(identity, item, int(minutes), item.get_expiry(), 0.0, sustained=True)
                    with self._lock:
                        self._reports.setdefault(identity, []).append(report)
        return True

    def _execute(self, client: t.Any, commands: list[tuple[str | int, ...]]) -> list[t.Any]:
        """The round's replies, on its own connections. A command the cluster did not run
        (``MOVED``, ``ASK``; ``TRYAGAIN``, ``CLUSTERDOWN`` during a reshard or a failover) goes
        again through the client's pipeline, which follows the redirection, re-reads the
        slot map and retries; the next round finds the new owner."""
        replies = self._connections.execute(client, commands)
        moved = [index for index, reply in enumerate(replies) if isinstance(reply, ReplyError) and _elsewhere(reply)]
        if moved:
            self._connections.close()
            pipe = client.pipeline(transaction=False)
            for index in moved:
                pipe.execute_command(*commands[index])
            for index, reply in zip(moved, pipe.execute(raise_on_error=False), strict=True):
                replies[index] = reply
        return replies

    def _undo(self, batch: list[t.Any], spikes: list[t.Any], refusals: list[t.Any]) -> None:
        """Keep the figures of what a round could not send for the next one (under the lock)."""
        for _key, w, used, credit, _ask, _keep in batch:
            w.used += used
            w.credit_spent += credit
        for key, count, identity, item in spikes:
            entry = self._spikes.setdefault(key, [0, identity, item])
            entry[0] += count
        for pair, value in refusals:
            self._refusals.setdefault(pair, value)

    def announced(self, message: str) -> None:
        """A window was exhausted somewhere: no more credit for it here."""
        key, _, pttl = message.rpartition("|")
        try:
            ms = int(pttl)
        except ValueError:
            return
        now = time.monotonic()
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                if len(self._windows) >= 100_000:
                    return  # a token this process has not seen: nothing to stop here
                w = self._windows[key] = _Window(0, max(1, ms // 1000))
            w.closed = True
            w.credit = 0
            if w.window_end == math.inf:
                w.window_end = now + max(ms, 0) / 1000

    def set_down(self, down: bool) -> None:
        self._down = down


def _no_script(exc: BaseException) -> bool:
    """The server does not know a script (new, restarted or flushed)."""
    from redis.exceptions import NoScriptError

    return isinstance(exc, NoScriptError) or (isinstance(exc, ReplyError) and str(exc).startswith("NOSCRIPT"))


def _elsewhere(reply: ReplyError) -> bool:
    """A cluster's answer that the command did not run here, and may run elsewhere or later."""
    return reply.redirected or str(reply).startswith(("TRYAGAIN", "CLUSTERDOWN"))


def _run_rounds(ref: weakref.ReferenceType[LeaseBook]) -> None:
    while True:
        book = ref()
        if book is None or book._stopped.is_set():
            return
        wake, interval = book._wake, book.interval
        try:
            if book.round():
                book.set_down(False)
        except Exception:  # noqa: BLE001 - any failure: Redis is unreachable for now
            book.set_down(True)
        del book
        wake.wait(interval)
        wake.clear()


def _listen(ref: weakref.ReferenceType[LeaseBook]) -> None:
    while True:
        book = ref()
        if book is None or book._stopped.is_set():
            return
        try:
            pubsub = book._client().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(book.channel)
        except Exception:  # noqa: BLE001 - Redis away: try again later
            book.set_down(True)
            stopped = book._stopped
            del book
            stopped.wait(0.2)
            continue
        stopped = book._stopped
        book._listening = True
        del book
        try:
            while not stopped.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message is None:
                    if ref() is None:
                        return
                    continue
                data = message.get("data")
                text = data.decode() if isinstance(data, bytes) else str(data)
                book = ref()
                if book is None:
                    return
                book.announced(text)
                del book
        except Exception:  # noqa: BLE001 - the subscription broke: Redis is away (or restarting)
            book = ref()
            if book is not None:
                book.set_down(True)  # requests with no valid lease follow the fail mode now
            del book
        finally:
            book = ref()
            if book is not None:
                book._listening = False
            del book
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken connection
                pass
        stopped.wait(0.2)
