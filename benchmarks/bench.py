"""Per-request cost of Flask-JWT-Shield next to bare Flask and its peers.

Run from the repository root (see benchmarks/README.md)::

    python benchmarks/bench.py                 # in-process (direct WSGI calls), the default
    python benchmarks/bench.py --http          # over HTTP: gunicorn + wrk (or a Python client)
    python benchmarks/bench.py --inprocess --http --write-results   # both; rewrite RESULTS.md
    python benchmarks/bench.py --quick         # smoke run, well under 30 s

Every row is one entry of ``ROWS``: an app factory from ``benchmarks/apps.py`` (with keyword
arguments) and whether each request carries the same token or a token never seen before.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import gc
import http.client
import importlib
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from flask import Flask

    from flask_jwt_shield import JWTShield
    from flask_jwt_shield.state import ShieldState

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

apps = importlib.import_module("benchmarks.apps")

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
PATH = "/api/me"


# --- the rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One benchmark row: an app from ``apps.py`` and how its requests carry tokens."""

    key: str
    label: str
    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: ``True``: every request carries a token the app has never seen (a pre-minted pool).
    fresh: bool = False
    #: The goal for the ratio to bare Flask, if this row has one.
    target: float | None = None
    #: Extra WSGI environ entries for the in-process run (e.g. ``REMOTE_ADDR`` for geo rows).
    environ: dict[str, str] = field(default_factory=dict)
    #: ``(other row, at most)``: a goal for this row's ratio to another row's (same round).
    vs: tuple[str, float] | None = None
    #: Run over HTTP too. Geo rows are in-process only: over loopback every client is
    #: 127.0.0.1, which has no location, so the geo step would be measured doing nothing.
    http: bool = True
    #: Every request carries a DPoP-bound token and a proof never seen before (a pre-minted
    #: pool of ``(Authorization, DPoP)`` pairs). In-process only: the wrk script sends one
    #: header per request.
    dpop: bool = False
    #: The request header that carries the minted value (``HTTP_COOKIE`` for cookie rows).
    carrier: str = "HTTP_AUTHORIZATION"

    @property
    def needs_redis(self) -> bool:
        return "redis" in self.kwargs.values()

    @property
    def needs_cluster(self) -> bool:
        return "cluster" in self.kwargs.values()

    def make_app(self) -> Any:
        return getattr(apps, self.factory)(**self.kwargs)

    @property
    def gunicorn_spec(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.kwargs.items())
        return f"benchmarks.apps:{self.factory}({args})"

    @property
    def needs_shield(self) -> bool:
        return self.factory.startswith("make_shield")


BASELINE = "bare"

ROWS: tuple[Row, ...] = (
    Row("bare", "bare Flask", "make_bare"),
    Row("pyjwt", "PyJWT `jwt.decode` in before_request (HS256)", "make_pyjwt"),
    Row("jwt_extended", "Flask-JWT-Extended + blocklist", "make_jwt_extended"),
    Row(
        "jwt_extended_limiter",
        "Flask-JWT-Extended + blocklist + Flask-Limiter per token",
        "make_jwt_extended_limiter",
    ),
    Row("shield_hs256", "shield HS256, token seen before", "make_shield", target=1.5),
    Row(
        "shield_hs256_fresh",
        "shield HS256, token seen for the first time",
        "make_shield",
        fresh=True,
        target=2.7,
    ),
    Row(
        "shield_rs256",
        "shield RS256, token seen before",
        "make_shield",
        {"algorithm": "RS256"},
        target=1.5,
    ),
    Row(
        "shield_es256",
        "shield ES256, token seen before",
        "make_shield",
        {"algorithm": "ES256"},
        target=1.5,
    ),
    Row(
        "shield_limit",
        "shield HS256 + per-token limit + spike detection, token seen before",
        "make_shield",
        {"rate_limit": apps.UNREACHABLE_LIMIT},
        target=1.5,
    ),
    Row(
        "shield_geo",
        "shield HS256 + GeoIP step (City database), token seen before",
        "make_shield",
        {"geoip": True},
        target=1.5,
        environ={"REMOTE_ADDR": apps.GEO_CLIENT},
        http=False,
    ),
    Row(
        "shield_full",
        "shield full pipeline: limit + spike + GeoIP, token seen before",
        "make_shield",
        {"rate_limit": apps.UNREACHABLE_LIMIT, "geoip": True},
        target=1.5,
        environ={"REMOTE_ADDR": apps.GEO_CLIENT},
        http=False,
    ),
    Row(
        "shield_dashboard",
        "shield HS256 with the admin dashboard registered, token seen before",
        "make_shield",
        {"dashboard": True},
        target=1.5,
        vs=("shield_hs256", 1.10),  # registering the dashboard adds nothing to a protected request
    ),
    Row(
        "shield_rs_cached",
        "shield resource-server mode (IdP JWK Set), RS256 token seen before",
        "make_shield_rs",
        target=1.5,
        vs=("shield_rs256", 1.10),
    ),
    Row(
        "shield_rs_status",
        "shield resource-server mode + Token Status List check, RS256 token seen before",
        "make_shield_rs",
        {"status_list": True},
        target=1.25,
        vs=("shield_rs_cached", 1.05),  # the status check is a dict lookup and a bit lookup
    ),
    Row(
        "pyjwt_rs256_fresh",
        "PyJWT `jwt.decode` in before_request (RS256, IdP token seen for the first time)",
        "make_pyjwt",
        {"algorithm": "RS256"},
        fresh=True,
    ),
    Row(
        "shield_rs_fresh",
        "shield resource-server mode, RS256 token from the IdP seen for the first time",
        "make_shield_rs",
        fresh=True,
    ),
    Row(
        "bare_es256_verify",
        "bare Flask + one ES256 signature check per request (the floor under the DPoP row)",
        "make_bare_es256_verify",
        dpop=True,
        http=False,
    ),
    Row(
        "shield_dpop",
        "shield HS256 + DPoP-bound token, new ES256 proof per request",
        "make_shield",
        {"dpop": True},
        target=2.5,
        dpop=True,
        http=False,
    ),
    Row(
        "shield_dbsc",
        "shield HS256, DBSC-bound cookie session (access, fingerprint and bound cookie), warm",
        "make_shield",
        {"dbsc": True},
        target=1.3,
        http=False,
        carrier="HTTP_COOKIE",
    ),
    Row(
        "shield_sqlite",
        "shield HS256, SQLite store (local view, change counter), token seen before",
        "make_shield",
        {"store": "sqlite"},
        target=1.3,
    ),
    Row(
        "jwt_extended_limiter_redis",
        "Flask-JWT-Extended + blocklist + Flask-Limiter per token, on Redis",
        "make_jwt_extended_limiter",
        {"storage": "redis"},
    ),
    Row(
        "shield_redis",
        "shield HS256, Redis store (local view, no round trip), token seen before",
        "make_shield",
        {"store": "redis"},
        target=1.5,
    ),
    Row(
        "shield_redis_limit",
        "shield HS256, Redis store + per-token limit + spike on Redis, token seen before",
        "make_shield",
        {"store": "redis", "rate_limit": apps.UNREACHABLE_LIMIT},
        target=3.0,
    ),
    Row(
        "shield_redis_leased",
        "shield HS256, Redis store + per-token limit + spike, leased mode (no round trip), token seen before",
        "make_shield",
        {"store": "redis", "rate_limit": apps.UNREACHABLE_LIMIT, "config": {"JWT_SHIELD_RATE_LIMIT_MODE": "leased"}},
        target=1.5,
    ),
    Row(
        "shield_cluster",
        "shield HS256, Redis Cluster store (3 masters, local view, no round trip), token seen before",
        "make_shield",
        {"store": "cluster"},
        target=1.5,
    ),
    Row(
        "shield_cluster_limit",
        "shield HS256, Redis Cluster store (3 masters) + per-token limit + spike on the cluster, token seen before",
        "make_shield",
        {"store": "cluster", "rate_limit": apps.UNREACHABLE_LIMIT},
    ),
    Row(
        "shield_cluster_leased",
        "shield HS256, Redis Cluster store (3 masters) + per-token limit + spike, leased mode, token seen before",
        "make_shield",
        {"store": "cluster", "rate_limit": apps.UNREACHABLE_LIMIT, "config": {"JWT_SHIELD_RATE_LIMIT_MODE": "leased"}},
        target=1.5,
    ),
)


