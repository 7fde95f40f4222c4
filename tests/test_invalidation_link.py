"""An invalidation link's round, against a scripted node: the PING and the owner questions go
in one write on the subscribed connection, and a PONG renews trust only in the shards whose
questions the node answered in the same round.

The real cluster tests (``test_cluster_shards.py``, ``test_redis_store.py``) move slots, freeze
and kill masters; a real node, though, also lets go of a moved slot's subscription by itself
(``sunsubscribe``), which hides what the questions alone decide. Here the node answers each
question as the test says, so each rule is seen on its own.
"""

from __future__ import annotations

import socket
import threading
import time
import typing as t

from flask_jwt_shield.stores.invalidation import InvalidationSubscriber
from flask_jwt_shield.stores.invalidation import Node

MAX_DELAY = 0.2
NODE: Node = ("127.0.0.1", 7000)


def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _push(*items: str | int) -> bytes:
    parts = [b":%d\r\n" % item if isinstance(item, int) else _bulk(item) for item in items]
    return b">%d\r\n" % len(items) + b"".join(parts)


class ScriptedNode:
    """Answers like a cluster node over RESP3, on a new socket pair per connection:
    ``answers`` maps a shard to what its owner question gets (``":0"`` while owned)."""

    def __init__(self) -> None:
        self.answers: dict[int, str] = {}
        self.writes: list[list[list[str]]] = []  # the commands of each write a link made
        self._sockets: list[socket.socket] = []

    def connect(self) -> socket.socket:
        """A new connection: the link's end of a socket pair whose other end this node serves."""
        ours, theirs = socket.socketpair()
        self._sockets += [ours, theirs]
        threading.Thread(target=self._serve, args=(ours,), daemon=True).start()
        return theirs

    def _serve(self, peer: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = peer.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            commands, buffer = _commands(buffer)
            if not commands:
                continue
            self.writes.append(commands)
            out = b""
            for command in commands:
                name = command[0].upper()
                if name in ("SSUBSCRIBE", "SUNSUBSCRIBE"):
                    out += _push(name.lower(), command[1], 1 if name == "SSUBSCRIBE" else 0)
                elif name == "PING":
                    out += b"+PONG\r\n"
                elif name == "EXISTS":
                    out += self.answers.get(int(command[1].split(":")[0]), ":0").encode() + b"\r\n"
                else:
                    out += b"-ERR unknown command\r\n"
            try:
                peer.sendall(out)
            except OSError:
                return

    def rounds(self) -> list[list[list[str]]]:
        """The writes that began with a PING."""
        return [write for write in list(self.writes) if write[0][0] == "PING"]

    def close(self) -> None:
        for end in self._sockets:
            end.close()


def _commands(buffer: bytes) -> tuple[list[list[str]], bytes]:
    """The whole RESP commands at the start of ``buffer``, and what follows them."""
    commands = []
    while buffer.startswith(b"*"):
        lines = buffer.split(b"\r\n")
        count = int(lines[0][1:])
        if len(lines) < 1 + 2 * count + 1:
            break
        commands.append([lines[2 + 2 * n].decode() for n in range(count)])
        buffer = b"\r\n".join(lines[1 + 2 * count :])
    return commands, buffer


class _Connection:
    """What the link's ``Wire`` uses of a redis-py connection, over the scripted node."""

    socket_timeout = 1.0

    def __init__(self, node: ScriptedNode) -> None:
        self._node = node
        self._sock: socket.socket | None = None

    def connect(self) -> None:
        self._sock = self._node.connect()
        self._sock.settimeout(self.socket_timeout)

    def disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def pack_commands(self, commands: t.Iterable[t.Sequence[str | int]]) -> list[bytes]:
        return [b"*%d\r\n" % len(command) + b"".join(_bulk(str(part)) for part in command) for command in commands]


class FakeStore:
    """A store of two shards on one node, recording what the link tells it, in order."""

    max_delay = MAX_DELAY
    timeout = 0.5

    def __init__(self, node: ScriptedNode) -> None:
        self.node = node
        self.calls: list[tuple[str, list[int], float]] = []
        self.lock = threading.Lock()

    def shards(self) -> list[int]:
        return [0, 1]

    def subscription(self, shard: int) -> tuple[str, str]:
        return "SSUBSCRIBE", f"{shard}:invalidations"

    def shard_owners(self, shards: list[int], attempt: int) -> dict[Node, list[int]]:
        return {NODE: list(shards)}

    def subscriber_connection(self, node: Node) -> t.Any:
        return _Connection(self.node)

    def owner_questions(self, node: Node, shards: list[int]) -> dict[int, list[str]] | None:
        return {shard: ["EXISTS", f"{shard}:owner-probe"] for shard in shards}

    def forget_answers(self, shards: t.Iterable[int]) -> None:
        with self.lock:
            self.calls.append(("forget", sorted(shards), 0.0))

    def trust_until(self, shards: t.Iterable[int], instant: float) -> None:
        with self.lock:
            self.calls.append(("trust", sorted(shards), instant))

    def trusted(self) -> list[tuple[list[int], float]]:
        with self.lock:
            return [(shards, instant) for kind, shards, instant in self.calls if kind == "trust" and instant]


def until(condition: t.Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # bounded: until the condition holds or the deadline passes
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def run_link(answers: dict[int, str] | None = None) -> tuple[ScriptedNode, FakeStore, InvalidationSubscriber]:
    node = ScriptedNode()
    node.answers.update(answers or {})
    store = FakeStore(node)
    subscriber = InvalidationSubscriber(store)
    subscriber.start()
    return node, store, subscriber


def test_a_round_is_one_write_of_the_ping_and_every_owner_question() -> None:
    node, store, subscriber = run_link()
    try:
        until(lambda: len(store.trusted()) >= 3)
        for write in node.rounds():
            assert write == [["PING"], ["EXISTS", "0:owner-probe"], ["EXISTS", "1:owner-probe"]]
        shards, instant = store.trusted()[-1]
        assert shards == [0, 1]
        assert time.monotonic() < instant <= time.monotonic() + MAX_DELAY  # from the PING's send
    finally:
        subscriber.stop()
        node.close()


def test_a_pong_renews_nothing_for_a_shard_whose_question_was_redirected() -> None:
    """MOVED on shard 1's question: the PONG of that same round renews only shard 0 (every
    renewal of shard 1 is of a round sent before the node moved it), and shard 1 is
    distrusted, forgotten and unsubscribed, and no longer asked about."""
    node, store, subscriber = run_link()
    try:
        until(lambda: len(store.trusted()) >= 2)
        changed = time.monotonic()
        node.answers[1] = "-MOVED 3999 127.0.0.1:7001"
        until(lambda: ("trust", [1], 0.0) in store.calls)
        until(lambda: len([r for r in store.trusted() if r[1] - MAX_DELAY > changed]) >= 2)
        with store.lock:
            calls = list(store.calls)
        dropped = calls.index(("trust", [1], 0.0))
        assert calls[dropped + 1] == ("forget", [1], 0.0)
        for kind, shards, instant in calls:
            if kind == "trust" and instant and 1 in shards:
                assert instant - MAX_DELAY < changed, "a round asked after the move renewed shard 1"
        assert all(shards == [0] for kind, shards, instant in calls[dropped:] if kind == "trust" and instant)
        assert any(["SUNSUBSCRIBE", "1:invalidations"] in write for write in node.writes)
        assert node.rounds()[-1] == [["PING"], ["EXISTS", "0:owner-probe"]]  # no longer asked
    finally:
        subscriber.stop()
        node.close()


def test_clusterdown_on_a_question_ends_the_link_before_its_pong_counts() -> None:
    """CLUSTERDOWN on a question ends the link: both shards distrusted at once, and no round
    asked after the node went down renews anything -- the PONG before the error included,
    on this link and on every new one the supervisor opens."""
    node, store, subscriber = run_link()
    try:
        until(lambda: len(store.trusted()) >= 2)
        changed = time.monotonic()
        node.answers[0] = "-CLUSTERDOWN The cluster is down"
        until(lambda: ("trust", [0, 1], 0.0) in store.calls)
        links = len([w for w in node.writes if w[0][0] == "SSUBSCRIBE"])
        until(lambda: len([w for w in node.writes if w[0][0] == "SSUBSCRIBE"]) >= links + 4)  # reconnected
        until(lambda: len(node.rounds()) >= 4)
        for _shards, instant in store.trusted():
            assert instant - MAX_DELAY < changed, "a round asked after CLUSTERDOWN renewed trust"
    finally:
        subscriber.stop()
        node.close()
