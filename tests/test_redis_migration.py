"""From the one-slot layout of earlier versions to the stripes (scale-out issue, item 1):
state written the old way is read through by this version until ``flask jwt-shield
migrate-store`` moves it, and nothing revoked comes back -- before, during or after the
migration -- on one server and on a three-master cluster."""

from __future__ import annotations

import json
import time
import typing as t
import uuid

import pytest
import redis

from flask_jwt_shield.stores import RedisStore

from .conftest import AppFactory
from .redis_util import RedisCluster
from .redis_util import RedisServer

pytestmark = pytest.mark.redis

NOW = time.time()
FAR = NOW + 10_000


@pytest.fixture(params=["redis", "redis-cluster"])
def server_url(request: pytest.FixtureRequest) -> str:
    server: RedisServer | RedisCluster = request.getfixturevalue(
        "shared_redis" if request.param == "redis" else "redis_cluster"
    )
    return server.url


def raw(url: str) -> t.Any:
    if url.startswith("redis+cluster://"):
        host, _, port = url[len("redis+cluster://") :].partition(":")
        return redis.RedisCluster(host=host, port=int(port), decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


def write_old_layout(url: str, prefix: str) -> None:
    """What the previous version left in Redis: every key under the one tag ``{prefix}``
    (its revoke, revoke_subject and create_family scripts wrote exactly these)."""
    client = raw(url)
    tag = "{" + prefix + "}"
    px = int((FAR + 60) * 1000)
    client.set(f"{tag}:r:j:stolen-jti", repr(FAR), pxat=px)
    client.set(f"{tag}:r:s:stolen-sid", repr(FAR), pxat=px)
    client.set(f"{tag}:r:k:old-key", repr(FAR), pxat=px)
    client.set(f"{tag}:nb:bob", f"{NOW!r} {FAR!r}", pxat=px)
    for sid, sub, jti in (("fam-carol", "carol", "r1"), ("fam-dave", "dave", "d1")):
        fields = {
            "sid": sid,
            "sub": sub,
            "created_at": repr(NOW - 10),
            "expires_at": repr(NOW + 5000),
            "last_used_at": repr(NOW - 10),
            "current_jti": jti,
            "current_iat": repr(NOW - 10),
            "revoked": "0",
            "claims": json.dumps({"role": "user"}),
            "v": "3",
        }
        client.hset(f"{tag}:f:{sid}", mapping=fields)
        client.pexpireat(f"{tag}:f:{sid}", px)
        client.zadd(f"{tag}:fs:{sub}", {sid: NOW - 10})
        client.pexpireat(f"{tag}:fs:{sub}", px)
        client.lpush(f"{tag}:sp:{sid}", json.dumps(["r0", NOW - 20, "198.51.100.1"]))


def revocations_hold(store: RedisStore) -> None:
    """Everything the old layout revoked is still revoked, by every path that reads it."""
    check = store.check
    assert check(jti="stolen-jti", sid=None, sub="alice", kid="k", iat=NOW, now=NOW) == "token"
    assert check(jti="j1", sid="stolen-sid", sub="alice", kid="k", iat=NOW, now=NOW) == "family"
    assert check(jti="j2", sid=None, sub="bob", kid="k", iat=NOW - 1, now=NOW) == "subject"
    assert check(jti="j3", sid=None, sub="bob", kid="k", iat=NOW + 1, now=NOW) is None  # after: fine
    assert check(jti="j4", sid=None, sub="erin", kid="old-key", iat=NOW, now=NOW) == "key"
    assert store.is_revoked("jti", "stolen-jti", now=NOW)
    assert store.is_revoked("sid", "stolen-sid", now=NOW)
    assert store.is_revoked("kid", "old-key", now=NOW)
    assert store.not_before("bob", NOW) == NOW


def rotate(store: RedisStore, sid: str, jti: str, new: str, now: float = NOW) -> str:
    r = store.rotate(
        sid, jti, new_jti=new, new_iat=now, now=now, idle_ttl=9000, grace=0, ip=None, country=None, until=FAR
    )
    return r.outcome


def test_old_layout_is_read_through_then_migrated(server_url: str) -> None:
    prefix = "t" + uuid.uuid4().hex[:12]
    write_old_layout(server_url, prefix)
    store = RedisStore(server_url, prefix=prefix, max_delay=0)
    # Before the migration: read through.
    revocations_hold(store)
    assert [f.sid for f in store.families("carol", now=NOW, idle_ttl=9000)] == ["fam-carol"]
    assert rotate(store, "fam-carol", "r1", "r2") == "rotated"  # in the old slot, atomically
    assert rotate(store, "fam-carol", "r1", "r3") == "reused"  # the family ends
    assert store.get_family("fam-carol").revoked  # type: ignore[union-attr]
    store.revoke_subject("dave", at=NOW, until=FAR)  # logging out everywhere reaches old families
    assert rotate(store, "fam-dave", "d1", "d2") == "revoked"
    store.revoke("jti", "new-jti", until=FAR)
    # The migration, then a process started afterwards (reads the stripes only).
    moved = store.migrate_layout()
    assert moved["families"] == 2 and moved["tokens"] == 2 and moved["subjects"] == 2
    after = RedisStore(server_url, prefix=prefix, max_delay=0)
    revocations_hold(after)
    assert after.check(jti="new-jti", sid=None, sub="zed", kid="k", iat=NOW, now=NOW) == "token"
    assert after.check(jti="j5", sid="fam-carol", sub="carol", kid="k", iat=NOW, now=NOW) == "family"
    carol = after.get_family("fam-carol")
    assert carol is not None and carol.revoked and carol.current_jti == "r2"
    assert rotate(after, "fam-carol", "r2", "r4") == "revoked"
    assert after.families("dave", now=NOW, idle_ttl=9000) == []
    assert rotate(after, "fam-dave", "d1", "d3") == "revoked"
    # Only the keys' revocations (their record) and the layout marker remain in the old slot.
    client = raw(server_url)
    left = sorted(client.scan_iter(match="{" + prefix + "}:*"))
    assert left == ["{" + prefix + "}:layout", "{" + prefix + "}:r:k:old-key"]
    assert not after._layout() and store.migrate_layout()["families"] == 0  # idempotent
    store.close()
    after.close()


def test_a_family_migrated_keeps_its_chain(server_url: str) -> None:
    """The moved family rotates on from where it was; its spent list moved with it, so a
    reuse of an old token still names its first use."""
    prefix = "t" + uuid.uuid4().hex[:12]
    write_old_layout(server_url, prefix)
    store = RedisStore(server_url, prefix=prefix, max_delay=0)
    store.migrate_layout()
    assert rotate(store, "fam-carol", "r1", "r2") == "rotated"
    r = store.rotate(
        "fam-carol",
        "r0",
        new_jti="x",
        new_iat=NOW,
        now=NOW + 1,
        idle_ttl=9000,
        grace=0,
        ip=None,
        country=None,
        until=FAR,
    )
    assert r.outcome == "reused" and r.first_use is not None and r.first_use.ip == "198.51.100.1"
    store.close()


def test_a_fresh_store_never_reads_an_old_slot(server_url: str) -> None:
    """No data of the old layout: the first process writes the layout marker, nobody reads
    through (one slot per check on a cluster)."""
    prefix = "t" + uuid.uuid4().hex[:12]
    store = RedisStore(server_url, prefix=prefix, max_delay=0)
    assert store.check(jti="j", sid=None, sub="a", kid="k", iat=NOW, now=NOW) is None
    assert store._layout() is False
    assert raw(server_url).get("{" + prefix + "}:layout") == "stripes=16"
    other = RedisStore(server_url, prefix=prefix, max_delay=0, stripes=8)
    with pytest.raises(Exception, match="laid out in 16 stripes"):
        other.check(jti="j", sid=None, sub="a", kid="k", iat=NOW, now=NOW)
    store.close()
    other.close()


def test_migrate_store_command(make_app: AppFactory, redis_server: RedisServer) -> None:
    from flask_jwt_shield.cli import cli

    app, _ = make_app({"JWT_SHIELD_STORE_URI": redis_server.url})
    store = app.extensions["jwt_shield"].store
    write_old_layout(redis_server.url, store.prefix)
    result = app.test_cli_runner().invoke(cli, ["migrate-store"])
    assert result.exit_code == 0, result.output
    assert "2 families" in result.output and "16 stripes" in result.output
    fresh = RedisStore(redis_server.url, prefix=store.prefix, max_delay=0)
    revocations_hold(fresh)
    fresh.close()
    memory_app, _ = make_app({})
    assert "nothing to migrate" in memory_app.test_cli_runner().invoke(cli, ["migrate-store"]).output


def test_refreshes_racing_the_migration_keep_one_chain(server_url: str) -> None:
    """A client keeps refreshing an old family while the migration moves it: every rotation
    either commits before the move or finds the family at its new place -- none is lost
    (which would make the next refresh look like a reuse and end the session)."""
    import threading

    from flask_jwt_shield.errors import StoreError

    prefix = "t" + uuid.uuid4().hex[:12]
    write_old_layout(server_url, prefix)
    store = RedisStore(server_url, prefix=prefix, max_delay=0)
    migrator = RedisStore(server_url, prefix=prefix, max_delay=0)
    outcomes: list[str] = []
    current = ["r1"]
    stop = threading.Event()

    def keep_refreshing() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            try:
                outcome = rotate(store, "fam-carol", current[0], f"n{n}")
            except StoreError:
                continue  # the family was being moved: try again, as a client would
            outcomes.append(outcome)
            if outcome != "rotated":
                return
            current[0] = f"n{n}"

    worker = threading.Thread(target=keep_refreshing)
    worker.start()
    try:
        time.sleep(0.05)
        migrator.migrate_layout()
        time.sleep(0.1)
    finally:
        stop.set()
        worker.join(30)
    assert outcomes and set(outcomes) == {"rotated"}, outcomes[-3:]
    family = RedisStore(server_url, prefix=prefix, max_delay=0).get_family("fam-carol")
    assert family is not None and family.current_jti == current[0] and not family.revoked
    assert not raw(server_url).exists("{" + prefix + "}:f:fam-carol")
    store.close()
    migrator.close()