@dataclass
class Prepared:
    """A row whose app is built and whose tokens are minted."""

    row: Row
    app: Any
    #: Authorization values: one (same token) or a pool (fresh tokens); for DPoP rows,
    #: a pool of (Authorization, DPoP) pairs.
    headers: list[Any]
    check_header: Any  # used once before timing, never in a timed request
    cursor: int = 0

    def take(self, n: int) -> list[Any]:
        if not (self.row.fresh or self.row.dpop):
            return [self.headers[0]] * n
        if self.cursor + n > len(self.headers):
            raise RuntimeError(f"{self.row.key}: token pool exhausted (bug in pool sizing)")
        batch = self.headers[self.cursor : self.cursor + n]
        self.cursor += n
        return batch


def prepare(row: Row, pool_size: int) -> Prepared:
    """Build the row's app and mint its tokens (``pool_size`` of them for a fresh row)."""
    app = row.make_app()
    mint = app.extensions["bench_mint_dpop" if row.dpop else "bench_mint"]
    headers = mint(pool_size + 1 if row.fresh or row.dpop else 2)
    if row.fresh and len(set(headers)) != len(headers):
        raise NotOK(f"{row.key}: the minted tokens are not all distinct")
    return Prepared(row, app, headers[:-1], headers[-1])


def select_rows(keys: str | None) -> list[Row]:
    if not keys:
        return list(ROWS)
    wanted = {key.strip() for key in keys.split(",") if key.strip()}
    unknown = wanted - {row.key for row in ROWS}
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(sorted(unknown))} (see --list)")
    wanted.add(BASELINE)
    return [row for row in ROWS if row.key in wanted]


def shield_import_error() -> str | None:
    """``None`` if ``flask_jwt_shield`` imports, else a message saying how to fix it."""
    try:
        from flask_jwt_shield import JWTShield  # noqa: F401
        from flask_jwt_shield import current_claims  # noqa: F401
    except Exception as exc:
        return (
            f"flask_jwt_shield is not importable ({type(exc).__name__}: {exc}); shield rows "
            "skipped. Install it (`pip install -e .`) or run with PYTHONPATH=<repo root>."
        )
    return None


