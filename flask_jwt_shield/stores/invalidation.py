"""The invalidation subscriber: what keeps a process's "not revoked" view honest.

Every write of the Redis store that can revoke a token publishes on an invalidation channel.
A background thread per process subscribes to it and pings Redis every
``max_delay / 4`` seconds over the same connection. A "not revoked" answer remembered in
:class:`~flask_jwt_shield.stores.view.NotRevokedCache` is trusted only until ``max_delay``
seconds after the last ping that Redis answered was sent: Redis delivers a subscriber's
messages in order, so that answer proves every revocation committed before the ping was
sent has already reached the view. A revocation made anywhere therefore takes effect here
within ``max_delay`` seconds at worst (typically the pub/sub delivery time, well under a
millisecond on a LAN), including when the subscription is silently cut: then pings go
unanswered, trust lapses, and checks read Redis again.

That proof holds only on the node where the revocations run. On a Redis Cluster, a PONG from
some other node says nothing about the publishes that must cross the cluster bus to reach
it (a stalled bus link leaves every node reporting ``ok``). So the subscriber sits on the
master that owns the store's hash slot -- every script that can revoke runs there and
delivers its message to local subscribers in the same step -- and each round also asks that
node, on a second connection and after the PING is sent, a question it answers only while
it owns the slot (``MOVED``/``ASK`` after a migration or a failover, ``CLUSTERDOWN`` when it
is cut off). Any other answer ends the session: trust lapses, remembered answers are
forgotten, and the subscriber re-reads the slot map and moves to the new owner, trusted again
only once confirmed there.

The subscriber reaches its store only through :class:`SubscribedStore`: a channel name,
connection factories, "forget remembered answers" and "trust them until". The remembered
answers themselves live in :mod:`.view`; the lease instant lives on the store, where the
warm check reads it without a call.
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
import time
import typing as t
import weakref


class SubscribedStore(t.Protocol):
    """What :class:`InvalidationSubscriber` needs from the store whose view it keeps honest."""

    @property
    def invalidation_channel(self) -> str:
        """The pub/sub channel every write that can revoke a token publishes on."""

    @property
    def max_delay(self) -> float:
        """The longest a revocation made elsewhere may take to reach this process (seconds)."""

    @property
    def timeout(self) -> float:
        """Seconds to wait for any reply from Redis."""

    def subscriber_connection(self, attempt: int) -> t.Any:
        """A fresh connection outside every pool, to the node that owns the store's data
        (``attempt`` > 0: a reconnection; a cluster's slot map is read again first)."""

    def owner_probe(self, subscription: t.Any) -> tuple[t.Any, list[str]] | None:
        """A second fresh connection to the node of ``subscription``, and a command that the
        node answers only while it owns the store's data; ``None`` on a single server."""

    def forget_answers(self) -> None:
        """Forget every remembered "not revoked" answer."""

    def trust_until(self, instant: float) -> None:
        """Trust remembered answers until ``instant`` (:func:`time.monotonic`); ``0.0``: stop."""


class _StoreGone(Exception):
    """The store was garbage-collected: its subscriber has nothing left to do."""


class InvalidationSubscriber(threading.Thread):
    """Subscribes to the invalidation channel; keeps the store's trust window current.

    Holds the store weakly: a store dropped without being closed (an app that went away)
    ends its thread instead of keeping it reconnecting forever.
    """

    def __init__(self, store: SubscribedStore) -> None:
        super().__init__(name="jwt-shield-redis-invalidations", daemon=True)
        self._store = weakref.ref(store)
        self._stop_event = threading.Event()
        self._connections: list[t.Any] = []
        self._random = random.Random()  # noqa: S311 - jitter; never the global generator of the app

    @property
    def store(self) -> SubscribedStore:
        store = self._store()
        if store is None:
            raise _StoreGone
        return store

    def stop(self) -> None:
        self._stop_event.set()
        for conn in list(self._connections):
            with contextlib.suppress(Exception):  # closing a dead socket may fail any way it likes
                conn.disconnect()
        if self is not threading.current_thread():
            self.join(timeout=2)

    def run(self) -> None:
        attempt = 0
        while not self._stop_event.is_set():
            try:
                self._session(attempt)
            except _StoreGone:
                return
            except Exception:  # noqa: BLE001, S110 - any failure means: distrust, reconnect
                pass
            finally:
                self._lost()
            attempt += 1
            # Reconnect quickly, then back off to once a second while Redis stays away.
            self._stop_event.wait(min(1.0, 0.02 * 2 ** min(attempt, 6)) * self._random.uniform(0.5, 1.0))

    def _lost(self) -> None:
        store = self._store()
        if store is not None:
            store.trust_until(0.0)
            store.forget_answers()
        connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(Exception):
                conn.disconnect()

    def _session(self, attempt: int) -> None:
        store = self.store
        max_delay, timeout, channel = store.max_delay, store.timeout, store.invalidation_channel
        interval = max(max_delay / 4, 0.005)
        conn = store.subscriber_connection(attempt)
        self._connections.append(conn)
        conn.connect()
        owner = store.owner_probe(conn)
        probe, question = owner if owner is not None else (None, [])
        if probe is not None:
            self._connections.append(probe)
            probe.connect()
        conn.send_command("SUBSCRIBE", channel)
        reply = conn.read_response()
        if not reply or _text(reply[0]) != "subscribe":
            raise ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}")
        # Anything published while no subscription was listening is lost: start afresh.
        store.forget_answers()
        del store  # held weakly from here on
        pending: collections.deque[float] = collections.deque()
        last_ping = -1e9
        while not self._stop_event.is_set():
            now = time.monotonic()
            if pending and now - pending[0] > max_delay + timeout:
                raise TimeoutError("Redis stopped answering the invalidation connection")
            if now - last_ping >= interval:
                self.store  # noqa: B018 - raises _StoreGone once the store is collected
                conn.send_command("PING")
                pending.append(now)
                last_ping = now
                if probe is not None:
                    # Asked after the PING was sent: this node still owned the store's slot
                    # then, so the revocations committed before it ran here. MOVED, ASK or
                    # CLUSTERDOWN raise and end the session before that PONG is counted.
                    probe.send_command(*question)
                    probe.read_response()
            if not conn.can_read(timeout=interval):
                continue
            reply = conn.read_response()
            kind = _text(reply[0]) if isinstance(reply, list) and reply else _text(reply)
            if kind == "message":
                self.store.forget_answers()
            elif kind == "pong" and pending:
                # Every message published before this ping was sent has been handled above.
                self.store.trust_until(pending.popleft() + max_delay)


def _text(value: t.Any) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value)).lower()
