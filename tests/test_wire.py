"""The background threads' Redis connections (``wire.py``): replies read from the socket
itself, against a real redis-server, and replies cut anywhere by the network."""

from __future__ import annotations

import socket
import threading
import time
import typing as t

import pytest
import redis

from flask_jwt_shield.wire import Push
from flask_jwt_shield.wire import ReplyError
from flask_jwt_shield.wire import Wire

from .redis_util import RedisServer


def connection(server: RedisServer, timeout: float = 2.0, protocol: int = 2) -> t.Any:
    options: dict[str, t.Any] = {"port": server.port, "socket_timeout": timeout, "decode_responses": True}
    options["protocol"] = protocol  # 2 as the lease rounds connect, 3 as the links do
    return redis.connection.Connection(**options)


def test_a_link_subscribes_pings_and_hears_a_revocation(redis_server: RedisServer) -> None:
    wire = Wire(connection(redis_server))
    wire.connect()
    publisher = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        wire.send(("SUBSCRIBE", "revoked"))
        assert wire.read() == ["subscribe", "revoked", 1]
        assert not wire.ready(0.05)  # nothing to read: the wait runs out
        wire.send(("PING",))
        assert wire.ready(2.0)
        assert wire.read() == ["pong", ""]
        assert publisher.publish("revoked", "jti-1") == 1
        assert wire.ready(2.0)
        assert wire.read() == ["message", "revoked", "jti-1"]
        wire.send(("PING",), ("PING",))  # two commands in one write, two replies
        assert wire.read() == ["pong", ""]
        assert wire.ready(0.0)  # the second is buffered or on its way
        assert wire.read() == ["pong", ""]
    finally:
        publisher.close()
        wire.close()


def test_a_resp3_link_asks_its_questions_while_subscribed_in_one_write(redis_server: RedisServer) -> None:
    """How the invalidation links use a connection: subscribed, and in one write a PING and
    the owner questions, whose replies come in order; messages come as push frames between
    them, told apart from replies by their type."""
    wire = Wire(connection(redis_server, protocol=3))
    wire.connect()
    publisher = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        wire.send(("SSUBSCRIBE", "{s0}:i"))
        confirmation = wire.read()
        assert isinstance(confirmation, Push) and confirmation == ["ssubscribe", "{s0}:i", 1]
        assert publisher.execute_command("SPUBLISH", "{s0}:i", "jti-1") == 1
        wire.send(("PING",), ("EXISTS", "{s0}:owner-probe"), ("GET", "{s0}:owner-probe"))
        message = wire.read()  # published before the PING ran: delivered before its reply
        assert isinstance(message, Push) and message == ["smessage", "{s0}:i", "jti-1"]
        replies = [wire.read() for _ in range(3)]
        assert replies == ["PONG", 0, None]  # replies, not pushes
        assert not any(isinstance(reply, Push) for reply in replies)
        wire.send(("LRANGE", "{s0}:list", 0, -1))
        array = wire.read()
        assert array == [] and not isinstance(array, Push)  # an array reply is not a push
    finally:
        publisher.close()
        wire.close()


def test_an_error_reply_is_raised_and_the_connection_goes_on(redis_server: RedisServer) -> None:
    wire = Wire(connection(redis_server))
    wire.connect()
    try:
        wire.send(("EXISTS", "a"), ("GET", "a", "b"), ("EXISTS", "a"))
        assert wire.read() == 0
        with pytest.raises(ReplyError, match="wrong number of arguments") as refused:
            wire.read()
        assert not refused.value.redirected
        assert wire.read() == 0
    finally:
        wire.close()


def test_a_frozen_server_ends_a_read_after_the_socket_timeout(redis_server: RedisServer) -> None:
    """The kernel keeps the timeout now: a hang still ends in an error, not a stuck link."""
    wire = Wire(connection(redis_server, timeout=0.3))
    wire.connect()
    redis_server.pause()
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            wire.read()
        except (TimeoutError, OSError) as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    try:
        wire.send(("PING",))
        began = time.monotonic()
        reader.start()
        reader.join(3.0)
        assert outcome, "the read still waits on a frozen server"
        assert 0.2 < time.monotonic() - began < 3.0
    finally:
        redis_server.resume()
        wire.close()


class _SocketPairConnection:
    """The redis-py connection's part that :class:`Wire` uses, over one end of a socket
    pair whose other end the test writes to, byte by byte."""

    socket_timeout = 2.0

    def __init__(self) -> None:
        self._sock, self.peer = socket.socketpair()

    def connect(self) -> None:
        self._sock.settimeout(self.socket_timeout)

    def disconnect(self) -> None:
        self._sock.close()
        self.peer.close()

    def pack_commands(self, commands: t.Any) -> list[bytes]:
        return [b"".join(part.encode() for part in command) for command in commands]


def test_a_reply_cut_anywhere_by_the_network_is_read_whole() -> None:
    raw = (
        b"*3\r\n$8\r\nsmessage\r\n$12\r\n{jws:u0.3}:i\r\n$0\r\n\r\n"
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        b":-1\r\n$-1\r\n*-1\r\n+OK\r\n"
        b"-MOVED 3999 127.0.0.1:7001\r\n"
        b"*2\r\n*1\r\n:7\r\n$3\r\n\xc3\xa9t\r\n"
        b">3\r\n$8\r\nsmessage\r\n$1\r\nc\r\n$1\r\nj\r\n+PONG\r\n_\r\n"
    )
    fake = _SocketPairConnection()
    wire = Wire(fake)
    wire.connect()

    def trickle() -> None:
        for index in range(len(raw)):
            fake.peer.sendall(raw[index : index + 1])
            time.sleep(0.0005)

    writer = threading.Thread(target=trickle)
    writer.start()
    try:
        assert wire.read() == ["smessage", "{jws:u0.3}:i", ""]
        assert wire.read() == ["pong", ""]
        assert wire.read() == -1
        assert wire.read() is None
        assert wire.read() is None
        assert wire.read() == "OK"
        with pytest.raises(ReplyError, match=r"^MOVED 3999") as moved:
            wire.read()
        assert moved.value.redirected
        assert wire.read() == [[7], "ét"]
        push = wire.read()
        assert isinstance(push, Push) and push == ["smessage", "c", "j"]
        assert wire.read() == "PONG"
        assert wire.read() is None
    finally:
        writer.join()
        wire.close()


def test_a_reply_type_a_link_never_asks_for_ends_the_connection() -> None:
    fake = _SocketPairConnection()
    wire = Wire(fake)
    wire.connect()
    try:
        fake.peer.sendall(b"%1\r\n+a\r\n:1\r\n")  # a RESP3 map
        with pytest.raises(ConnectionError, match="unexpected reply type"):
            wire.read()
    finally:
        wire.close()


def test_a_closed_connection_is_an_error_not_an_empty_reply() -> None:
    fake = _SocketPairConnection()
    wire = Wire(fake)
    wire.connect()
    fake.peer.sendall(b"*2\r\n$4\r\npo")
    fake.peer.close()
    try:
        with pytest.raises(ConnectionError, match="closed"):
            wire.read()
    finally:
        wire.close()
