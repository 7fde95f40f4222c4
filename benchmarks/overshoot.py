"""The leased rate limit mode's overshoot, measured: N processes hammering one token.

For each N (2, 4, 8 by default) and each run, a gunicorn with N worker processes serves an
app on one throw-away ``redis-server`` (store and counters there, ``JWT_SHIELD_RATE_LIMIT
= "100/minute"``, ``JWT_SHIELD_RATE_LIMIT_MODE = "leased"``); many client threads hammer
one fresh token for a few seconds (well within the minute's window), and the 200s are
counted against the documented bound ``L + N`` (docs/ratelimits.rst, "Leased mode")::

    python -m benchmarks.overshoot                       # N = 2, 4, 8; 3 runs each
    python -m benchmarks.overshoot --workers 4 --runs 5 --seconds 3
    python -m benchmarks.overshoot --layout servers     # N separate servers of one worker
    python -m benchmarks.overshoot --cluster            # on a throw-away 3-master Redis Cluster

The app is :func:`create_app` below (gunicorn loads ``benchmarks.overshoot:create_app()``);
``--mode exact`` measures the exact mode the same way, for comparison. ``--cluster`` puts the
store and the counters on a three-master Redis Cluster on 127.0.0.1 (started before the
runs and stopped by its PIDs, :func:`benchmarks.bench.throwaway_cluster`) instead of one
``redis-server``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

from flask import Flask

from benchmarks.bench import free_port
from benchmarks.bench import throwaway_cluster
from benchmarks.bench import throwaway_redis

ROOT = Path(__file__).resolve().parent.parent
SECRET = "overshoot-benchmark-secret-" + "x" * 32
LIMIT = 100


def create_app() -> Flask:
    """The served app: one protected route, everything on the Redis in ``OVERSHOOT_REDIS``."""
    from flask_jwt_shield import JWTShield

    app = Flask("overshoot")
    app.config.update(
        JWT_SHIELD_SECRET_KEY=SECRET,
        JWT_SHIELD_STORE_URI=os.environ["OVERSHOOT_REDIS"],
        JWT_SHIELD_RATE_LIMIT=f"{LIMIT}/minute",
        JWT_SHIELD_RATE_LIMIT_MODE=os.environ.get("OVERSHOOT_MODE", "leased"),
    )
    shield = JWTShield(app)

    @app.get("/api/me")
    def me() -> t.Any:
        return {"ok": True}

    @app.get("/ping")
    @shield.exempt
    def ping() -> t.Any:
        return {"pid": os.getpid()}

    return app


def mint(redis_url: str, n: int) -> list[str]:
    """``n`` access tokens (one per run) from an app with the same key."""
    os.environ["OVERSHOOT_REDIS"] = redis_url
    from flask_jwt_shield import JWTShield

    app = Flask("minter")
    app.config.update(JWT_SHIELD_SECRET_KEY=SECRET, JWT_SHIELD_STORE_URI=redis_url)
    shield = JWTShield(app)
    with app.app_context():
        return [shield.create_access_token(f"user-{i}") for i in range(n)]


def get(port: int, path: str, token: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def serve(workers: int, redis_url: str, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "2",
            "--log-level",
            "warning",
            "benchmarks.overshoot:create_app()",
        ],
        cwd=ROOT,
        env={**os.environ, "OVERSHOOT_REDIS": redis_url, "OVERSHOOT_MODE": mode},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:  # bounded: until the server answers or the deadline passes
        try:
            if get(port, "/ping") == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gunicorn did not start")
        time.sleep(0.1)
    return process, port


def warm(port: int, workers: int, token: str) -> None:
    """Every worker serves a request first (threads started, subscribed), with another token."""
    for _ in range(workers * 4):
        get(port, "/api/me", token)


def hammer(ports: list[int], token: str, seconds: float, threads: int) -> tuple[int, int, int]:
    """(200s, 429s, other statuses) of ``threads`` clients hammering for ``seconds``, spread
    over the servers on ``ports``."""
    counts = [0, 0, 0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(port: int) -> None:
        mine = [0, 0, 0]
        while time.monotonic() < stop:
            status = get(port, "/api/me", token)
            mine[0 if status == 200 else 1 if status == 429 else 2] += 1
        with lock:
            for i in range(3):
                counts[i] += mine[i]

    pool = [threading.Thread(target=client, args=(ports[i % len(ports)],)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return counts[0], counts[1], counts[2]


def announce_delays(redis_url: str, count: int) -> list[float]:
    """Seconds from the request that exhausts a window in one limiter until another limiter
    (its own threads and subscription, as another process has) knows it: ``count`` tokens
    under ``"1/minute"``. Both limiters share this process's interpreter, so the figures
    include waiting for the GIL; separate processes do not wait for each other."""
    from flask_jwt_shield.ratelimit import TokenRateLimiter

    a = TokenRateLimiter("1/minute", storage_uri=redis_url, mode="leased", key_prefix="announce")
    b = TokenRateLimiter("1/minute", storage_uri=redis_url, mode="leased", key_prefix="announce")
    b.check("warm-up")
    book = b._leases
    assert book is not None
    deadline = time.monotonic() + 10
    while not book.listening and time.monotonic() < deadline:
        time.sleep(0.01)
    delays = []
    for i in range(count):
        token = f"announced-{i}"
        key = f"LIMITS:announce/rate/{{{token}}}/1/1/minute/lease"  # the token's hash tag
        a.check(token)  # on credit
        start = time.perf_counter()
        assert not a.check(token).allowed  # the strict charge exhausts the window: announced
        while not book.exhausted(key):
            if time.perf_counter() - start > 5:
                raise RuntimeError("no announcement within 5 s")
            time.sleep(0.0001)
        delays.append(time.perf_counter() - start)
    a.close()
    b.close()
    return delays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="2,4,8", help="comma-separated process counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=16, help="client threads")
    parser.add_argument("--mode", default="leased", choices=["leased", "exact"])
    parser.add_argument(
        "--layout",
        default="workers",
        choices=["workers", "servers"],
        help="one gunicorn with N workers, or N separate gunicorn servers of one worker each",
    )
    parser.add_argument("--cluster", action="store_true", help="a three-master Redis Cluster instead of one Redis")
    parser.add_argument("--announce", type=int, default=0, help="measure the announcement delay over this many windows")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    redis = throwaway_cluster if args.cluster else throwaway_redis
    if args.announce:
        with redis() as redis_url:
            if redis_url is None:
                print("redis-server is not installed", file=sys.stderr)
                return 1
            delays = sorted(announce_delays(redis_url, args.announce))

        def pick(q: float) -> float:
            return delays[min(len(delays) - 1, int(q * len(delays)))] * 1000

        print("| windows | p50 (ms) | p99 (ms) | max (ms) |")
        print("|---:|---:|---:|---:|")
        print(f"| {len(delays)} | {pick(0.5):.2f} | {pick(0.99):.2f} | {delays[-1] * 1000:.2f} |")
        return 0
    print("| N | runs | admitted per run | bound (L + N) | refused per run | max over L |")
    print("|---:|---:|---|---:|---|---:|")
    with redis() as redis_url:
        if redis_url is None:
            print("redis-server is not installed", file=sys.stderr)
            return 1
        tokens = mint(redis_url, len(counts) * args.runs + 1)
        warm_token = tokens.pop()
        for n in counts:
            servers = [serve(n, redis_url, args.mode)] if args.layout == "workers" else []
            try:
                for _ in range(n if args.layout == "servers" else 0):
                    servers.append(serve(1, redis_url, args.mode))
                ports = [port for _, port in servers]
                for port in ports:
                    warm(port, n if args.layout == "workers" else 1, warm_token)
                time.sleep(0.5)
                results = [hammer(ports, tokens.pop(), args.seconds, args.threads) for _ in range(args.runs)]
            finally:
                for process, _ in servers:
                    process.send_signal(signal.SIGTERM)
                for process, _ in servers:
                    process.wait(timeout=15)
            admitted = [r[0] for r in results]
            if any(r[2] for r in results):
                print(f"N={n}: unexpected statuses {results}", file=sys.stderr)
            print(
                f"| {n} | {args.runs} | {', '.join(map(str, admitted))} | {LIMIT + n} |"
                f" {', '.join(str(r[1]) for r in results)} | {max(admitted) - LIMIT:+d} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
