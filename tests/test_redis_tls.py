"""The Redis store and the leased rate limits over TLS (``rediss://``), against a real
redis-server listening on a TLS port with a certificate made here.

What the plain-TCP tests do not reach: the background threads read and write their
connections' sockets themselves (``flask_jwt_shield/wire.py``), and a TLS socket keeps
Python's timeouts and buffers decrypted bytes inside OpenSSL, where ``poll`` does not see
them. A reader that got that wrong would leave the invalidation link unconfirmed (every
check reads Redis) or the lease rounds failing (every request without a lease follows the
fail mode), with no error anywhere.
"""

from __future__ import annotations

import time
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flask_jwt_shield.errors import StoreError
from flask_jwt_shield.ratelimit import TokenRateLimiter
from flask_jwt_shield.ratelimit.leases import CREDIT
from flask_jwt_shield.stores import RedisStore

from .redis_util import RedisServer
from .redis_util import _free_port
from .redis_util import start_redis
from .test_redis_store import FAR
from .test_redis_store import NOW
from .test_redis_store import wait_until
from .tls_util import tls_files

pytestmark = pytest.mark.redis


class TLSServer(t.NamedTuple):
    server: RedisServer
    url: str  # rediss:// on the TLS port, trusting the test CA


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TLSServer]:
    """A redis-server of this test's own with a TLS port (clients need no certificate)."""
    ca, cert, key = tls_files(tmp_path)
    port = _free_port()
    extra = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    extra += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    server = start_redis(tmp_path / "data", extra=extra)
    try:
        yield TLSServer(server, f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")
    finally:
        server.stop()


def token(jti: str) -> dict[str, t.Any]:
    return {"jti": jti, "sid": None, "sub": "a", "kid": "k", "iat": NOW, "now": NOW}


def test_the_invalidation_link_confirms_and_hears_revocations_over_tls(tls_redis: TLSServer) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    observer = RedisStore(tls_redis.url, prefix=prefix, max_delay=0.5)
    revoker = RedisStore(tls_redis.url, prefix=prefix)
    try:
        assert observer.check(**token("stolen")) is None
        assert wait_until(observer.watching, 5)  # the link's PONGs came back over TLS
        assert observer.check(**token("stolen")) is None and observer.view_of("a").fresh("stolen")
        revoker.revoke("jti", "stolen", until=FAR)
        started = time.monotonic()
        # The message reaches the view over the link; the bound holds either way.
        assert wait_until(lambda: observer.check(**token("stolen")) == "token", 0.5 + 0.2)
        assert time.monotonic() - started < 0.5
        client = redis.Redis(port=tls_redis.server.port)  # the plain port, to look
        try:
            links = [c for c in client.client_list() if int(c.get("sub", 0)) or int(c.get("ssub", 0))]
            assert links and all(c["resp"] == "3" for c in links)  # RESP3, on the TLS port
            assert all(c["laddr"].endswith(tls_redis.url.split(":")[2].split("/")[0]) for c in links)
        finally:
            client.close()
    finally:
        observer.close()
        revoker.close()


def test_a_frozen_tls_server_never_leaves_a_stale_answer(tls_redis: TLSServer) -> None:
    """Python's socket timeout, not the kernel's, ends a read on a TLS socket."""
    store = RedisStore(tls_redis.url, max_delay=0.3, timeout=0.2)
    try:
        assert store.check(**token("j")) is None
        assert wait_until(store.watching, 5)
        tls_redis.server.pause()
        try:
            assert wait_until(lambda: not store.watching(), 0.3 + 0.1)
            with pytest.raises(StoreError):
                store.check(**token("j"))
        finally:
            tls_redis.server.resume()
        assert wait_until(store.watching, 5)  # the link came back by itself
    finally:
        store.close()


def test_leased_limits_settle_over_tls(tls_redis: TLSServer) -> None:
    """The background rounds settle on their own TLS connection: Redis holds what was
    admitted, and the window admits its limit and at most the credit more."""
    engine = TokenRateLimiter("20/minute", storage_uri=tls_redis.url, mode="leased", sync_interval=0.05)
    book = engine._leases
    assert book is not None
    client = redis.Redis(port=tls_redis.server.port, decode_responses=True)  # the plain port, to look

    def counted() -> int:
        keys = client.keys("*over-tls*lease")
        return int(client.hget(keys[0], "r") or 0) if keys else 0

    try:
        admitted = sum(engine.check("over-tls").allowed for _ in range(10))
        assert wait_until(lambda: counted() >= admitted, 5)  # settled by the rounds
        admitted += sum(engine.check("over-tls").allowed for _ in range(30))
        assert 20 <= admitted <= 20 + CREDIT
        assert wait_until(lambda: counted() >= 20, 5)
        assert not book._down
    finally:
        client.close()
        engine.close()