def usable_rows(rows: list[Row]) -> tuple[list[Row], list[str]]:
    """Drop the shield rows when the package cannot be imported; return them and notes."""
    error = shield_import_error()
    if error is None:
        return rows, []
    print(f"WARNING: {error}", file=sys.stderr)
    return [row for row in rows if not row.needs_shield], [error]


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str | None]:
    """A redis-server on a free 127.0.0.1 port, persisting nothing, stopped by its PID.

    Yields its URL, or ``None`` when no ``redis-server`` is installed.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="jwt-shield-bench-redis-")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # bounded: until it answers PING
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)


def _observe(url: str, prefix: str, n: int, conn: Any) -> None:
    from flask_jwt_shield.stores import RedisStore

    store = RedisStore(url, prefix=prefix, max_delay=1.0)
    now = time.time()
    for i in range(n):
        jti = f"p{i}"
        store.check(jti=jti, sid=None, sub="a", kid="k", iat=now, now=now)
        deadline = time.monotonic() + 5
        while not store.watching() and time.monotonic() < deadline:
            time.sleep(0.001)
        store.check(jti=jti, sid=None, sub="a", kid="k", iat=now, now=now)
        conn.send(store.view_of("a").fresh(jti))
        deadline = time.monotonic() + 5
        while store.check(jti=jti, sid=None, sub="a", kid="k", iat=now, now=now) is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.0001)
        conn.send(time.monotonic())  # CLOCK_MONOTONIC: one clock for every process of a host
    store.close()


def run_propagation(url: str, n: int) -> str:
    """How late a revocation made in one process takes effect in another that answers from
    its local view (the Redis store's documented bound is JWT_SHIELD_REVOCATION_MAX_DELAY)."""
    import multiprocessing

    from flask_jwt_shield.stores import RedisStore

    prefix = f"bench{os.getpid()}"
    revoker = RedisStore(url, prefix=prefix)
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_observe, args=(url, prefix, n, theirs))
    child.start()
    delays = []
    try:
        for i in range(n):
            if not ours.recv():
                raise NotOK("the observing process was not answering from its local view")
            started = time.monotonic()
            revoker.revoke("jti", f"p{i}", until=time.time() + 3600)
            delays.append((ours.recv() - started) * 1000)
    finally:
        child.join(30)
        revoker.close()
    ordered = sorted(delays)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return (
        "| revocations | p50 (ms) | p99 (ms) | max (ms) | bound (ms) |\n|---:|---:|---:|---:|---:|\n"
        f"| {n} | {statistics.median(delays):.2f} | {p99:.2f} | {ordered[-1]:.2f} | 1000 |"
    )


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str | None]:
    """Three cluster-enabled redis-servers on free 127.0.0.1 ports joined into one Redis
    Cluster (``redis-cli --cluster create``: each master owns a contiguous third of the
    slots), stopped by their PIDs. Yields its URL, or ``None`` without the binaries."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="jwt-shield-bench-cluster-")
    processes, ports = [], []
    try:
        for _ in range(3):
            port = free_port()
            while port + 10000 > 65535:
                port = free_port()
            ports.append(port)
            processes.append(
                subprocess.Popen(
                    [
                        *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                        *("--dir", directory, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000"),
                        *("--cluster-config-file", f"{directory}/nodes-{port}.conf"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(0.5)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while True:  # bounded: until every node says the cluster is ok
            infos = [
                subprocess.run([cli, "-p", str(p), "cluster", "info"], capture_output=True, text=True).stdout
                for p in ports
            ]
            if all("cluster_state:ok" in info for info in infos):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)


def _observe_subjects(url: str, prefix: str, subjects: list[str], conn: Any) -> None:
    from flask_jwt_shield.stores import RedisStore

    store = RedisStore(url, prefix=prefix, max_delay=1.0)
    now = time.time()
    for i, sub in enumerate(subjects):
        token: dict[str, Any] = {"jti": f"q{i}", "sid": None, "sub": sub, "kid": "k", "iat": now - 1, "now": now}
        store.check(**token)
        deadline = time.monotonic() + 5
        while not store.watching(sub) and time.monotonic() < deadline:
            time.sleep(0.001)
        store.check(**token)
        conn.send(store.view_of(sub).fresh(f"q{i}"))
        deadline = time.monotonic() + 5
        while store.check(**token) is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.0001)
        conn.send(time.monotonic())
    store.close()


def run_cluster_propagation(url: str, n: int) -> str:
    """On a three-master cluster: the spread of many users' state over the masters, and how
    late "log out everywhere" of a user (one stripe, on whichever master owns it) takes
    effect in another process answering from its local view."""
    import multiprocessing

    from flask_jwt_shield.stores import Family
    from flask_jwt_shield.stores import RedisStore

    prefix = f"benchc{os.getpid()}"
    revoker = RedisStore(url, prefix=prefix)
    now = time.time()
    users = [f"user{i}" for i in range(n)]
    for sub in users:
        family = Family(
            sid=f"s-{sub}",
            sub=sub,
            created_at=now,
            expires_at=now + 3600,
            last_used_at=now,
            current_jti=f"r-{sub}",
            current_iat=now,
        )
        revoker.create_family(family, max_sessions=10, idle_ttl=3600, until=now + 3600)
    spread = revoker.keys_per_node()
    client = revoker._client()
    owner = {sub: client.get_node_from_key(revoker.tag_of(sub)).port for sub in users}
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_observe_subjects, args=(url, prefix, users, theirs))
    child.start()
    delays: dict[int, list[float]] = {}
    try:
        for sub in users:
            if not ours.recv():
                raise NotOK("the observing process was not answering from its local view")
            started = time.monotonic()
            revoker.revoke_subject(sub, time.time(), time.time() + 3600)
            delays.setdefault(owner[sub], []).append((ours.recv() - started) * 1000)
    finally:
        child.join(60)
        revoker.close()

    def row(name: str, values: list[float], keys: str) -> str:
        ordered = sorted(values)
        p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
        return (
            f"| {name} | {keys} | {len(values)} | {statistics.median(values):.2f} | {p99:.2f} |"
            f" {ordered[-1]:.2f} | 1000 |"
        )

    lines = [
        "| master | keys | revocations | p50 (ms) | p99 (ms) | max (ms) | bound (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for port in sorted(delays):
        keys = next((str(count) for where, count in spread.items() if where.endswith(f":{port}")), "0")
        lines.append(row(f"127.0.0.1:{port}", delays[port], keys))
    everything = [d for values in delays.values() for d in values]
    lines.append(row("all", everything, str(sum(spread.values()))))
    return "\n".join(lines)


# --- in-process: direct WSGI calls ------------------------------------------------------------


def environ_template() -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(path=PATH, method="GET", base_url="http://127.0.0.1:8000/")
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    environ["REMOTE_ADDR"] = "127.0.0.1"
    return environ


class NotOK(RuntimeError):
    pass


def call_once(prepared: Prepared, template: dict[str, Any], header: Any) -> tuple[str, bytes]:
    """One request through ``app.wsgi_app``; returns the status line and the body."""
    status: list[str] = []

    def start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(status_line)
        return None

    environ = {**template, **prepared.row.environ}
    if prepared.row.dpop:
        environ["HTTP_AUTHORIZATION"], environ["HTTP_DPOP"] = header
    else:
        environ[prepared.row.carrier] = header
    body_iter = prepared.app.wsgi_app(environ, start_response)
    try:
        body = b"".join(body_iter)
    finally:
        close = getattr(body_iter, "close", None)
        if close is not None:
            close()
    return status[0], body


def check_ok(prepared: Prepared, template: dict[str, Any]) -> None:
    """Refuse to time a row that does not answer 200 with the subject."""
    status, body = call_once(prepared, template, prepared.check_header)
    if not status.startswith("200"):
        raise NotOK(f"{prepared.row.key}: expected 200, got {status}: {body[:300]!r}")
    if json.loads(body).get("sub") != apps.SUBJECT:
        raise NotOK(f"{prepared.row.key}: unexpected body {body[:300]!r}")


def time_batch(prepared: Prepared, template: dict[str, Any], headers: list[Any]) -> float:
    """Seconds per request over one batch; every response must be 200."""
    wsgi_app = prepared.app.wsgi_app
    template = {**template, **prepared.row.environ}
    bad: list[str] = []

    def start_response(status_line: str, response_headers: Any, exc_info: Any = None) -> Any:
        if status_line[:3] != "200":
            bad.append(status_line)
        return None

    gc.collect()
    if prepared.row.dpop:
        # The same loop, with the proof header too (a separate loop keeps the other rows'
        # timing exactly as it was).
        start = time.perf_counter()
        for authorization, proof in headers:
            environ = template.copy()
            environ["HTTP_AUTHORIZATION"] = authorization
            environ["HTTP_DPOP"] = proof
            body_iter = wsgi_app(environ, start_response)
            for _chunk in body_iter:
                pass
            close = getattr(body_iter, "close", None)
            if close is not None:
                close()
        elapsed = time.perf_counter() - start
    else:
        carrier = prepared.row.carrier
        start = time.perf_counter()
        for header in headers:
            environ = template.copy()
            environ[carrier] = header
            body_iter = wsgi_app(environ, start_response)
            for _chunk in body_iter:
                pass
            close = getattr(body_iter, "close", None)
            if close is not None:
                close()
        elapsed = time.perf_counter() - start
    if bad:
        raise NotOK(f"{prepared.row.key}: {len(bad)} non-200 responses, e.g. {bad[0]}")
    return elapsed / len(headers)


@dataclass
class InProcessResult:
    row: Row
    samples_us: list[float]  # one per round: mean µs per request in that round's batch
    ratios: list[float]  # one per round: this row / bare Flask in the same round


def run_inprocess(rows: list[Row], rounds: int, batch: int, warmup: int, seed: int) -> list[InProcessResult]:
    template = environ_template()
    pool = warmup + rounds * batch
    prepared: list[Prepared] = []
    for row in rows:
        started = time.perf_counter()
        item = prepare(row, pool)
        check_ok(item, template)
        prepared.append(item)
        if row.fresh or row.dpop:
            took = time.perf_counter() - started
            print(
                f"  minted {pool} {'proofs' if row.dpop else 'tokens'} for {row.key} in {took:.1f} s", file=sys.stderr
            )

    for item in prepared:  # warm-up: imports, caches, first-call paths
        time_batch(item, template, item.take(warmup))
    # The apps and token pools live until the end: keep them out of the collector's way so
    # the collection before each batch is cheap and no batch pays for another's garbage.
    gc.collect()
    gc.freeze()

    rng = random.Random(seed)
    samples: dict[str, list[float]] = {item.row.key: [] for item in prepared}
    for number in range(rounds):
        order = prepared[:]
        rng.shuffle(order)  # no row always runs right after another
        for item in order:
            seconds = time_batch(item, template, item.take(batch))
            samples[item.row.key].append(seconds * 1e6)
        print(f"  round {number + 1}/{rounds} done", file=sys.stderr)

    base = samples[BASELINE]
    return [
        InProcessResult(
            item.row,
            samples[item.row.key],
            [value / bare for value, bare in zip(samples[item.row.key], base, strict=True)],
        )
        for item in prepared
    ]


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def verdict(row: Row, ratio: float) -> str:
    if row.target is None:
        return ""
    return f"≤ {row.target}x {'✅' if ratio <= row.target else '❌'}"


def inprocess_table(results: list[InProcessResult]) -> str:
    lines = [
        "| row | µs / request (median) | IQR (µs) | + µs over bare | x bare Flask | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    base = statistics.median(next(r.samples_us for r in results if r.row.key == BASELINE))
    for result in results:
        median = statistics.median(result.samples_us)
        low, high = quartiles(result.samples_us)
        ratio = statistics.median(result.ratios)
        lines.append(
            f"| {result.row.label} | {median:.1f} | {low:.1f}-{high:.1f} | "
            f"{median - base:+.1f} | {ratio:.2f} | {verdict(result.row, ratio)} |"
        )
    return "\n".join(lines)


def goals_text(results: list[InProcessResult]) -> str:
    """Goals between rows (not against bare Flask), each the median over the rounds.

    * a row's ``vs`` goal: its µs / the other row's µs in the same round;
    * resource-server mode, first-seen token: the shield's µs at most PyJWT's own RS256
      decode plus the pipeline (what the shield adds over bare Flask for a cached token).
    """
    by_key = {r.row.key: r for r in results}
    lines: list[str] = []
    for result in results:
        goal = result.row.vs
        if goal is None or goal[0] not in by_key:
            continue
        other, limit = goal
        ratio = statistics.median(a / b for a, b in zip(result.samples_us, by_key[other].samples_us, strict=True))
        mark = "✅" if ratio <= limit else "❌"
        lines.append(f"- {result.row.label} / {by_key[other].row.label}: {ratio:.3f} (goal ≤ {limit:.2f}) {mark}")
    wanted = ("shield_rs_fresh", "pyjwt_rs256_fresh", "shield_rs_cached", BASELINE)
    if all(key in by_key for key in wanted):
        fresh, pyjwt, cached, bare = (by_key[key].samples_us for key in wanted)
        budget = [p + (c - b) for p, c, b in zip(pyjwt, cached, bare, strict=True)]
        spent = statistics.median(fresh)
        allowed = statistics.median(budget)
        mark = "✅" if statistics.median(f / a for f, a in zip(fresh, budget, strict=True)) <= 1.0 else "❌"
        lines.append(
            f"- resource-server mode, first-seen RS256 token: {spent:.1f} µs vs PyJWT's decode + the"
            f" pipeline {allowed:.1f} µs (goal ≤) {mark}"
        )
    return "\n".join(lines)


# --- over HTTP: gunicorn + wrk (or a Python client) -------------------------------------------

WRK_FRESH_LUA = r"""
-- Each wrk thread walks its own stride of the token file: no token is sent twice
-- unless the pool runs out (then it wraps and the count is printed as WRAPPED).
local threads = {}
local count = 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end
function init(args)
  tokens = {}
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  step = tonumber(args[2])
  i = tid + 1
  wrapped = 0
