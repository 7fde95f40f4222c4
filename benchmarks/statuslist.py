"""The Token Status List's costs (draft-ietf-oauth-status-list), in one run:

    python -m benchmarks.statuslist [--rounds 30] [--batch 100] [--only calls|sizes]

* ``issue_tokens()`` and ``refresh()`` with ``JWT_SHIELD_STATUS_LIST`` off and on, per store
  (memory, SQLite, Redis when a ``redis-server`` is installed), rows interleaved so both
  sides see the same machine: what claiming an index costs;
* the store calls alone (SQLite, Redis): the family write with the index claimed apart
  and with it, in one transaction or round trip;
* a warm request (``GET /api/me``, token seen before) off and on: the status list changes
  nothing on the request path, and this shows it;
* the list of 1,000,000 indices at 0.1 %, 1 % and 10 % revoked: the compressed list, the
  Status List Token as a JWT (and the gzip body the endpoint sends) and as a CWT, and the
  time to render each (compress, sign, gzip) once.

Prints Markdown tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import statistics
import time
import typing as t

from . import apps
from .bench import _time_calls
from .bench import quartiles
from .bench import throwaway_redis

ISSUER = "https://issuer.bench"
LIMITS = {
    "JWT_SHIELD_REFRESH_RATE_LIMIT": "1000000/minute",
    "JWT_SHIELD_REFRESH_ADDRESS_RATE_LIMIT": "1000000/minute",
    "JWT_SHIELD_ISSUER": ISSUER,
}


def _row(label: str, values: list[float]) -> str:
    low, high = quartiles(values)
    return f"| {label} | {statistics.median(values):.1f} | {low:.1f}-{high:.1f} |"


def sessions(store: str, rounds: int, batch: int) -> list[str]:
    on = apps.make_shield(store=store, config={**LIMITS, "JWT_SHIELD_STATUS_LIST": True})
    off = apps.make_shield(store=store, config=LIMITS)
    counter = iter(range(10**9))
    samples: dict[str, list[float]] = {}
    calls: list[tuple[str, t.Callable[[], None], t.Any]] = []
    for name, app in (("off", off), ("on", on)):
        shield = app.extensions["bench_shield"]
        ctx = app.test_request_context(environ_base={"REMOTE_ADDR": "127.0.0.1"})
        with ctx:
            chain = [shield.issue_tokens(apps.SUBJECT)]

        def issue(shield: t.Any = shield) -> None:
            shield.issue_tokens(f"user-{next(counter)}")

        def rotate(shield: t.Any = shield, chain: list[t.Any] = chain) -> None:
            chain[0] = shield.refresh(chain[0].refresh_token)

        calls.append((f"shield issue_tokens() ({store} store), status list {name}", issue, ctx))
        calls.append((f"shield refresh() ({store} store), status list {name}", rotate, ctx))
    for _ in range(rounds):
        for label, call, ctx in calls:
            with ctx:
                samples.setdefault(label, []).append(_time_calls(call, batch))
    for app in (on, off):
        app.extensions["jwt_shield"].store.close()
    return [_row(label, values) for label, values in sorted(samples.items())]


def store_writes(store: str, rounds: int, batch: int) -> list[str]:
    """The store calls alone: the family write, with the index claimed apart (two
    transactions / round trips, as before) and with it (one), interleaved."""
    import uuid

    from flask_jwt_shield.stores import Family
    from flask_jwt_shield.stores.base import StatusClaim
    from flask_jwt_shield.stores.base import StatusHolder
    from flask_jwt_shield.stores.base import status_candidates

    app = apps.make_shield(store=store, config={**LIMITS, "JWT_SHIELD_STATUS_LIST": True})
    backend = app.extensions["jwt_shield"].store
    now = time.time()
    size = 1_000_000

    def family(sid: str) -> Family:
        return Family(
            sid=sid,
            sub=f"u-{sid[:2]}",
            created_at=now,
            expires_at=now + 86_400,
            last_used_at=now,
            current_jti="r0",
            current_iat=now,
            claims={},
        )

    def claim() -> StatusClaim:
        holder = StatusHolder(
            jti=uuid.uuid4().hex, sub="alice", sid=uuid.uuid4().hex, kid="k", iat=now, until=now + 3600
        )
        return StatusClaim(holder, status_candidates(size, 8), now)

    current = {name: "r0" for name in ("alone", "apart", "with")}
    for name in current:
        backend.create_family(family(f"rot-{name}"), max_sessions=10**6, idle_ttl=86_400, until=now + 10**6)

    def rotate(name: str, status: StatusClaim | None = None) -> None:
        new = uuid.uuid4().hex
        rotation = backend.rotate(
            f"rot-{name}",
            current[name],
            new_jti=new,
            new_iat=now,
            now=now,
            idle_ttl=86_400,
            grace=0,
            ip=None,
            country=None,
            until=now + 10**6,
            status=status,
        )
        assert rotation.outcome == "rotated", rotation.outcome
        current[name] = new

    def create(status: StatusClaim | None = None) -> None:
        backend.create_family(
            family(uuid.uuid4().hex), max_sessions=10**6, idle_ttl=86_400, until=now + 10**6, status=status
        )

    def create_apart() -> None:
        create()
        c = claim()
        backend.status_claim(c.holder, c.candidates, now=now)

    def rotate_apart() -> None:
        c = claim()
        backend.status_claim(c.holder, c.candidates, now=now)
        rotate("apart")

    calls: list[tuple[str, t.Callable[[], None]]] = [
        (f"{store}: create_family(), no claim", create),
        (f"{store}: create_family() + status_claim(), apart", create_apart),
        (f"{store}: create_family(status=...), one write", lambda: create(claim())),
        (f"{store}: rotate(), no claim", lambda: rotate("alone")),
        (f"{store}: status_claim() + rotate(), apart", rotate_apart),
        (f"{store}: rotate(status=...), one write", lambda: rotate("with", claim())),
    ]
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, call in calls:
            samples.setdefault(label, []).append(_time_calls(call, batch))
    backend.close()
    return [_row(label, samples[label]) for label, _ in calls]


def warm_requests(rounds: int, batch: int) -> list[str]:
    from werkzeug.test import EnvironBuilder

    rows: list[str] = []
    samples: dict[str, list[float]] = {}
    runs: list[tuple[str, t.Callable[[], None]]] = []
    for name, extra in (("off", {}), ("on", {"JWT_SHIELD_STATUS_LIST": True})):
        app = apps.make_shield(config={"JWT_SHIELD_ISSUER": ISSUER, **extra})
        with app.app_context():
            token = app.extensions["bench_shield"].create_access_token(apps.SUBJECT)
        environ = EnvironBuilder("/api/me", headers=[("Authorization", f"Bearer {token}")]).get_environ()

        def request(app: t.Any = app, environ: dict[str, t.Any] = environ) -> None:
            status: list[str] = []
            b"".join(app(dict(environ), lambda s, h, e=None: status.append(s)))
            assert status[0].startswith("200"), status

        runs.append((f"GET /api/me, warm token, status list {name}", request))
    for _ in range(rounds):
        for label, call in runs:
            samples.setdefault(label, []).append(_time_calls(call, batch))
    rows.extend(_row(label, values) for label, values in samples.items())
    return rows


class _Preset:
    """A store whose status list is a given byte array (the endpoint's work is real)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def status_bits(self, size: int, *, version: int | None, now: float) -> tuple[int, bytes | None]:
        return 1, self.data


def sizes() -> list[str]:
    from flask_jwt_shield.jose import b64decode
    from flask_jwt_shield.statuslist.codec import StatusList
    from flask_jwt_shield.statuslist.issuer import CWT_MEDIA_TYPE
    from flask_jwt_shield.statuslist.issuer import MEDIA_TYPE
    from flask_jwt_shield.statuslist.issuer import StatusIssuer

    app = apps.make_shield(
        config={"JWT_SHIELD_ISSUER": ISSUER, "JWT_SHIELD_STATUS_LIST": True, "JWT_SHIELD_STATUS_LIST_SIZE": 1_000_000}
    )
    state = app.extensions["jwt_shield"]
    rows = [
        "| revoked (of 1,000,000) | compressed list | JWT | JWT gzip (on the wire) | CWT (on the wire)"
        " | render JWT / CWT (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    rng = random.Random(21)
    for rate in (0.001, 0.01, 0.10):
        lst = StatusList.new(1_000_000)
        for idx in rng.sample(range(1_000_000), int(1_000_000 * rate)):
            lst[idx] = 1
        issuer = StatusIssuer(state.config.status_list, t.cast(t.Any, _Preset(bytes(lst.data))), state.codec, leeway=0)
        timings = []
        with app.app_context():
            for media_type in (MEDIA_TYPE, CWT_MEDIA_TYPE):
                started = time.perf_counter()
                issuer.rendered(media_type)
                timings.append((time.perf_counter() - started) * 1000)
        jwt, cwt = issuer.rendered(MEDIA_TYPE), issuer.rendered(CWT_MEDIA_TYPE)
        payload = jwt.body.split(b".")[1].decode()
        claims = json.loads(b64decode(payload))
        compressed = len(b64decode(claims["status_list"]["lst"]))
        assert jwt.gzipped is not None and gzip.decompress(jwt.gzipped) == jwt.body
        # The CWT goes out as it is: gzip would not make it smaller.
        cwt_wire = len(cwt.gzipped) if cwt.gzipped is not None else len(cwt.body)
        rows.append(
            f"| {rate:.1%} | {compressed / 1024:.1f} KB | {len(jwt.body) / 1024:.1f} KB"
            f" | {len(jwt.gzipped) / 1024:.1f} KB ({len(jwt.gzipped)} B)"
            f" | {cwt_wire / 1024:.1f} KB ({cwt_wire} B) | {timings[0]:.0f} / {timings[1]:.0f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--only", choices=("calls", "sizes"), help="one part of the run")
    args = parser.parse_args(argv)
    if args.only == "sizes":
        print("\n".join(sizes()))
        return 0
    header = ["| call | µs / call (median) | IQR (µs) |", "|---|---:|---:|"]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(throwaway_redis())
        stores = ["memory", "sqlite"]
        if url is not None:
            os.environ[apps.REDIS_URL_ENV] = url
            stores.append("redis")
        lines = list(header)
        for store in stores:
            lines.extend(sessions(store, args.rounds, args.batch))
        print("\n".join(lines), end="\n\n")
        lines = list(header)
        for store in stores[1:]:
            lines.extend(store_writes(store, args.rounds, args.batch // 2))
        print("\n".join(lines), end="\n\n")
    if args.only == "calls":
        return 0
    print("\n".join(header[:1] + header[1:] + warm_requests(args.rounds, args.batch * 5)), end="\n\n")
    print("\n".join(sizes()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
