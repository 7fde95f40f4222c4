"""Redis connections for the background threads: replies read straight from the socket.

The invalidation links wake four times per ``max_delay`` on each node, and the leased rate
limits settle every ``JWT_SHIELD_RATE_LIMIT_SYNC_INTERVAL``, in a process whose request
threads are busy. Every system call a background thread makes releases the GIL, and when it
returns the thread has to take the GIL back from a request thread. Through redis-py's
connections a link's round cost 13 calls and a lease round 8: a timeout set and restored
around each wait, a ``poll`` before each send and each receive on a socket that has a
timeout, the pool's check that a connection has nothing unread. On two cores shared with
the load generator and Redis, each of those hand-offs cost the request thread about 100 µs
of throughput (benchmarks/RESULTS.md, "The cluster's remaining gap").

:class:`Wire` takes a redis-py connection (which does the connecting: TLS, AUTH, the
handshake) and from then on reads and writes its socket itself. The socket blocks, with
its timeout kept by the kernel (``SO_RCVTIMEO``, ``SO_SNDTIMEO``) where the platform has it,
so a send is one ``sendto`` and a receive one ``recvfrom``. Only what those threads read is
parsed: simple strings, errors, integers, bulk strings and arrays of them (RESP2, which the
lease rounds speak), and RESP3's push frames and null (the invalidation links speak RESP3,
where a subscribed connection may also run the owner probes: a round is then one write and
one read on one connection).
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import typing as t

__all__ = ["Push", "ReplyError", "Wire"]


class ReplyError(Exception):
    """An error reply (``-MOVED 3999 127.0.0.1:7001``, ``-CLUSTERDOWN ...``)."""

    @property
    def redirected(self) -> bool:
        """The cluster sent the command to another node (``MOVED``, ``ASK``): it did not run."""
        return str(self).startswith(("MOVED ", "ASK "))


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


Reply: t.TypeAlias = str | int | ReplyError | list["Reply"] | None


class Push(list["Reply"]):
    """A RESP3 push frame (``>``): a pub/sub message or a subscription's confirmation, sent
    by the server between the replies to the connection's commands."""


class Wire:
    """One connection of a background thread. ``connection`` is a redis-py connection not yet
    connected (``connect``, ``disconnect``, ``pack_commands``, ``socket_timeout``)."""

    def __init__(self, connection: t.Any) -> None:
        self.connection = connection
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._poll: t.Any = None

    def connect(self) -> None:
        self.connection.connect()
        sock = self.connection._sock  # redis-py keeps the connected socket here
        if not isinstance(sock, socket.socket):
            raise ConnectionError("the Redis connection has no socket to read")
        self._sock = sock
        timeout = self.connection.socket_timeout
        if type(sock) is socket.socket and timeout and sys.platform.startswith("linux"):
            # The kernel keeps the timeout: no poll() before each call. TLS sockets keep
            # Python's timeouts (OpenSSL has its own buffer and retries).
            seconds = int(timeout)
            deadline = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, deadline)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, deadline)
            sock.settimeout(None)
        if hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)

    def close(self) -> None:
        self.connection.disconnect()

    def send(self, *commands: t.Sequence[str | int]) -> None:
        """Send ``commands`` in one write."""
        self._socket().sendall(b"".join(self.connection.pack_commands(commands)))

    def ready(self, timeout: float) -> bool:
        """A reply can be read: one is buffered, or data arrives within ``timeout`` seconds."""
        if self._complete():
            return True
        sock = self._socket()
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return True
        if self._poll is not None:
            return bool(self._poll.poll(max(0, int(timeout * 1000))))
        return bool(select.select([sock], [], [], timeout)[0])

    def read(self) -> Reply:
        """The next reply, waiting for it at most the socket's timeout; an error reply is
        raised as :class:`ReplyError`."""
        reply = self.reply()
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def reply(self) -> Reply:
        """The next reply, an error reply returned as a :class:`ReplyError`."""
        while True:
            try:
                reply, end = _parse(self._buffer, 0)
            except _Incomplete:
                self._fill()
                continue
            except ValueError:
                raise ConnectionError("a malformed reply from Redis") from None
            del self._buffer[:end]
            return reply

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionError("not connected")
        return self._sock

    def _complete(self) -> bool:
        if not self._buffer:
            return False
        try:
            _parse(self._buffer, 0)
        except _Incomplete:
            return False
        except ValueError:
            return True  # read() reports it
        return True

    def _fill(self) -> None:
        try:
            data = self._socket().recv(65536)
        except BlockingIOError:  # the kernel's timeout ran out
            raise TimeoutError("Redis did not answer in time") from None
        if not data:
            raise ConnectionError("Redis closed the connection")
        self._buffer += data


def _parse(buffer: bytearray, start: int) -> tuple[Reply, int]:
    """The reply that begins at ``start``, and where it ends."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    kind, line, after = buffer[start], bytes(buffer[start + 1 : end]), end + 2
    if kind == 0x2B:  # +
        return line.decode(errors="replace"), after
    if kind == 0x2D:  # -
        return ReplyError(line.decode(errors="replace")), after
    if kind == 0x3A:  # :
        return int(line), after
    if kind == 0x24:  # $
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            raise _Incomplete
        return bytes(buffer[after : after + size]).decode(errors="replace"), after + size + 2
    if kind == 0x2A or kind == 0x3E:  # * an array, > a push frame (RESP3)
        count = int(line)
        if count < 0:
            return None, after
        items: list[Reply] = [] if kind == 0x2A else Push()
        for _ in range(count):
            item, after = _parse(buffer, after)
            items.append(item)
        return items, after
    if kind == 0x5F:  # _ null (RESP3)
        return None, after
    raise ConnectionError(f"unexpected reply type {chr(kind)!r} from Redis")