end
function request()
  if i > #tokens then
    i = tid + 1
    wrapped = wrapped + 1
  end
  local r = wrk.format(nil, nil, {["Authorization"] = tokens[i]})
  i = i + step
  return r
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("wrapped") end
  io.write(string.format("WRAPPED %d\n", total))
end
"""


@dataclass
class HttpSettings:
    rounds: int
    duration: float  # seconds per measured run
    warmup: float  # seconds of untimed load before it
    threads: int  # wrk threads
    connections: int
    requests: int  # requests per measured run of the Python client
    loadgen: str  # "wrk" or "python"
    fresh_pool: int  # tokens per measured run of a fresh row
    warm_pool: int  # tokens for its warm-up


@dataclass
class HttpRun:
    rps: float
    p50_ms: float | None
    non_2xx: int
    note: str = ""
    #: Where the worker's time went during the run (Linux only; see :func:`worker_threads`).
    threads: ThreadCost | None = None


@dataclass(frozen=True)
class ThreadCost:
    """The gunicorn worker's threads over one measured run, from ``/proc/<pid>/task/*/schedstat``
    (nanoseconds on a CPU and times scheduled, exact, unlike the 10 ms ticks of ``stat``).

    The request thread is the one that ran longest, gthread's server loop the second; every
    other thread is the app's own background work. Each wake-up of a background thread is a
    system call's return that needs the GIL back from the request or server thread."""

    request_us: float  # per request
    server_us: float  # per request
    background_us: float  # per request, all other threads together
    background_wakeups: float  # per second, all other threads together


