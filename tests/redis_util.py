"""Start a real, throw-away ``redis-server`` for the tests.

The server listens on 127.0.0.1 on a free port, persists nothing (``--save ""``,
``--appendonly no``) unless asked to (``appendonly=True``: AOF with ``appendfsync always``),
keeps its files in a temporary directory, and is stopped by its PID. :func:`start_cluster`
builds a real three-master Redis Cluster the same way (``--cluster-enabled yes`` three times,
then ``redis-cli --cluster create``), all on loopback; with ``bus_proxies=True`` every node's
cluster bus is reached through a :class:`BusProxy`, which can stall the link from one node
to another while both keep reporting ``ok`` (a partition no node notices).
Without a ``redis-server`` binary the calling test is skipped with a loud reason -- except
when the environment variable ``CI`` is ``"true"``: CI must run these tests, so there the
test fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: how long a fresh server may take to answer PING before the test fails
STARTUP_TIMEOUT = 10.0


class RedisServer:
    """One running ``redis-server`` process: its :attr:`url`, :attr:`port` and :attr:`pid`."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, directory: Path, args: list[str] | None = None
    ) -> None:
        self.process = process
        self.port = port
        self.directory = directory
        self.args = args or []
        self.url = f"redis://127.0.0.1:{port}/0"

    def restart(self) -> None:
        """``SHUTDOWN`` the server (it writes its AOF), then start it again on the same port."""
        if self.running():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    sock.sendall(b"SHUTDOWN\r\n")
                    sock.recv(64)  # the server closes the connection as it exits
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.stop()
        self.process = _spawn(self.args, self.directory / f"redis-{self.port}.log")
        _wait_for_ping(self, self.port)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but never answers -- a hang."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        os.kill(self.pid, signal.SIGCONT)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        if self.running():
            os.kill(self.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def redis_server_binary() -> str:
    """Path of ``redis-server``; skips the test (fails it when ``CI=true``) if missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = (
            "redis-server NOT FOUND on PATH: the Redis tests did NOT run. Install it"
            " (apt-get install redis-server) to test the Redis backend."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " CI=true, so this is a failure, not a skip.", pytrace=False)
        pytest.skip(reason)
    return binary


def _free_port(bus: bool = False) -> int:
    """A free port; with ``bus``, one whose cluster bus port (+10000) is free too."""
    for _attempt in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    try:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _wait_for_ping(server: RedisServer, port: int) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while server.running() and time.monotonic() < deadline:
        if _answers_ping(port):
            return True
        time.sleep(0.02)
    return False


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(
    directory: Path, *, appendonly: bool = False, cluster: bool = False, extra: list[str] | None = None
) -> RedisServer:
    """Start ``redis-server`` with its files in ``directory``; return once it answers PING.

    ``appendonly``: persist every write to the AOF before answering (``appendfsync always``),
    so a ``SHUTDOWN`` and restart keeps everything. ``cluster``: a cluster-enabled node.
    """
    binary = redis_server_binary()
    directory.mkdir(parents=True, exist_ok=True)
    # Another process may take the free port between our probe and the server's bind:
    # then the server exits at once and we try another port.
    for _attempt in range(3):
        port = _free_port(bus=cluster)
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(directory),
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfilename",
            f"appendonly-{port}.aof",
            "--appenddirname",
            f"aof-{port}",
        ]
        if appendonly:
            args += ["--appendfsync", "always"]
        args += extra or []
        if cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(directory / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        server = RedisServer(_spawn(args, directory / f"redis-{port}.log"), port, directory, args)
        if _wait_for_ping(server, port):
            return server
        server.stop()
    output = "\n".join(p.read_text(errors="replace") for p in directory.glob("redis-*.log"))
    pytest.fail(f"redis-server did not answer PING within {STARTUP_TIMEOUT} s:\n{output}")


#: Where a cluster bus message header names its sender (``clusterMsg.sender``, 40 bytes):
#: after sig[4], totlen(4), ver(2), port(2), type(2), count(2), and three 8-byte epochs/offsets.
_SENDER_AT = 40
_NAME_LEN = 40


class BusProxy:
    """A TCP forwarder in front of one cluster node's bus port.

    The node announces the proxy's port (``--cluster-announce-bus-port``), so every other
    node's outgoing bus link to it -- which carries that node's PINGs and its PUBLISH
    broadcasts -- passes through here. Each connection is told apart by the sender named in
    its first message header; :meth:`stall` stops forwarding the links from one sender (the
    bytes wait in the kernel, the connection stays open, nothing is refused). The node's own
    links to the others are untouched, so each side keeps hearing the other: no node is
    flagged, ``cluster_state`` stays ``ok`` -- exactly a bus link that silently stalls.
    """

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self.target = 0
        self._stalled: set[str] = set()
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = False

    def start(self, target: int) -> None:
        """Forward to ``127.0.0.1:target`` (the node's real bus port)."""
        self.target = target
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self, sender: str) -> None:
        """Stop forwarding what node ``sender`` (its cluster node id) sends through here."""
        self._stalled.add(sender)

    def release(self, sender: str) -> None:
        """Undo :meth:`stall`."""
        self._stalled.discard(sender)

    def close(self) -> None:
        """Close the listener and every forwarded connection."""
        self._closed = True
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                inbound, _ = self._listener.accept()
                outbound = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                return
            self._sockets += [inbound, outbound]
            threading.Thread(target=self._pump, args=(inbound, outbound, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(outbound, inbound, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_sender: bool) -> None:
        sender = ""
        head = b""
        try:
            while not self._closed:
                if sender in self._stalled:
                    time.sleep(0.005)  # read nothing: the sender's bytes queue up unread
                    continue
                data = src.recv(65536)
                if not data:
                    break
                if from_sender and not sender:
                    head += data
                    if len(head) >= _SENDER_AT + _NAME_LEN:
                        sender = head[_SENDER_AT : _SENDER_AT + _NAME_LEN].decode("ascii", "replace")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class RedisCluster:
    """Three running cluster-enabled masters joined into one Redis Cluster."""

    def __init__(self, nodes: list[RedisServer], proxies: list[BusProxy] | None = None) -> None:
        self.nodes = nodes
        #: with ``bus_proxies``: ``proxies[i]`` stands in front of ``nodes[i]``'s bus port
        self.proxies = proxies or []
        self.url = f"redis+cluster://127.0.0.1:{nodes[0].port}"

    def stop(self) -> None:
        """Stop every node by its PID (and close the bus proxies)."""
        for node in self.nodes:
            node.stop()
        for proxy in self.proxies:
            proxy.close()


def redis_cli_binary() -> str:
    """Path of ``redis-cli`` (Debian's redis-tools); skips (fails when ``CI=true``) if missing."""
    binary = shutil.which("redis-cli")
    if binary is None:
        reason = "redis-cli NOT FOUND on PATH (apt-get install redis-tools): the Redis Cluster tests did NOT run."
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " CI=true, so this is a failure, not a skip.", pytrace=False)
        pytest.skip(reason)
    return binary


def _cluster_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            data = b""
            while b"cluster_state" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return (
                b"cluster_state:ok" in data
                and b"cluster_slots_assigned:16384" in data
                and b"cluster_slots_ok:16384" in data
            )
    except OSError:
        return False


def start_cluster(directory: Path, *, replicas: int = 0, bus_proxies: bool = False) -> RedisCluster:
    """Start three cluster-enabled masters (and ``replicas`` replicas of each) and join them
    (``redis-cli --cluster create``); with ``bus_proxies``, each node's bus behind a
    :class:`BusProxy`."""
    cli = redis_cli_binary()
    nodes: list[RedisServer] = []
    proxies: list[BusProxy] = []
    try:
        for i in range(3 * (1 + replicas)):
            extra: list[str] = []
            if bus_proxies:
                proxies.append(BusProxy())
                extra = ["--cluster-announce-bus-port", str(proxies[-1].port)]
            nodes.append(start_redis(directory / f"node{i}", cluster=True, extra=extra))
            if bus_proxies:
                proxies[-1].start(nodes[-1].port + 10000)
        result = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{result.stdout.decode()}{result.stderr.decode()}")
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(n.port) for n in nodes):  # bounded: every node agrees it is ok
            if time.monotonic() > deadline:
                pytest.fail("the Redis Cluster did not reach cluster_state:ok within 30 s")
            time.sleep(0.05)
    except BaseException:
        for node in nodes:
            node.stop()
        for proxy in proxies:
            proxy.close()
        raise
    return RedisCluster(nodes, proxies)


@contextmanager
def running_cluster() -> Iterator[RedisCluster]:
    """A started three-master cluster in a temporary directory, stopped (by PID) on exit."""
    with tempfile.TemporaryDirectory(prefix="jwt-shield-cluster-") as tmp:
        cluster = start_cluster(Path(tmp))
        try:
            yield cluster
        finally:
            cluster.stop()


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A started server keeping its files in ``directory``; yields its URL, stops it on exit."""
    server = start_redis(Path(directory))
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started server in a temporary directory, stopped (by PID) on exit."""
    with tempfile.TemporaryDirectory(prefix="jwt-shield-redis-") as tmp:
        server = start_redis(Path(tmp))
        try:
            yield server
        finally:
            server.stop()
