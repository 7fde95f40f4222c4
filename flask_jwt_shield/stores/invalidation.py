"""The invalidation subscriber: what keeps a process's "not revoked" views honest, per shard.

The Redis store spreads its state over *shards*: the stripes that hold subjects' state (and,
while data of the one-slot layout of earlier versions is read through, that slot too; see
:mod:`.redis`). Every write that can revoke a token publishes on its shard's invalidation
channel, in the same atomic step. For each node that owns some of the shards this process
depends on, a link -- one connection and one thread -- subscribes to those shards' channels
(``SSUBSCRIBE``, sharded pub/sub: the message is delivered by the node that owns the data,
without crossing the cluster bus) and pings the node every ``max_delay / 4`` seconds over
the same connection. A "not revoked" answer remembered for a shard (in its
:class:`~flask_jwt_shield.stores.view.NotRevokedCache`) is trusted only until ``max_delay``
seconds after the last ping that the shard's node answered was sent: Redis delivers a
subscriber's messages in order, so that answer proves every revocation committed on the
shard before the ping was sent has already reached the view. A revocation made anywhere
therefore takes effect here within ``max_delay`` seconds at worst, including when a
subscription is silently cut: then its pings go unanswered, trust in that node's shards
lapses, and checks of subjects on those shards read Redis again -- the others keep their
remembered answers.

A PONG proves something only when it comes from the node where the shard's revocations run.
So each round also asks the node, right after the PING and in the same write, one question
per shard that it answers only while it owns the shard's slot (``MOVED``/``ASK`` after a
migration or a failover, ``CLUSTERDOWN`` when it is cut off from the cluster). The
connection speaks RESP3, where a subscribed connection may run such commands and the
messages come as push frames between the replies; a round is one write and one read. A
PONG counts only once its round's questions are answered: a shard whose question fails
leaves the link first -- distrusted and forgotten at once -- and a link whose node stops
answering ends, taking only its own shards with it. A supervisor
thread re-reads the slot map and gives every uncovered shard a new link to its current
owner, where it is trusted again only once confirmed.

The subscriber reaches its store only through :class:`SubscribedStore`. The remembered
answers live in :mod:`.view`; the lease instants live on the store, where the warm check
reads them without a call.
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
import time
import typing as t
import weakref

from ..wire import Push
from ..wire import ReplyError
from ..wire import Wire

#: A node: (host, port); ``None`` names the one server of a store that is not a cluster.
Node: t.TypeAlias = tuple[str, int] | None


class SubscribedStore(t.Protocol):
    """What :class:`InvalidationSubscriber` needs from the store whose views it keeps honest."""

    @property
    def max_delay(self) -> float:
        """The longest a revocation made elsewhere may take to reach this process (seconds)."""

    @property
    def timeout(self) -> float:
        """Seconds to wait for any reply from Redis."""

    def shards(self) -> list[int]:
        """The shards whose answers this process remembers (and so must watch)."""

    def subscription(self, shard: int) -> tuple[str, str]:
        """The subscribe command (``SSUBSCRIBE`` or ``SUBSCRIBE``) and channel of ``shard``."""

    def shard_owners(self, shards: list[int], attempt: int) -> dict[Node, list[int]]:
        """The node that owns each of ``shards`` (``attempt`` > 0: re-read the slot map first)."""

    def subscriber_connection(self, node: Node) -> t.Any:
        """A fresh connection outside every pool, to ``node``, that speaks RESP3."""

    def owner_questions(self, node: Node, shards: list[int]) -> dict[int, list[str]] | None:
        """Per shard, a command that ``node`` answers only while it owns the shard; ``None``
        on a single server."""

    def forget_answers(self, shards: t.Iterable[int]) -> None:
        """Forget every remembered "not revoked" answer of ``shards``."""

    def trust_until(self, shards: t.Iterable[int], instant: float) -> None:
        """Trust remembered answers of ``shards`` until ``instant`` (:func:`time.monotonic`);
        ``0.0``: stop."""


_PING: t.Final = ("PING",)


class _StoreGone(Exception):
    """The store was garbage-collected: its subscriber has nothing left to do."""


class InvalidationSubscriber(threading.Thread):
    """The supervisor: keeps every shard the store depends on covered by a live link.

    Holds the store weakly: a store dropped without being closed (an app that went away)
    ends its threads instead of keeping them reconnecting forever.
    """

    def __init__(self, store: SubscribedStore) -> None:
        super().__init__(name="jwt-shield-redis-invalidations", daemon=True)
        self._store = weakref.ref(store)
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._links: list[_Link] = []
        self._random = random.Random()  # noqa: S311 - jitter; never the global generator of the app

    @property
    def store(self) -> SubscribedStore:
        store = self._store()
        if store is None:
            raise _StoreGone
        return store

    @property
    def store_ref(self) -> weakref.ref[SubscribedStore]:
        """The weak reference to the store, shared with the links."""
        return self._store

    def wake(self) -> None:
        """Look at the shards' coverage now (a link ended)."""
        self._wake.set()

    def ports(self) -> dict[int, int]:
        """Shard -> the port of the node its live link subscribes on (for tests and ops)."""
        return {shard: link.port for link in list(self._links) if link.is_alive() for shard in link.shards}

    def stop(self) -> None:
        self._stop_event.set()
        self._wake.set()
        for link in list(self._links):
            link.stop()
        if self is not threading.current_thread():
            self.join(timeout=2)

    def run(self) -> None:
        attempt = 0
        try:
            while not self._stop_event.is_set():
                self._links = [link for link in self._links if link.is_alive()]
                covered = {shard for link in self._links for shard in link.shards}
                store = self.store
                missing = [shard for shard in store.shards() if shard not in covered]
                if missing:
                    try:
                        owners = store.shard_owners(missing, attempt)
                    except Exception:  # noqa: BLE001 - no slot map now: those shards stay distrusted
                        owners = {}
                    for node, shards in owners.items():
                        link = _Link(self, node, shards)
                        self._links.append(link)
                        link.start()
                    attempt += 1
                elif all(link.confirmed for link in self._links):
                    attempt = 0
                del store
                # Reconnect quickly, then back off to once a second while a node stays away.
                wait = min(1.0, 0.02 * 2 ** min(attempt, 6)) * self._random.uniform(0.5, 1.0) if missing else 1.0
                self._wake.wait(wait)
                self._wake.clear()
        except _StoreGone:
            pass
        finally:
            for link in list(self._links):
                link.stop()