def thread_clocks(pid: int) -> dict[int, tuple[int, int]] | None:
    """Per thread of ``pid``: (ns on a CPU, times scheduled); ``None`` without schedstat."""
    clocks: dict[int, tuple[int, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue  # a thread that ended in between
        clocks[int(tid)] = (int(fields[0]), int(fields[2]))
    return clocks or None


def worker_threads(
    before: dict[int, tuple[int, int]] | None,
    after: dict[int, tuple[int, int]] | None,
    requests: float,
    seconds: float,
) -> ThreadCost | None:
    if before is None or after is None or requests <= 0 or seconds <= 0:
        return None
    spent = sorted(
        ((ns - before.get(tid, (0, 0))[0], slices - before.get(tid, (0, 0))[1]) for tid, (ns, slices) in after.items()),
        reverse=True,
    )
    if len(spent) < 2:
        return None
    rest = spent[2:]
    return ThreadCost(
        spent[0][0] / 1e3 / requests,
        spent[1][0] / 1e3 / requests,
        sum(ns for ns, _ in rest) / 1e3 / requests,
        sum(slices for _, slices in rest) / seconds,
    )


def worker_pid(master: int) -> int | None:
    """The one worker of a gunicorn master (its only child), or ``None``."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if len(children) == 1 else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gunicorn(row: Row, log_dir: Path, masters: list[int] | None = None) -> Iterator[int]:
    """Start one gunicorn (1 gthread worker, 1 thread) for ``row``; yield its port (and
    append the master's PID to ``masters`` if given).

    The server is stopped by its PID (SIGTERM, then SIGKILL after 10 s) and waited for,
    whatever happens inside the ``with`` block.
    """
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    gunicorn_bin = Path(sys.executable).with_name("gunicorn")
    command = [
        str(gunicorn_bin) if gunicorn_bin.exists() else "gunicorn",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        "1",
        "--keep-alive",
        "5",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        row.gunicorn_spec,
    ]
    log_path = log_dir / f"gunicorn-{row.key}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    if masters is not None:
        masters.append(process.pid)
    try:
        yield port
    except Exception as exc:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{exc}\n--- gunicorn log ({log_path}) ---\n{tail}") from exc
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def get_once(port: int, header: str, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", PATH, headers={"Authorization": header})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(port: int, header: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = get_once(port, header)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer on port {port} in {timeout} s") from None
            time.sleep(0.1)
            continue
        if status != 200:
            raise NotOK(f"expected 200 from gunicorn, got {status}: {body[:300]!r}")
        return


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    result = subprocess.run(["wrk", "--version"], check=False, capture_output=True, text=True)
    match = re.search(r"wrk (\S+)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(
    port: int,
    settings: HttpSettings,
    duration: float,
    header: str,
    token_file: Path | None,
) -> HttpRun:
    command = [
        "wrk",
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
    ]
    if token_file is None:
        command += ["-H", f"Authorization: {header}", f"http://127.0.0.1:{port}{PATH}"]
    else:
        script = token_file.with_suffix(".lua")
        script.write_text(WRK_FRESH_LUA)
        command += ["-s", str(script), f"http://127.0.0.1:{port}{PATH}"]
        command += ["--", str(token_file), str(settings.threads)]
    output = subprocess.run(command, check=False, capture_output=True, text=True, timeout=duration + 60)
    text = output.stdout + output.stderr
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if output.returncode != 0 or rps is None:
        raise RuntimeError(f"wrk failed ({output.returncode}):\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE)
    wrapped = re.search(r"WRAPPED (\d+)", text)
    notes = []
    if errors:
        notes.append(f"socket errors: {errors.group(1)}")
    if wrapped and int(wrapped.group(1)):
        notes.append("token pool ran out: some tokens were sent twice")
    return HttpRun(
        float(rps.group(1)),
        parse_duration_ms(p50.group(1)) if p50 else None,
        int(non_2xx.group(1)) if non_2xx else 0,
        "; ".join(notes),
    )


def run_python_client(port: int, settings: HttpSettings, headers: list[str]) -> HttpRun:
    """``settings.requests`` GETs over ``settings.connections`` keep-alive connections."""
    per_connection = settings.requests // settings.connections
    latencies: list[float] = []
    non_2xx = [0]
    lock = threading.Lock()
    start_gate = threading.Barrier(settings.connections + 1)

    def worker(index: int) -> None:
        mine = headers[index :: settings.connections] if len(headers) > 1 else headers
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local: list[float] = []
        bad = 0
        start_gate.wait()
        try:
            for number in range(per_connection):
                header = mine[number % len(mine)]
                began = time.perf_counter()
                connection.request("GET", PATH, headers={"Authorization": header})
                response = connection.getresponse()
                response.read()
                local.append(time.perf_counter() - began)
                if response.status != 200:
                    bad += 1
        finally:
            connection.close()
        with lock:
            latencies.extend(local)
            non_2xx[0] += bad

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(settings.connections)]
    for thread in workers:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - began
    note = ""
    if len(headers) > 1 and per_connection * settings.connections > len(headers):
        note = "token pool ran out: some tokens were sent twice"
    return HttpRun(len(latencies) / elapsed, statistics.median(latencies) * 1e3, non_2xx[0], note)


@dataclass
class HttpResult:
    row: Row
    runs: list[HttpRun]
    ratios: list[float]


def run_http(rows: list[Row], settings: HttpSettings, seed: int) -> list[HttpResult]:
    rows = [row for row in rows if row.http]
    work_dir = Path(tempfile.mkdtemp(prefix="jwt-shield-bench-"))
    try:
        return _run_http(rows, settings, seed, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run_http(rows: list[Row], settings: HttpSettings, seed: int, work_dir: Path) -> list[HttpResult]:
    prepared: dict[str, Prepared] = {}
    token_files: dict[str, tuple[Path, Path]] = {}
    for row in rows:
        # A new gunicorn has an empty cache, so every round can reuse the same pool.
        item = prepare(row, settings.warm_pool + settings.fresh_pool)
        prepared[row.key] = item
        if row.fresh:
            warm, measured = (
                work_dir / f"{row.key}-warm.txt",
                work_dir / f"{row.key}.txt",
            )
            warm.write_text("\n".join(item.headers[: settings.warm_pool]) + "\n")
            measured.write_text("\n".join(item.headers[settings.warm_pool :]) + "\n")
            token_files[row.key] = (warm, measured)

    rng = random.Random(seed)
    runs: dict[str, list[HttpRun]] = {row.key: [] for row in rows}
    for number in range(settings.rounds):
        order = rows[:]
        rng.shuffle(order)
        for row in order:
            item = prepared[row.key]
            masters: list[int] = []
            with gunicorn(row, work_dir, masters) as port:
                wait_ready(port, item.check_header)
                if settings.loadgen == "wrk":
                    warm_file, measured_file = token_files.get(row.key, (None, None))
                    run_wrk(port, settings, settings.warmup, item.headers[0], warm_file)
                    worker = worker_pid(masters[0])
                    before = thread_clocks(worker) if worker else None
                    began = time.monotonic()
                    run = run_wrk(
                        port,
                        settings,
                        settings.duration,
                        item.headers[0],
                        measured_file,
                    )
                    seconds = time.monotonic() - began
                    after = thread_clocks(worker) if worker else None
                    # wrk's figure is over its own -d seconds; the clocks over the whole call
                    run.threads = worker_threads(before, after, run.rps * settings.duration, seconds)
                else:
                    half = settings.warm_pool
                    warm_headers = item.headers[:half] if row.fresh else item.headers[:1]
                    measured_headers = item.headers[half:] if row.fresh else item.headers[:1]
                    warm_settings = dataclasses.replace(
                        settings,
                        requests=max(settings.connections, settings.requests // 5),
                    )
                    run_python_client(port, warm_settings, warm_headers)
                    run = run_python_client(port, settings, measured_headers)
            if run.non_2xx:
                raise NotOK(f"{row.key}: {run.non_2xx} non-2xx responses over HTTP")
            runs[row.key].append(run)
            print(
                f"  round {number + 1}/{settings.rounds} {row.key}: {run.rps:.0f} req/s",
                file=sys.stderr,
            )

    base = runs[BASELINE]
    return [
        HttpResult(
            row,
            runs[row.key],
            [run.rps / bare.rps for run, bare in zip(runs[row.key], base, strict=True)],
        )
        for row in rows
    ]


def http_table(results: list[HttpResult]) -> str:
    lines = [
        (
            "| row | requests/s (median) | p50 latency (ms) | throughput x bare "
            "| cost x bare (1/throughput) | + µs over bare | notes |"
        ),
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    base_runs = next(r.runs for r in results if r.row.key == BASELINE)
    for result in results:
        rps = statistics.median(run.rps for run in result.runs)
        p50s = [run.p50_ms for run in result.runs if run.p50_ms is not None]
        p50 = f"{statistics.median(p50s):.2f}" if p50s else "-"
        ratio = statistics.median(result.ratios)
        cost = statistics.median(1 / value for value in result.ratios)
        # One worker with one thread serves one request at a time: 1/throughput is
        # the server's time per request, so the difference is the added cost.
        added = statistics.median(
            1e6 / run.rps - 1e6 / bare.rps for run, bare in zip(result.runs, base_runs, strict=True)
        )
        notes = "; ".join(sorted({run.note for run in result.runs if run.note}))
        lines.append(f"| {result.row.label} | {rps:.0f} | {p50} | {ratio:.2f} | {cost:.2f} | {added:+.0f} | {notes} |")
    return "\n".join(lines)


def threads_table(results: list[HttpResult]) -> str | None:
    """Medians over rounds of :class:`ThreadCost`; ``None`` when no run had them."""
    lines = [
        (
            "| row | request thread (µs / request) | server thread (µs / request) "
            "| background threads (µs / request) | background wake-ups / s |"
        ),
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        costs = [run.threads for run in result.runs if run.threads is not None]
        if not costs:
            continue
        lines.append(
            f"| {result.row.label} | {statistics.median(c.request_us for c in costs):.0f} "
            f"| {statistics.median(c.server_us for c in costs):.0f} "
            f"| {statistics.median(c.background_us for c in costs):.1f} "
            f"| {statistics.median(c.background_wakeups for c in costs):.0f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else None


# --- report -----------------------------------------------------------------------------------

PACKAGES = (
    "Flask",
    "Werkzeug",
    "PyJWT",
    "cryptography",
    "Flask-JWT-Extended",
    "Flask-Limiter",
    "limits",
    "gunicorn",
    "blinker",
    "Flask-JWT-Shield",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    if name == "Flask-JWT-Shield":
        try:
            import flask_jwt_shield
        except Exception:
            return "not importable"
        version = getattr(flask_jwt_shield, "__version__", None)
        return f"{version or 'unversioned'} (source tree, not installed)"
    return "not installed"


def git_revision() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if result.returncode != 0:
        return "no commit yet"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return result.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def environment_section(
    loadgen: str | None,
    started: datetime.datetime,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
) -> str:
    minutes = (datetime.datetime.now().astimezone() - started).total_seconds() / 60
    lines = [
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z')} (the run took {minutes:.1f} min)",
        f"- Machine: `nproc` {len(os.sched_getaffinity(0))}, {cpu_model()}; {platform.platform()}",
        (
            "- Load average (1, 5, 15 min) before the run: "
            + ", ".join(f"{value:.2f}" for value in load_before)
            + "; after: "
            + ", ".join(f"{value:.2f}" for value in load_after)
            + " (before: anything well above 0 is another process competing for the CPUs;"
            + " after: includes this run's own load)"
        ),
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- Repository revision: {git_revision()}",
        "- Packages: " + ", ".join(f"{name} {package_version(name)}" for name in PACKAGES),
    ]
    if loadgen == "wrk":
        lines.append(f"- Load generator: wrk {wrk_version()}")
    elif loadgen == "python":
        lines.append("- Load generator: the Python http.client client in bench.py (no wrk)")
    return "\n".join(lines)


# --- sessions: issue_tokens() and refresh() ------------------------------------------------


def _time_calls(call: Any, batch: int) -> float:
    """µs per call, over ``batch`` calls."""
    started = time.perf_counter()
    for _ in range(batch):
        call()
    return (time.perf_counter() - started) / batch * 1e6


def _shield_session_samples(store: str, rounds: int, batch: int) -> dict[str, list[float]]:
    # One session refreshed in a loop: its limits are counted, and set where they never bind.
    app = apps.make_shield(
        store=store,
        config={
            "JWT_SHIELD_REFRESH_RATE_LIMIT": "1000000/minute",
            "JWT_SHIELD_REFRESH_ADDRESS_RATE_LIMIT": "1000000/minute",
        },
    )
    shield = app.extensions["bench_shield"]
    state = app.extensions["jwt_shield"]
    counter = iter(range(10**9))
    with app.test_request_context(environ_base={"REMOTE_ADDR": "127.0.0.1"}):

        def issue() -> None:
            shield.issue_tokens(f"user-{next(counter)}")  # one session each: no MAX_SESSIONS eviction

        chain = [shield.issue_tokens(apps.SUBJECT)]

        def rotate() -> None:
            chain[0] = shield.refresh(chain[0].refresh_token)

        samples = {
            f"shield issue_tokens() ({store} store)": [_time_calls(issue, batch) for _ in range(rounds)],
            f"shield refresh() with rotation and reuse detection ({store} store)": [
                _time_calls(rotate, batch) for _ in range(rounds)
            ],
        }
    state.store.close()
    return samples


def _shield_endpoint_samples(store: str, rounds: int, batch: int) -> dict[str, list[float]]:
    """A refresh over WSGI: the token endpoint next to a one-line JSON view calling refresh().

    Both build their WSGI environ the same way per call, so the difference between the two
    rows is what the endpoint adds: RFC 6749 parsing, the session check before spending,
    the §5.1 response.
    """
    from flask import request
    from werkzeug.test import EnvironBuilder

    app: Flask = apps.make_shield(
        store=store,
        config={
            "JWT_SHIELD_REFRESH_RATE_LIMIT": "1000000/minute",
            "JWT_SHIELD_REFRESH_ADDRESS_RATE_LIMIT": "1000000/minute",
            "JWT_SHIELD_INTROSPECTION_RATE_LIMIT": None,
        },
    )
    state = app.extensions["jwt_shield"]
    shield: JWTShield = app.extensions["bench_shield"]
    app.register_blueprint(shield.token_blueprint(url="/oauth/token"))
    # Revocation and introspection (RFC 7009, RFC 7662) beside the token endpoint, with a
    # client authenticated by HTTP Basic as a gateway or a CLI would be.
    client = ("bench-client", "bench-secret")
    app.register_blueprint(
        shield.oauth_blueprint(
            authenticate_client=lambda c: (c.client_id, c.client_secret) == client,
            token_url="/oauth2/token",
            revocation_url="/oauth/revoke",
            introspection_url="/oauth/introspect",
            name="bench_oauth",
        )
    )
    basic = "Basic " + base64.b64encode(":".join(client).encode()).decode()

    @app.post("/refresh-json")
    @shield.exempt
    def refresh_json() -> Any:
        return shield.refresh(request.get_json()["refresh_token"]).as_dict()

    with app.app_context():
        chain = [shield.issue_tokens(apps.SUBJECT).refresh_token]

    def call(path: str, content_type: str, body: Any) -> None:
        environ = EnvironBuilder(
            path,
            method="POST",
            content_type=content_type,
            data=body(chain[0]),
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        ).get_environ()
        status: list[str] = []

        def start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(status_line)

        data = b"".join(app(environ, start_response))
        if not status[0].startswith("200"):
            raise NotOK(f"{path}: {status[0]} {data[:200]!r}")
        chain[0] = json.loads(data)["refresh_token"]

    def endpoint() -> None:
        call(
            "/oauth/token",
            "application/x-www-form-urlencoded",
            lambda token: f"grant_type=refresh_token&refresh_token={token}",
        )

    def plain() -> None:
        call("/refresh-json", "application/json", lambda token: json.dumps({"refresh_token": token}))

    with app.app_context():
        warm = shield.create_access_token(apps.SUBJECT)
    to_revoke: list[str] = []

    def post_form(path: str, body: str, expect: bytes) -> None:
        environ = EnvironBuilder(
            path,
            method="POST",
            content_type="application/x-www-form-urlencoded",
            data=body,
            headers=[("Authorization", basic)],
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        ).get_environ()
        status: list[str] = []

        def start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(status_line)

        data = b"".join(app(environ, start_response))
        if not status[0].startswith("200") or expect not in data:
            raise NotOK(f"{path}: {status[0]} {data[:200]!r}")

    def introspect() -> None:
        post_form("/oauth/introspect", f"token={warm}", b'"active": true')

    def revoke() -> None:
        post_form("/oauth/revoke", f"token={to_revoke.pop()}", b"")

    introspect_row = f"shield.introspection_view(), a warm access token, over WSGI ({store} store)"
    revoke_row = f"shield.revocation_view(), one access token, over WSGI ({store} store)"
    samples: dict[str, list[float]] = {
        f"one-line JSON view calling refresh(), over WSGI ({store} store)": [],
        f"shield.token_view(), form body, over WSGI ({store} store)": [],
        introspect_row: [],
        revoke_row: [],
    }
    for _ in range(rounds):  # interleaved, so that every row sees the same machine
        samples[f"one-line JSON view calling refresh(), over WSGI ({store} store)"].append(_time_calls(plain, batch))
        samples[f"shield.token_view(), form body, over WSGI ({store} store)"].append(_time_calls(endpoint, batch))
        samples[introspect_row].append(_time_calls(introspect, batch))
        with app.app_context():  # fresh tokens, minted outside the timed calls
            to_revoke[:] = [shield.create_access_token(apps.SUBJECT) for _ in range(batch)]
        samples[revoke_row].append(_time_calls(revoke, batch))
    state.store.close()
    return samples


def run_sessions(rounds: int, batch: int) -> str:
    """The session calls, timed directly (not over WSGI): what a /login or /refresh adds.

    The peer is Flask-JWT-Extended minting an access and a refresh token, which is all it
    does on refresh: no rotation, no reuse detection, nothing stored.
    """
    from flask_jwt_extended import create_access_token
    from flask_jwt_extended import create_refresh_token

    samples: dict[str, list[float]] = {}
    peer = apps.make_jwt_extended()
    with peer.app_context():

        def mint_pair() -> None:
            create_access_token(identity=apps.SUBJECT)
            create_refresh_token(identity=apps.SUBJECT)

        samples["Flask-JWT-Extended: create_access_token + create_refresh_token"] = [
            _time_calls(mint_pair, batch) for _ in range(rounds)
        ]
    for store in ("memory", "sqlite"):
        samples.update(_shield_session_samples(store, rounds, batch))
        samples.update(_shield_endpoint_samples(store, rounds, batch))
    lines = ["| call | µs / call (median) | IQR (µs) |", "|---|---:|---:|"]
    for label, values in samples.items():
        low, high = quartiles(values)
        lines.append(f"| {label} | {statistics.median(values):.1f} | {low:.1f}-{high:.1f} |")
    return "\n".join(lines)


# --- alerts: a request that records an alerted event --------------------------------------


@contextlib.contextmanager
def slow_receiver(delay: float) -> Iterator[str]:
    """An alert receiver on 127.0.0.1 that answers every POST after ``delay`` seconds."""
    from http.server import BaseHTTPRequestHandler
    from http.server import ThreadingHTTPServer

    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            stop.wait(delay)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_alerts(rounds: int, batch: int, delay: float = 1.0) -> str:
    """What recording an alerted event costs a request, with the receiver slow or away.

    One exempt view records a ``traffic-spike`` event per request (signal, audit line,
    memory store) and answers 200, over WSGI. Rows: no webhook; a webhook whose receiver
    answers each POST after ``delay`` seconds (the queue takes the alert); the same with a
    full queue (the alert is dropped and counted). The request never waits on the receiver.
    """
    from werkzeug.test import EnvironBuilder

    def make(config: dict[str, Any]) -> Any:
        app: Flask = apps.make_shield(config=config)
        state: ShieldState = app.extensions["jwt_shield"]
        shield: JWTShield = app.extensions["bench_shield"]

        @app.get("/alerting")
        @shield.exempt
        def alerting() -> Any:
            state.record("traffic-spike", None, subject=apps.SUBJECT, action="flag", detail={"count": 3001})
            return {"ok": True}

        return app

    template = EnvironBuilder("/alerting", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()

    def caller(app: Any) -> Any:
        def call() -> None:
            status: list[str] = []
            environ = dict(template)
            b"".join(app(environ, lambda s, h, e=None: status.append(s)))
            if not status[0].startswith("200"):
                raise NotOK(f"/alerting: {status[0]}")

        return call

    labels = {
        "plain": "request recording an event, no webhook",
        "queued": f"same, webhook receiver answering after {delay:g} s (alert queued)",
        "dropped": f"same, webhook receiver answering after {delay:g} s, queue full (alert dropped, counted)",
    }
    with slow_receiver(delay) as url:
        hook = {"JWT_SHIELD_ALERT_WEBHOOK": url, "JWT_SHIELD_ALERT_RETRIES": 0}
        made = {
            "plain": make({}),
            "queued": make({**hook, "JWT_SHIELD_ALERT_QUEUE_SIZE": 10**7}),
            "dropped": make({**hook, "JWT_SHIELD_ALERT_QUEUE_SIZE": 1}),
        }
        calls = {key: caller(app) for key, app in made.items()}
        for call in calls.values():
            for _ in range(max(10, batch // 4)):  # warm-up; fills the one-slot queue
                call()
        samples: dict[str, list[float]] = {key: [] for key in calls}
        for _ in range(rounds):  # interleaved, so that every row sees the same machine
            for key, call in calls.items():
                samples[key].append(_time_calls(call, batch))
        sinks = {}
        for key, app in made.items():
            with app.app_context():
                sinks[key] = app.extensions["bench_shield"].alerts()
        dropped = sinks["dropped"].stats().dropped if sinks["dropped"] is not None else 0
        for sink in sinks.values():
            if sink is not None:
                sink.close(timeout=delay + 1)
    lines = ["| request | µs / request (median) | IQR (µs) | x no webhook |", "|---|---:|---:|---:|"]
    plain = samples["plain"]
    for key, values in samples.items():
        low, high = quartiles(values)
        ratio = statistics.median(v / p for v, p in zip(values, plain, strict=True))
        lines.append(f"| {labels[key]} | {statistics.median(values):.1f} | {low:.1f}-{high:.1f} | {ratio:.2f} |")
    lines.append("")
    lines.append(f"Alerts dropped (and counted) in the full-queue row: {dropped}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inprocess", action="store_true", help="direct WSGI calls (default)")
    parser.add_argument("--http", action="store_true", help="gunicorn over HTTP")
    parser.add_argument("--quick", action="store_true", help="smoke run: few, short rounds")
    parser.add_argument("--rows", help="comma-separated row keys (bare is always included)")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--rounds", type=int, help="in-process rounds (default 240; quick 4)")
    parser.add_argument("--batch", type=int, help="requests per row per round (default 200; quick 300)")
    parser.add_argument("--http-rounds", type=int, help="HTTP rounds (default 5; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per HTTP run (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=4, help="HTTP connections (4)")
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="HTTP load generator: wrk if installed (auto), or the Python client",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the row order shuffle")
    parser.add_argument("--write-results", action="store_true", help=f"rewrite {RESULTS_PATH.name}")
    parser.add_argument(
        "--cluster-propagation",
        action="store_true",
        help="only the three-master cluster's spread and propagation"
        f" (with --write-results: its section of {RESULTS_PATH.name})",
    )
    args = parser.parse_args(argv)
    if args.cluster_propagation:
        return cluster_propagation_section(args)

    if args.list:
        for row in ROWS:
            print(f"{row.key:24} {row.label}   [{row.gunicorn_spec}]")
        return 0

    do_http = args.http
    do_inprocess = args.inprocess or not args.http
    rows, notes = usable_rows(select_rows(args.rows))
    with contextlib.ExitStack() as stack:
        rows, redis_url = _serve(
            stack, rows, notes, "needs_redis", throwaway_redis, apps.REDIS_URL_ENV, "redis-server is", "Redis"
        )
        rows, _cluster_url = _serve(
            stack,
            rows,
            notes,
            "needs_cluster",
            throwaway_cluster,
            apps.CLUSTER_URL_ENV,
            "redis-server or redis-cli is",
            "Redis Cluster",
        )
        return _run(args, argv, rows, notes, do_http, do_inprocess, redis_url)


def _serve(
    stack: contextlib.ExitStack,
    rows: list[Row],
    notes: list[str],
    needs: str,
    start: Callable[[], contextlib.AbstractContextManager[str | None]],
    env: str,
    missing: str,
    kind: str,
) -> tuple[list[Row], str | None]:
    """Start the throwaway server that the rows with ``needs`` use, for the whole run, and
    name it to the gunicorn workers in ``env``; without its binaries, drop those rows with
    a note. Returns the rows left and the server's URL."""
    if not any(getattr(row, needs) for row in rows):
        return rows, None
    url = stack.enter_context(start())
    if url is None:
        note = f"{missing} not installed: the {kind} rows were skipped."
        print(f"WARNING: {note}", file=sys.stderr)
        notes.append(note)
        return [row for row in rows if not getattr(row, needs)], None
    os.environ[env] = url
    return rows, url


CLUSTER_HEADING = "## Revocation propagation on a Redis Cluster (three masters, users spread)"


def cluster_propagation_section(args: Any) -> int:
    """Print (and with ``--write-results`` put in place) the cluster propagation section."""
    count = 60 if args.quick else 600
    with throwaway_cluster() as url:
        if url is None:
            print("redis-server or redis-cli is not installed", file=sys.stderr)
            return 1
        started = time.monotonic()
        table = run_cluster_propagation(url, count)
    section = (
        f"{CLUSTER_HEADING}\n\n"
        f"Generated by `python benchmarks/bench.py --cluster-propagation --write-results` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.monotonic() - started:.0f} s, "
        f"revision {git_revision()}). {count} users, one refresh family each, spread over the "
        "16 stripes of the Redis store; keys are the store's keys each master holds. One "
        "process logs each user out everywhere (one script on the master that owns the "
        "user's stripe, its message by SPUBLISH on that master); another, answering from its "
        "local view, polls until it refuses that user's token. The bound is "
        f"JWT_SHIELD_REVOCATION_MAX_DELAY (1 s by default).\n\n{table}\n"
    )
    print(section)
    if args.write_results:
        text = RESULTS_PATH.read_text()
        if CLUSTER_HEADING in text:
            head, _, rest = text.partition(CLUSTER_HEADING)
            tail = rest[rest.find("\n## ") :] if "\n## " in rest else "\n"
            text = head + section + tail
        else:
            text = text.rstrip("\n") + "\n\n" + section
        RESULTS_PATH.write_text(text)
        print(f"wrote {RESULTS_PATH}", file=sys.stderr)
    return 0


def _run(
    args: Any,
    argv: list[str] | None,
    rows: list[Row],
    notes: list[str],
    do_http: bool,
    do_inprocess: bool,
    redis_url: str | None,
) -> int:

    started = datetime.datetime.now().astimezone()
    load_before = os.getloadavg()
    # One key pair per algorithm for this run, shared with the gunicorn workers.
    key_dir = tempfile.mkdtemp(prefix="jwt-shield-bench-keys-")
    os.environ[apps.KEY_DIR_ENV] = key_dir
    sections: list[str] = []
    loadgen: str | None = None
    try:
        if do_inprocess:
            rounds = args.rounds or (4 if args.quick else 240)
            batch = args.batch or (300 if args.quick else 200)
            warmup = max(50, batch // 4)
            print(
                f"in-process: {len(rows)} rows x {rounds} rounds x {batch}",
                file=sys.stderr,
            )
            in_results = run_inprocess(rows, rounds, batch, warmup, args.seed)
            table = inprocess_table(in_results)
            goals = goals_text(in_results)
            if goals:
                table += "\n\nGoals between rows:\n\n" + goals
            sections.append(
                "## In-process (direct WSGI calls)\n\n"
                f"{rounds} rounds x {batch} requests per row, rows shuffled within each round; "
                "µs is the median over rounds of the mean per request in a round; x bare "
                "Flask is the median over rounds of the ratio to bare Flask in the same "
                f"round.\n\n{table}\n"
            )
            print(sections[-1])
            if any(row.needs_shield for row in rows):
                session_rounds = 5 if args.quick else 30
                session_batch = 20 if args.quick else 100
                sections.append(
                    "## Sessions (direct calls inside a request context)\n\n"
                    f"{session_rounds} rounds x {session_batch} calls; µs is the median over rounds "
                    "of the mean per call. refresh() verifies the refresh token, checks "
                    "revocation, rotates atomically in the store (reuse detection) and signs "
                    f"a new pair.\n\n{run_sessions(session_rounds, session_batch)}\n"
                )
                print(sections[-1])
                alert_rounds = 5 if args.quick else 30
                alert_batch = 100 if args.quick else 200
                sections.append(
                    "## Alerts (a request that records an alerted event, over WSGI)\n\n"
                    f"{alert_rounds} rounds x {alert_batch} requests, rows interleaved; the receiver "
                    "answers each alert after 1 s, so the worker thread is always busy and the "
                    "queue only grows (or, with one slot, is full).\n\n"
                    f"{run_alerts(alert_rounds, alert_batch)}\n"
                )
                print(sections[-1])
            if redis_url is not None and any(row.needs_shield for row in rows):
                count = 50 if args.quick else 500
                sections.append(
                    "## Revocation propagation (Redis store, two processes)\n\n"
                    "One process revokes a token; another, answering from its local view, "
                    "polls until it refuses the token. The bound is "
                    "JWT_SHIELD_REVOCATION_MAX_DELAY (1 s by default).\n\n"
                    f"{run_propagation(redis_url, count)}\n"
                )
                print(sections[-1])

        if do_http:
            loadgen = args.loadgen
            if loadgen == "auto":
                loadgen = "wrk" if shutil.which("wrk") else "python"
            duration = args.duration or (1.0 if args.quick else 3.0)
            settings = HttpSettings(
                rounds=args.http_rounds or (1 if args.quick else 5),
                duration=duration,
                warmup=1.0,
                threads=args.threads,
                connections=args.connections,
                requests=2000 if args.quick else 8000,
                loadgen=loadgen,
                fresh_pool=8000 if args.quick else 20000,
                warm_pool=4000 if args.quick else 5000,
            )
            print(
                f"HTTP: {len(rows)} rows x {settings.rounds} rounds via {loadgen}",
                file=sys.stderr,
            )
            http_results = run_http(rows, settings, args.seed)
            if loadgen == "wrk":
                how = (
                    f"wrk, {settings.threads} threads, {settings.connections} connections, "
                    f"{settings.duration:g} s per run after a {settings.warmup:g} s warm-up"
                )
            else:
                how = (
                    f"the Python client, {settings.connections} keep-alive connections, "
                    f"{settings.requests} requests per run after a warm-up"
                )
            sections.append(
                "## Over HTTP (gunicorn, 1 gthread worker with 1 thread, keep-alive)\n\n"
                f"{settings.rounds} rounds, rows shuffled within each round, a fresh "
                f"gunicorn per row and round; {how}. x bare Flask is the median over rounds "
                "of the throughput ratio in the same round (below 1 = slower); cost is its "
                f"inverse.\n\n{http_table(http_results)}\n"
            )
            threads = threads_table(http_results)
            if threads is not None:
                sections[-1] += (
                    "\nWhere the worker's time went in the same runs (medians over rounds, from "
                    "`/proc/<pid>/task/*/schedstat`). A background thread's wake-up is a system "
                    "call's return that needs the GIL back from the request or server thread; on "
                    "a machine whose cores the load generator and Redis share, each costs the "
                    "request thread far more than its own CPU time.\n\n"
                    f"{threads}\n"
                )
            print(sections[-1])
    except NotOK as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(key_dir, ignore_errors=True)

    if args.write_results:
        command = "python benchmarks/bench.py " + " ".join(argv or sys.argv[1:])
        note_lines = "".join(f"\n> {note}\n" for note in notes)
        RESULTS_PATH.write_text(
            "# Benchmark results\n\n"
            f"Generated by `{command.strip()}`; see README.md for what each row "
            "measures.\n\n"
            f"{environment_section(loadgen, started, load_before, os.getloadavg())}\n{note_lines}\n"
            + "\n".join(sections)
        )
        print(f"wrote {RESULTS_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