class _Link(threading.Thread):
    """One connection to one node, subscribed to the channels of the shards it owns."""

    def __init__(self, supervisor: InvalidationSubscriber, node: Node, shards: list[int]) -> None:
        super().__init__(name=f"jwt-shield-redis-invalidations-{node[1] if node else 0}", daemon=True)
        self._supervisor = supervisor
        self._store = supervisor.store_ref
        self.node = node
        self.port = node[1] if node else 0
        self.shards = list(shards)
        self.confirmed = False
        self._stop_event = threading.Event()
        self._connections: list[Wire] = []

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
                conn.close()
        if self is not threading.current_thread() and self.ident is not None:
            self.join(timeout=2)

    def run(self) -> None:
        try:
            self._session()
        except Exception:  # noqa: BLE001, S110 - any failure means: distrust, reconnect
            pass
        finally:
            self._drop(self.shards)
            connections, self._connections = self._connections, []
            for conn in connections:
                with contextlib.suppress(Exception):
                    conn.close()
            self._supervisor.wake()

    def _drop(self, shards: list[int]) -> None:
        """Distrust and forget ``shards``, and stop counting PONGs for them."""
        self.shards = [shard for shard in self.shards if shard not in shards]
        store = self._store()
        if store is not None and shards:
            store.trust_until(shards, 0.0)
            store.forget_answers(shards)

    def _session(self) -> None:
        store = self.store
        max_delay, timeout = store.max_delay, store.timeout
        interval = max(max_delay / 4, 0.005)
        conn = Wire(store.subscriber_connection(self.node))
        self._connections.append(conn)
        conn.connect()
        questions = store.owner_questions(self.node, self.shards) or {}
        channels: dict[str, int] = {}
        for shard in self.shards:
            command, channel = store.subscription(shard)
            conn.send((command, channel))
            while True:  # a message of a channel subscribed just before may come first
                reply = conn.read()  # a node that does not own the slot answers MOVED
                if isinstance(reply, Push) and reply and _text(reply[0]) in _MESSAGES:
                    continue  # forgotten below anyway
                if not isinstance(reply, Push) or not reply or _text(reply[0]) != command.lower():
                    raise ConnectionError(f"unexpected reply to {command}: {reply!r}")
                break
            channels[channel] = shard
        # Anything published while no subscription was listening is lost: start afresh.
        store.forget_answers(self.shards)
        del store  # held weakly from here on
        pending: collections.deque[_Round] = collections.deque()
        last_ping = -1e9
        while not self._stop_event.is_set() and self.shards:
            now = time.monotonic()
            if pending and now - pending[0].sent > max_delay + timeout:
                raise TimeoutError("Redis stopped answering the invalidation connection")
            if now - last_ping >= interval:
                self.store  # noqa: B018 - raises _StoreGone once the store is collected
                # The questions run right after the PING: a shard this node answers for
                # was owned here then, so its revocations committed before the PING ran
                # here. One write, since each system call here lets the request threads
                # take the GIL, and they then have to give it back.
                asked = [shard for shard in self.shards if shard in questions]
                conn.send(_PING, *(questions[shard] for shard in asked))
                last_ping = now
                pending.append(_Round(now, list(self.shards), asked))
            # With a round in flight its replies are on their way: read them with no poll
            # first (the socket's timeout bounds the wait). Otherwise wait for a message.
            if not pending and not conn.ready(timeout=interval):
                continue
            reply = conn.reply()
            if isinstance(reply, Push):
                kind = _text(reply[0]) if reply else ""
                if kind in _MESSAGES:
                    which = channels.get(_raw(reply[1]))
                    self.store.forget_answers([which] if which is not None else self.shards)
                elif kind == "sunsubscribe" and _raw(reply[1]) in channels:
                    # The node let go of the channel itself: its slot moved away.
                    self._drop([channels.pop(_raw(reply[1]))])
                continue  # other pushes (a confirmation of our SUNSUBSCRIBE) say nothing new
            if not pending:
                raise ConnectionError(f"a reply to nothing asked: {reply!r}")
            round_ = pending[0]
            if isinstance(reply, ReplyError):
                if not (round_.answered and reply.redirected):
                    raise reply  # an error to the PING, or CLUSTERDOWN: the link ends
                # MOVED or ASK: the shard left this node; it leaves the link before the
                # round's PONG counts.
                round_.lost.append(round_.asked[round_.answered - 1])
            elif not round_.answered and _text(reply) != "pong":
                raise ConnectionError(f"unexpected reply to PING: {reply!r}")
            round_.answered += 1
            if round_.answered <= len(round_.asked):
                continue
            pending.popleft()
            if round_.lost:
                self._drop(round_.lost)
                for channel, shard in list(channels.items()):
                    if shard in round_.lost:
                        conn.send(("SUNSUBSCRIBE", channel))
                        del channels[channel]
            # Every message published before this round's PING was sent has been handled
            # above, and every shard still here was owned by this node after it.
            live = [shard for shard in round_.shards if shard in self.shards]
            self.store.trust_until(live, round_.sent + max_delay)
            self.confirmed = True


class _Round:
    """A round in flight: its PING's send instant, the link's shards then, the shards asked
    about (their replies follow the PONG, in order), and what came back."""

    __slots__ = ("answered", "asked", "lost", "sent", "shards")

    def __init__(self, sent: float, shards: list[int], asked: list[int]) -> None:
        self.sent = sent
        self.shards = shards
        self.asked = asked
        self.answered = 0  # replies read: the PONG, then one per shard asked
        self.lost: list[int] = []


#: The push frames that carry a published message.
_MESSAGES: t.Final = ("message", "smessage")


def _raw(value: t.Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(value: t.Any) -> str:
    return _raw(value).lower()
