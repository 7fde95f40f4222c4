"""``redis://``, ``rediss://``, ``unix://`` and ``redis+cluster://``: one state for many hosts.

Layout. Everything a multi-key operation touches -- revocation entries, subject not-before
instants, refresh families, their spent-token lists and the per-subject family indexes --
carries one hash tag (``{jws}`` for the default prefix), so it lives in one Redis Cluster
slot and every script below is a single atomic step on one node, standalone or cluster.
That state is small and written rarely (a login, a refresh, a revocation); the per-request
traffic goes to the rate-limit counters, which spread over the cluster, while revocation
reads are answered by the local view (below). Events (a capped stream) and per-subject
profiles are single-key and live in their own slots.

Atomic rotation. :meth:`RedisStore.rotate` reads the family, lets
:meth:`~flask_jwt_shield.stores.base.Family.spend` decide -- the rule is written once, there
-- and persists the decision with a compare-and-set script on the family's version field.
A concurrent writer makes the script refuse; the store reads again and decides again, so
sixteen racing refreshes of one token see exactly one ``"rotated"``.

Expiry. Every revocation entry, family and index carries a Redis TTL a minute past the
instant it stops mattering (clock skew between app hosts and Redis); :meth:`purge`
additionally drops what the app's own clock says is over.

Zero round trips. Every write that can revoke a token publishes on an invalidation channel;
a "not revoked" answer remembered in :class:`~flask_jwt_shield.stores.view.NotRevokedCache`
is trusted only while this process's subscriber (:mod:`.invalidation`) holds a live lease,
so a revocation made anywhere takes effect here within ``max_delay`` seconds at worst. On a
cluster the subscriber sits on the master owning the store's slot and confirms, each round,
that it still does (:meth:`RedisStore.owner_questions`); it follows a migration or a failover.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import typing as t
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from ..errors import ConfigurationError
from ..errors import StoreError
from . import redis_scripts
from .base import Family
from .base import RevocationKind
from .base import Rotation
from .base import StatusClaim
from .base import StatusHolder
from .base import StatusKind
from .base import Use
from .invalidation import InvalidationSubscriber
from .invalidation import Node
from .redis_scripts import SOURCES
from .redis_scripts import ScriptName
from .redis_scripts import Scripts
from .view import NotRevokedCache

#: Redis TTLs run this long past the app's own expiry instant (clock skew between hosts).
TTL_MARGIN = 60.0
_ROTATE_ATTEMPTS = 50
#: Stripes of the subjects' state: each its own hash slot, spread evenly over the slots.
STRIPES = 16
#: Seconds a revocation on a Redis Cluster keeps trying to reach a replica (a failover: the
#: replica takes over, the old master catches up as its replica). An operator's call.
REVOCATION_WAIT = 5.0
#: Tokens whose status bit one script sets at most (a key's revocation may cover millions).
STATUS_MARK_BATCH = 2000
#: Tries per call on a Redis Cluster (topology re-read in between): failovers take a moment.
CLUSTER_ATTEMPTS = 4

_FLOAT_FIELDS = ("created_at", "expires_at", "last_used_at", "current_iat", "rotated_at")
_TEXT_FIELDS = ("sid", "sub", "current_jti", "previous_jti", "last_ip", "last_country", "kid")


def _num(value: float) -> str:
    return repr(float(value))  # shortest exact form: Lua's tonumber reads back the same double


def _ms(instant: float) -> int:
    return int((instant + TTL_MARGIN) * 1000)


def _family_fields(f: Family) -> tuple[dict[str, str], list[str]]:
    """The hash fields of ``f``, and the names of its fields that are ``None``."""
    fields: dict[str, str] = {"revoked": "1" if f.revoked else "0", "claims": json.dumps(f.claims)}
    absent: list[str] = []
    for name in _FLOAT_FIELDS:
        value = getattr(f, name)
        if value is None:
            absent.append(name)
        else:
            fields[name] = _num(value)
    for name in _TEXT_FIELDS:
        value = getattr(f, name)
        if value is None:
            absent.append(name)
        else:
            fields[name] = value
    return fields, absent


def _family_of(h: dict[str, str]) -> Family:
    def number(name: str) -> float | None:
        value = h.get(name)
        return float(value) if value is not None else None

    return Family(
        sid=h["sid"],
        sub=h["sub"],
        created_at=float(h["created_at"]),
        expires_at=float(h["expires_at"]),
        last_used_at=float(h["last_used_at"]),
        current_jti=h["current_jti"],
        current_iat=float(h["current_iat"]),
        previous_jti=h.get("previous_jti"),
        rotated_at=number("rotated_at"),
        revoked=h.get("revoked") == "1",
        last_ip=h.get("last_ip"),
        last_country=h.get("last_country"),
        claims=json.loads(h.get("claims", "{}")),
        kid=h.get("kid"),
    )


def _pairs(mapping: dict[str, str]) -> list[str]:
    return [item for pair in mapping.items() for item in pair]


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    # RedisClusterException (no node reachable, ...) is no RedisError.
    return (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)


#: Each script's SHA1 as the server names it (EVALSHA in a pipeline), per variant: publishing
#: by SPUBLISH (a stripe's) or by PUBLISH (the store's own tag).
_SHAS: t.Final[dict[tuple[ScriptName, bool], str]] = {
    (name, sharded): hashlib.sha1(
        redis_scripts.source(name, sharded=sharded).encode(), usedforsecurity=False
    ).hexdigest()
    for name in SOURCES
    for sharded in (True, False)
}


class RedisStore:
    """State in Redis (one server, or a Redis Cluster), shared by every process and host.

    :param url: ``redis://[user:pass@]host:port/db``, ``rediss://…`` (TLS),
        ``unix:///path/to/redis.sock?db=0``, or ``redis+cluster://host:port`` (any node of
        the cluster; more nodes may follow, comma-separated: ``host1:port,host2:port``).
    :param connect_timeout: seconds to wait for a connection (``JWT_SHIELD_REDIS_CONNECT_TIMEOUT``).
    :param timeout: seconds to wait for any reply (``JWT_SHIELD_REDIS_TIMEOUT``): a hung
        server costs a request this long at most, then the fail mode applies.
    :param max_delay: the longest a revocation made elsewhere may take to reach this
        process (``JWT_SHIELD_REVOCATION_MAX_DELAY``); ``0`` turns the local view off, so
        every check reads Redis.
    :param prefix: the first part of every key, and the hash tag of the shared state.
    :param profile_ttl: seconds a subject's detector profile is kept after its last write.

    Nothing connects before the first call, so an unreachable Redis never stops an app
    from starting; every failure later raises :class:`~flask_jwt_shield.errors.StoreError`.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 0.5,
        timeout: float = 0.5,
        max_delay: float = 1.0,
        prefix: str = "jws",
        profile_ttl: float = 400 * 86400,
        stripes: int = STRIPES,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in {"redis", "rediss", "unix", "redis+cluster"}:
            raise ConfigurationError(f"{url!r} is not a Redis URL (redis://, rediss://, unix://, redis+cluster://).")
        if scheme == "redis+cluster" and not parts.netloc:
            raise ConfigurationError(f"{url!r} names no cluster node; write 'redis+cluster://host:port'.")
        self.url = url
        self.cluster = scheme == "redis+cluster"
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_delay = max_delay
        self.prefix = prefix
        self.profile_ttl = profile_ttl
        if not 1 <= stripes <= 1024:
            raise ConfigurationError(f"stripes={stripes}: a Redis store has 1 to 1024 stripes.")
        self.stripes = stripes
        self._tag = "{" + prefix + "}"
        #: The hash tags of the stripes that hold subjects' state (see :func:`stripe_tags`).
        self.tags = stripe_tags(prefix, stripes)
        #: The channel of the store's own tag (``PUBLISH``), where the one-slot layout of
        #: earlier versions published; each stripe has its own (``SPUBLISH``).
        self.invalidation_channel = self._channel(self._tag)
        #: The status list's own hash tag: its bitmap and indexes live in one slot, apart
        #: from the revocation state (see :mod:`.redis_scripts`).
        self.status_tag = "{" + prefix + ":sl}"
        self._events_key = prefix + ":events"
        self._lock = threading.Lock()
        self._layout_lock = threading.Lock()
        self._client_obj: t.Any = None
        self._scripts = Scripts()
        self._errors = _redis_errors()
        #: Remembered "not revoked" answers, one view per stripe (trusted per stripe).
        self.views = [NotRevokedCache(max(1000, 100_000 // stripes)) for _ in range(stripes)]
        #: Per shard (the stripes, then the store's own tag): trusted until this instant.
        self._trusted_until = [0.0] * (stripes + 1)
        self._watcher: InvalidationSubscriber | None = None
        self._closed = False
        #: Whether the one-slot layout is read through; ``None`` until the first call.
        self._legacy: bool | None = None
        self._located: dict[str, str] = {}

    @property
    def rate_limit_storage_uri(self) -> str:
        """The URI the :mod:`limits` library (Flask-Limiter's storage) reads for this Redis."""
        if self.url.lower().startswith("unix://"):
            return "redis+unix://" + self.url[len("unix://") :]
        return self.url

    # -- connections -------------------------------------------------------------------

    def _client(self) -> t.Any:
        client = self._client_obj
        if client is not None:
            return client
        with self._lock:
            if self._client_obj is None:
                self._client_obj = self._connect()
            return self._client_obj

    def _connect(self) -> t.Any:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, t.Any] = {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.timeout,
            "decode_responses": True,
            # One quick retry on a dropped connection (a restarted server), none on a timeout:
            # a hung server must cost one timeout, not several.
            "retry": Retry(NoBackoff(), 1),
            "retry_on_error": [redis.exceptions.ConnectionError],
            "retry_on_timeout": False,
        }
        if not self.cluster:
            return redis.Redis.from_url(self.url, **options)
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster

        parts = urlsplit(self.url)
        hosts = parts.netloc.rpartition("@")[2]
        nodes = []
        for hostport in hosts.split(","):
            host, _, port = hostport.rpartition(":")
            nodes.append(ClusterNode(host.strip("[]") or "localhost", int(port or 6379)))
        auth = parts.netloc.rpartition("@")[0]
        if auth:
            user, _, password = auth.partition(":")
            options.update(username=user or None, password=password or None)
        options.pop("retry_on_error")
        options.pop("retry_on_timeout")
        # A failover pauses the old master's clients until its replica has taken over (about
        # a second): the cluster client re-reads the topology and tries again, at most
        # CLUSTER_ATTEMPTS times, so a request waits that many timeouts at worst.
        options["retry"] = Retry(ExponentialBackoff(cap=0.25, base=0.05), CLUSTER_ATTEMPTS - 1)
        try:
            return RedisCluster(startup_nodes=nodes, **options)
        except self._errors as exc:
            raise StoreError(f"Redis Cluster {self._where()}: {exc}") from exc

    def _where(self) -> str:
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))

    @contextmanager
    def _io(self) -> Iterator[t.Any]:
        try:
            yield self._client()
        except StoreError:
            raise
        except self._errors as exc:
            raise StoreError(f"Redis store {self._where()}: {type(exc).__name__}: {exc}") from exc

    def _run(self, name: ScriptName, keys: list[str], args: list[t.Any], *, sharded: bool = True) -> t.Any:
        with self._io() as client:
            return self._scripts.run(client, name, keys, args, sharded=sharded)

    def _revoking(self, tag: str, name: ScriptName, keys: list[str], args: list[t.Any]) -> t.Any:
        """Run one script that can revoke, under ``tag`` (see :meth:`_revoking_all`)."""
        return self._revoking_all([(tag, name, keys, args)])[0]

    def _revoking_all(self, calls: list[tuple[str, ScriptName, list[str], list[t.Any]]]) -> list[t.Any]:
        """Run scripts that can revoke, each ``(tag, name, keys, args)``; their replies.

        The calls go in one pipeline per node (one server: one pipeline). On a cluster whose
        master of a tag has replicas, the answer comes only once a replica has its writes:
        replication is asynchronous, and a master killed before passing a revocation on would
        take an acknowledged revocation with it into the failover. ``WAIT`` counts the writes
        of its own connection, so a master's scripts and its ``WAIT`` go down one connection,
        in one pipeline. The scripts are idempotent (later instants win): when that fails --
        a failover or a reshard under way, no replica confirming in time -- a master's calls
        run again after the slot map is read again, for :data:`REVOCATION_WAIT` seconds at
        most, then :class:`StoreError`."""
        lua = [redis_scripts.source(name, sharded=tag != self._tag) for tag, name, _, _ in calls]
        if not self.cluster:
            with self._io() as client:
                pipe = client.pipeline(transaction=False)
                for source, (_, _, keys, args) in zip(lua, calls, strict=True):
                    pipe.eval(source, len(keys), *keys, *args)
                return list(pipe.execute())
        client = self._client()
        replies: dict[int, t.Any] = {}
        deadline = time.monotonic() + REVOCATION_WAIT
        attempt = 0
        while len(replies) < len(calls):
            if attempt and time.monotonic() > deadline:
                slot = self.slot_of(next(calls[i][0] for i in range(len(calls)) if i not in replies))
                raise StoreError(
                    f"Redis store {self._where()}: a revocation in slot {slot} was not confirmed by a"
                    " replica of its master in time; it may hold on the master only, try again"
                )
            if attempt:
                time.sleep(min(0.25, 0.05 * 2**attempt))  # an operator's call, not a request's
                with contextlib.suppress(*self._errors):
                    client.nodes_manager.initialize()
            attempt += 1
            try:
                by_node: dict[str, list[int]] = {}
                for i, (tag, _, _, _) in enumerate(calls):
                    if i not in replies:
                        by_node.setdefault(client.get_node_from_key(tag).name, []).append(i)
            except self._errors:
                continue
            for name, indexes in by_node.items():
                with contextlib.suppress(*self._errors):
                    replies.update(self._on_master(client, name, [(i, lua[i], *calls[i][2:]) for i in indexes]))
        return [replies[i] for i in range(len(calls))]

    def _on_master(
        self, client: t.Any, name: str, calls: list[tuple[int, str, list[str], list[t.Any]]]
    ) -> dict[int, t.Any]:
        """Run ``calls`` on master ``name`` in one pipeline and ``WAIT`` for an online
        replica if it has one; the replies by index, or none (raises on any failure)."""
        master = client.get_redis_connection(client.get_node(node_name=name))
        info = master.info("replication")  # the master's own view: maps may predate replicas
        if info.get("role") != "master":
            return {}
        # Only a replica that is online can confirm; one still in its first sync gets a
        # snapshot taken after these writes (and cannot be promoted before).
        wait = any(isinstance(v, dict) and v.get("state") == "online" for k, v in info.items() if k.startswith("slave"))
        pipe = master.pipeline(transaction=False)
        for _, source, keys, args in calls:
            pipe.eval(source, len(keys), *keys, *args)
        if wait:
            # Half the reply timeout: the server answers before the client gives up on it.
            pipe.execute_command("WAIT", 1, int(self.timeout * 500))
        replies = pipe.execute(raise_on_error=False)
        for reply in replies[: len(calls)]:
            if isinstance(reply, Exception):
                raise reply  # MOVED, TRYAGAIN, ...: read the map again, try again
        if wait and int(replies[-1]) < 1:
            return {}
        return {i: reply for (i, _, _, _), reply in zip(calls, replies, strict=False)}

    def _wrote(self) -> None:
        # This process sees its own revocations at once, not after the round trip of the
        # invalidation message.
        for view in self.views:
            view.invalidate()

    # -- keys --------------------------------------------------------------------------
    #
    # A tag ``T`` is a stripe's (``{jws:u3.41}``) or the store's own (``{jws}``); every key
    # a script touches shares one tag. The stripe of a family's sid (not of its subject)
    # holds the pointer to the family's stripe.

    def _layout(self) -> bool:
        """Whether data of the one-slot layout is read through (decided once per process)."""
        legacy = self._legacy
        if legacy is None:
            with self._layout_lock:
                if self._legacy is None:
                    self._legacy = self._read_layout()
                legacy = self._legacy
        return legacy

    def _read_layout(self) -> bool:
        marker = f"{self._tag}:layout"
        wanted = f"stripes={self.stripes}"
        with self._io() as client:
            found = client.get(marker)
            if found is None and not self._old_layout_present(client):
                client.set(marker, wanted, nx=True)
                found = client.get(marker)
        if found is None:
            return True  # data of the one-slot layout, not migrated yet: read it through
        if found != wanted:
            raise StoreError(
                f"Redis store {self._where()}: the state under prefix {self.prefix!r} is laid out in"
                f" {found.partition('=')[2]} stripes, this process expects {self.stripes}."
            )
        return False

    def _old_layout_present(self, client: t.Any) -> bool:
        """Any key under the store's own tag (only the one-slot layout wrote any before the
        layout marker). A cluster lists the slot's keys on its owner; one server scans."""
        if self.cluster:
            # The slot may hold keys of others (another tag of the same slot): look at names.
            slot, mine = self.slot_of(self._tag), self._tag + ":"
            node = client.get_node_from_key(self._tag)
            if int(client.cluster_countkeysinslot(slot)) == 0:
                return False
            names = client.execute_command("CLUSTER GETKEYSINSLOT", slot, 1_000_000, target_nodes=node)
            return any(name.startswith(mine) for name in names)
        return next(iter(client.scan_iter(match=_glob(self._tag) + ":*", count=1000)), None) is not None

    @staticmethod
    def slot_of(key: str) -> int:
        """The Redis Cluster hash slot of ``key`` (the same on a single server)."""
        from redis.crc import key_slot

        return int(key_slot(key.encode()))

    def stripe(self, sub: str) -> int:
        """The stripe that holds ``sub``'s state: the same number in every process."""
        return zlib.crc32(sub.encode()) % self.stripes

    def tag_of(self, sub: str) -> str:
        """The hash tag of ``sub``'s stripe."""
        return self.tags[self.stripe(sub)]

    @staticmethod
    def _rev(tag: str, kind: str, value: str) -> str:
        return f"{tag}:r:{kind[0]}:{value}"

    @staticmethod
    def _nb(tag: str, sub: str) -> str:
        return f"{tag}:nb:{sub}"

    @staticmethod
    def _fam(tag: str, sid: str) -> str:
        return f"{tag}:f:{sid}"

    @staticmethod
    def _spent(tag: str, sid: str) -> str:
        return f"{tag}:sp:{sid}"

    @classmethod
    def _kid_key(cls, tag: str, kid: str | None) -> str:
        """The revocation key of ``kid`` under ``tag``; for ``None`` a key that never exists."""
        return cls._rev(tag, "kid", kid) if kid is not None else f"{tag}:r:k-none"

    @staticmethod
    def _index(tag: str, sub: str) -> str:
        return f"{tag}:fs:{sub}"

    def _pointer(self, sid: str) -> str:
        return f"{self.tags[zlib.crc32(sid.encode()) % self.stripes]}:p:{sid}"

    def _profile(self, sub: str) -> str:
        return f"{self.prefix}:p:{sub}"

    def _channel(self, tag: str) -> str:
        return tag + ":invalidate"

    def _fan_out_tags(self) -> list[str]:
        """Where an entry that names no subject is written: every stripe, and the old slot
        while it is read through (so processes of the previous version see it too)."""
        return [*self.tags, self._tag] if self._layout() else list(self.tags)

    def _locate(self, sid: str) -> str | None:
        """The tag of family ``sid``'s stripe: from the pointer (remembered: it never
        changes), else the old slot while it is read through; ``None``: unknown."""
        tag = self._located.get(sid)
        if tag is not None:
            return tag
        with self._io() as client:
            found = client.get(self._pointer(sid))
            if found is None and self._layout():
                if client.exists(self._fam(self._tag, sid)):
                    return self._tag  # not remembered: the migration may move it
                # Moved between the two reads? The pointer is written before the old copy goes.
                found = client.get(self._pointer(sid))
            if found is None:
                return None
        if len(self._located) >= 100_000:
            self._located.clear()
        tag = self._located[sid] = self.tags[int(found)]
        return tag

    # -- revocation --------------------------------------------------------------------

    def check(self, *, jti: str, sid: str | None, sub: str, kid: str, iat: float, now: float) -> str | None:
        shard = self.stripe(sub)
        view = self.views[shard]
        trusted, instant = self._trusted_until, time.monotonic()
        if view.fresh(jti) and trusted[shard] > instant and (self._legacy is False or trusted[-1] > instant):
            return None  # a remembered answer, younger than the last invalidation of its shard
        legacy = self._layout()
        self._watch()
        generation = view.generation
        tag = self.tags[shard]
        keys = [self._rev(tag, "jti", jti), self._nb(tag, sub), self._rev(tag, "kid", kid)]
        if sid is not None:
            keys.append(self._rev(tag, "sid", sid))
        with self._io() as client:
            if not legacy:
                values = client.mget(keys)
            else:
                # The one-slot layout's entries too, until migrated (on a cluster: one MGET
                # per slot, sent together).
                old = [self._rev(self._tag, "jti", jti), self._nb(self._tag, sub), self._rev(self._tag, "kid", kid)]
                if sid is not None:
                    old.append(self._rev(self._tag, "sid", sid))
                both = client.mget_nonatomic(keys + old) if self.cluster else client.mget(keys + old)
                new_values, old_values = both[: len(keys)], both[len(keys) :]
                values = [_later(a, b) for a, b in zip(new_values, old_values, strict=True)]
        token, not_before, key = values[0], values[1], values[2]
        family = values[3] if sid is not None else None
        if token is not None and float(token) > now:
            return "token"
        if family is not None and float(family) > now:
            return "family"
        if not_before is not None:
            at, _, until = not_before.partition(" ")
            if iat <= float(at) and float(until) > now:
                return "subject"
        if key is not None and float(key) > now:
            return "key"
        view.remember(jti, generation)
        return None

    def revoke(self, kind: RevocationKind, value: str, until: float) -> None:
        # A token's or a family's id names no subject, and a key's revocation must end
        # rotations atomically in every stripe: the entry goes to every stripe (and a key's
        # to the store's own tag, its record). One script per stripe, each with its message.
        tags = self._fan_out_tags()
        if kind == "kid" and self._tag not in tags:
            tags.append(self._tag)
        self._revoking_all(
            [
                (tag, "revoke", [self._rev(tag, kind, value)], [_num(until), _ms(until), self._channel(tag)])
                for tag in tags
            ]
        )
        self._wrote()

    def is_revoked(self, kind: RevocationKind, value: str, *, now: float) -> bool:
        if kind == "kid":
            keys = [self._rev(self._tag, kind, value)]
        else:
            located = self._locate(value) if kind == "sid" else None
            keys = [self._rev(located or self.tags[0], kind, value)]
            if self._layout():
                keys.append(self._rev(self._tag, kind, value))
        with self._io() as client:
            values = [client.get(key) for key in keys]
        return any(v is not None and float(v) > now for v in values)

    def revoke_subject(self, sub: str, at: float, until: float) -> None:
        tags = [self.tag_of(sub), self._tag] if self._layout() else [self.tag_of(sub)]
        self._revoking_all(
            [
                (
                    tag,
                    "revoke_subject",
                    [self._nb(tag, sub), self._index(tag, sub)],
                    [_num(at), _num(until), TTL_MARGIN, self._channel(tag), tag],
                )
                for tag in tags
            ]
        )
        self._wrote()

    def not_before(self, sub: str, now: float) -> float | None:
        keys = [self._nb(self.tag_of(sub), sub)]
        if self._layout():
            keys.append(self._nb(self._tag, sub))
        with self._io() as client:
            values = [client.get(key) for key in keys]
        value = values[0] if len(values) == 1 else _later(values[0], values[1])
        if value is None:
            return None
        at, _, until = value.partition(" ")
        return float(at) if float(until) > now else None

    # -- refresh families ----------------------------------------------------------------

    def create_family(
        self, family: Family, *, max_sessions: int, idle_ttl: float, until: float, status: StatusClaim | None = None
    ) -> list[str]:
        fields, _ = _family_fields(family)
        fields["v"] = "0"
        shard = self.stripe(family.sub)
        tag = self.tags[shard]
        # The pointer first: a family is never stored where nobody can find it.
        with self._io() as client:
            client.set(self._pointer(family.sid), str(shard), pxat=_ms(family.expires_at))
        dropped = self._run_with_claim(
            status,
            "create_family",
            [
                self._fam(tag, family.sid),
                self._index(tag, family.sub),
                self._nb(tag, family.sub),
                self._kid_key(tag, None),
            ],
            [
                tag,
                family.sid,
                _num(family.created_at),
                _ms(family.expires_at),
                max_sessions,
                _num(idle_ttl),
                _num(until),
                TTL_MARGIN,
                self._channel(tag),
                *_pairs(fields),
            ],
        )
        if dropped:
            self._wrote()
        return list(dropped)

    def rotate(
        self,
        sid: str,
        jti: str,
        *,
        new_jti: str,
        new_iat: float,
        now: float,
        idle_ttl: float,
        grace: float,
        ip: str | None,
        country: str | None,
        until: float,
        kid: str | None = None,
        new_kid: str | None = None,
        status: StatusClaim | None = None,
    ) -> Rotation:
        asked = False
        for _attempt in range(_ROTATE_ATTEMPTS):
            tag = self._locate(sid)
            if tag is None:
                return Rotation("unknown")
            key = self._fam(tag, sid)
            if status is not None and not asked:
                # The claim rides with the first read of the family, before anything is
                # decided: one that fails (or finds no free index) leaves the token unspent.
                asked = True
                h = self._claim_with_read(status, key)
                if status.idx is None:
                    return Rotation("unclaimed")
            else:
                with self._io() as client:
                    h = client.hgetall(key)
            if not h and tag == self._tag:
                continue  # moved out of the old slot since it was located: locate it again
            if not h:
                return Rotation("unknown")
            if h.get("moved"):
                continue  # being migrated to its stripe: its pointer appears in a moment
            family = _family_of(h)
            # The subject's not-before instant and the key's revocation are read again, and
            # acted upon, inside the script that persists the decision.
            outcome = family.spend(
                jti,
                new_jti=new_jti,
                new_iat=new_iat,
                now=now,
                idle_ttl=idle_ttl,
                grace=grace,
                ip=ip,
                country=country,
                new_kid=new_kid,
            )
            if outcome in ("revoked", "expired"):
                return Rotation(outcome, family)
            fields, absent = _family_fields(family)
            for name in ("sid", "sub", "created_at", "expires_at", "claims", "revoked"):
                fields.pop(name)  # never changed by a rotation
            entry = json.dumps([jti, now, ip])
            written = self._run(
                "persist_rotation",
                [key, self._spent(tag, sid), self._nb(tag, family.sub), self._kid_key(tag, kid)],
                [
                    tag,
                    sid,
                    h.get("v", ""),
                    outcome,
                    _num(until),
                    TTL_MARGIN,
                    self._channel(tag),
                    _ms(family.expires_at),
                    entry,
                    len(absent),
                    *absent,
                    *_pairs(fields),
                    _num(now),
                ],
                sharded=tag != self._tag,
            )
            if not written:
                continue  # another process wrote the family first: read it again, decide again
            if written == 2:  # its subject or key was revoked first: the family ended
                self._wrote()
                family.revoked = True
                return Rotation("revoked", family)
            if outcome != "reused":
                return Rotation(outcome, family)
            self._wrote()
            return Rotation("reused", family, self._first_use(tag, sid, jti))
        raise StoreError(f"Redis store {self._where()}: family {sid!r} kept changing during rotation")

    def _first_use(self, tag: str, sid: str, jti: str) -> Use | None:
        with self._io() as client:
            entries = client.lrange(self._spent(tag, sid), 0, -1)
        for entry in entries:
            spent, at, ip = json.loads(entry)
            if spent == jti:
                return Use(float(at), ip)
        return None

    def get_family(self, sid: str) -> Family | None:
        for _attempt in range(3):
            tag = self._locate(sid)
            if tag is None:
                return None
            with self._io() as client:
                h = client.hgetall(self._fam(tag, sid))
            if h and not h.get("moved"):
                return _family_of(h)
            if tag != self._tag:
                return None
        return _family_of(h) if h else None  # still moving: its last state is still true

    def revoke_family(self, sid: str, until: float) -> Family | None:
        for _attempt in range(_ROTATE_ATTEMPTS):
            tag = self._locate(sid)
            if tag is None:
                # A family this store never held (an identity provider's session): its id
                # goes to every stripe, like a token's.
                self.revoke("sid", sid, until)
                return None
            flat = self._revoking(
                tag,
                "revoke_family",
                [self._fam(tag, sid), self._rev(tag, "sid", sid)],
                [tag, sid, _num(until), TTL_MARGIN, self._channel(tag)],
            )
            self._wrote()
            h = dict(zip(flat[::2], flat[1::2], strict=True))
            if h.get("moved") or (not h and tag == self._tag):
                continue  # migrated meanwhile: revoke it where it went
            return _family_of(h) if h else None
        raise StoreError(f"Redis store {self._where()}: family {sid!r} kept moving while being revoked")

    def families(self, sub: str, *, now: float, idle_ttl: float) -> list[Family]:
        tags = [self.tag_of(sub), self._tag] if self._layout() else [self.tag_of(sub)]
        rows: list[dict[str, str]] = []
        nbs: list[str | None] = []
        with self._io() as client:
            for tag in tags:
                sids = client.zrange(self._index(tag, sub), 0, -1)
                pipe = client.pipeline(transaction=False)
                for sid in sids:
                    pipe.hgetall(self._fam(tag, sid))
                pipe.get(self._nb(tag, sub))
                *found, nb = pipe.execute()
                rows += [h for h in found if h and not h.get("moved")]
                nbs.append(nb)
            live = [f for f in (_family_of(h) for h in rows) if f.live(now, idle_ttl)]
            kids = sorted({f.kid for f in live if f.kid is not None})
            revoked_kids = {
                k
                for k, v in zip(
                    kids, client.mget([self._rev(self._tag, "kid", k) for k in kids]) if kids else [], strict=True
                )
                if v is not None and float(v) > now
            }
        nb = nbs[0] if len(nbs) == 1 else _later(nbs[0], nbs[1])
        not_before = None
        if nb is not None:
            at, _, nb_until = nb.partition(" ")
            not_before = float(at) if float(nb_until) > now else None
        live = [f for f in live if not f.ended_by(not_before, f.kid in revoked_kids)]
        return sorted(live, key=lambda f: f.created_at)

    # -- detector state and events -------------------------------------------------------

    def get_profile(self, sub: str) -> dict[str, t.Any] | None:
        with self._io() as client:
            value = client.get(self._profile(sub))
        return t.cast(dict[str, t.Any], json.loads(value)) if value is not None else None

    def put_profile(self, sub: str, profile: dict[str, t.Any]) -> None:
        with self._io() as client:
            client.set(self._profile(sub), json.dumps(profile), ex=int(self.profile_ttl))

    def add_event(self, event: dict[str, t.Any], *, retention: int) -> None:
        with self._io() as client:
            # An exact MAXLEN: the stream never holds more than JWT_SHIELD_EVENT_RETENTION.
            client.xadd(self._events_key, {"d": json.dumps(event)}, maxlen=retention, approximate=False)

    def events(
        self,
        *,
        subject: str | None = None,
        jti: str | None = None,
        sid: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, t.Any]]:
        found: list[dict[str, t.Any]] = []
        upper = "+"
        with self._io() as client:
            while len(found) < limit:
                page = client.xrevrange(self._events_key, max=upper, min="-", count=500)
                if not page:
                    break
                for _id, data in page:
                    event = json.loads(data["d"])
                    if (
                        (subject is None or event.get("subject") == subject)
                        and (jti is None or event.get("jti") == jti)
                        and (sid is None or event.get("sid") == sid)
                        and (kind is None or event.get("kind") == kind)
                        and (since is None or event["at"] >= since)
                    ):
                        found.append(event)
                        if len(found) >= limit:
                            break
                upper = "(" + page[-1][0]
        return found

    def remember_once(self, namespace: str, key: str, until: float, *, now: float) -> bool:
        # One key per entry, in its own slot (they spread over a cluster), gone by its TTL:
        # Redis never drops a live entry (noeviction), so no floor is needed to stay exact.
        name = f"{self.prefix}:once:{len(namespace)}:{namespace}:{key}"
        return bool(self._run("remember_once", [name], [_num(until), _num(now), _ms(until)]))

    # -- the status list -----------------------------------------------------------------

    def status_claim(self, holder: StatusHolder, candidates: t.Sequence[int], *, now: float) -> int | None:
        idx = self._run("status_claim", *self._claim_call(holder, candidates, now))
        return None if idx is None else int(idx)

    def _claim_call(
        self, holder: StatusHolder, candidates: t.Sequence[int], now: float
    ) -> tuple[list[str], list[t.Any]]:
        record = {
            "jti": holder.jti,
            "sid": holder.sid or "",
            "sub": holder.sub,
            "kid": holder.kid or "",
            "i": _num(holder.iat),
            "u": _num(holder.until),
            "e": _num(holder.ends_at) if holder.ends_at is not None and holder.ends_at < holder.until else "",
        }
        tag = self.status_tag
        return [f"{tag}:bits"], [tag, json.dumps(record), _num(now), TTL_MARGIN, *(str(i) for i in candidates)]

    # A claim made along with a family write goes in the same pipeline: one round trip, not
    # one script (the list has a hash tag of its own). The scripts are sent by their SHA1;
    # a server that has not loaded one yet answers NOSCRIPT, and that one is run again the
    # usual way (it did not run).

    def _queue(self, pipe: t.Any, name: ScriptName, keys: list[str], args: list[t.Any]) -> None:
        pipe.evalsha(_SHAS[name, True], len(keys), *keys, *args)  # on a stripe, or tag-free

    def _settle(self, client: t.Any, name: ScriptName, keys: list[str], args: list[t.Any], reply: t.Any) -> t.Any:
        import redis

        if isinstance(reply, redis.exceptions.NoScriptError):
            return self._scripts.run(client, name, keys, args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _run_with_claim(
        self, status: StatusClaim | None, name: ScriptName, keys: list[str], args: list[t.Any]
    ) -> t.Any:
        """Script ``name``, and ``status`` in the same round trip; a claim that fails is not
        made (``status.made`` stays false) and does not fail the script's write."""
        if status is None:
            return self._run(name, keys, args)
        claim_keys, claim_args = self._claim_call(status.holder, status.candidates, status.now)
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            self._queue(pipe, name, keys, args)
            self._queue(pipe, "status_claim", claim_keys, claim_args)
            reply, claimed = pipe.execute(raise_on_error=False)
            reply = self._settle(client, name, keys, args, reply)
            try:
                claimed = self._settle(client, "status_claim", claim_keys, claim_args, claimed)
            except self._errors:
                return reply
        status.idx, status.made = (None if claimed is None else int(claimed)), True
        return reply

    def _claim_with_read(self, status: StatusClaim, key: str) -> dict[str, str]:
        """``status`` claimed and the hash ``key`` read, in one round trip."""
        claim_keys, claim_args = self._claim_call(status.holder, status.candidates, status.now)
        with self._io() as client:
            pipe = client.pipeline(transaction=False)
            self._queue(pipe, "status_claim", claim_keys, claim_args)
            pipe.hgetall(key)
            claimed, h = pipe.execute(raise_on_error=False)
            claimed = self._settle(client, "status_claim", claim_keys, claim_args, claimed)
            if isinstance(h, Exception):
                raise h
        status.idx, status.made = (None if claimed is None else int(claimed)), True
        return t.cast(dict[str, str], h)

    def status_mark(self, kind: StatusKind, value: str, *, at: float | None, until: float, now: float) -> int:
        if kind not in ("jti", "sid", "sub", "kid"):
            raise ValueError(kind)
        tag = self.status_tag
        changed, offset = 0, 0
        while offset >= 0:
            done, offset = self._run(
                "status_mark",
                [f"{tag}:bits"],
                [
                    tag,
                    kind,
                    value,
                    _num(at) if at is not None else "",
                    _num(until),
                    _num(now),
                    TTL_MARGIN,
                    offset,
                    STATUS_MARK_BATCH,
                ],
            )
            changed += int(done)
            offset = int(offset)
        return changed

    def status_bits(self, size: int, *, version: int | None, now: float) -> tuple[int, bytes | None]:
        from redis.client import NEVER_DECODE

        tag = self.status_tag
        current, stale = self._run(
            "status_version", [f"{tag}:bits"], [tag, _num(now), "" if version is None else str(version)]
        )
        if not int(stale):
            return int(current), None
        with self._io() as client:
            # The bitmap is binary: read without the client's decoding. A bit set after the
            # version read above is newer than that version, never older: harmless.
            data = client.execute_command("GET", f"{tag}:bits", **{NEVER_DECODE: []}) or b""
        length = -(-size // 8)
        return int(current), bytes(data[:length]) + bytes(max(0, length - len(data)))

    # -- ordered boxes (the transmitter's streams and undelivered SETs) --------------------

    def _box(self, box: str) -> list[str]:
        # Its own hash tag: a box's three keys share one slot; boxes spread over a cluster.
        if "}" in box or "{" in box:
            raise ValueError(f"box names hold no braces: {box!r}")
        base = f"{self.prefix}:box:{{{box}}}"
        return [base + ":o", base + ":i", base + ":n"]

    def box_put(self, box: str, key: str, value: str, until: float, *, max_items: int, now: float) -> int:
        item = json.dumps([until, value])
        return int(self._run("box_put", self._box(box), [key, item, _num(now), max_items, _ms(until + TTL_MARGIN)]))

    def box_items(self, box: str, *, now: float, limit: int) -> list[tuple[str, str]]:
        order, items, _ = self._box(box)
        found: list[tuple[str, str]] = []
        start = 0
        with self._io() as client:
            while len(found) < limit:
                keys = client.zrange(order, start, start + limit - 1)
                if not keys:
                    break
                start += len(keys)
                for key, item in zip(keys, client.hmget(items, keys), strict=True):
                    if item is not None:
                        until, value = json.loads(item)
                        if until > now:
                            found.append((key, value))
        return found[:limit]

    def box_delete(self, box: str, keys: t.Sequence[str]) -> int:
        if not keys:
            return 0
        order, items, _ = self._box(box)
        with self._io() as client:
            pipe = client.pipeline(transaction=True)
            pipe.zrem(order, *keys)
            pipe.hdel(items, *keys)
            _, deleted = pipe.execute()
        return int(deleted)

    # -- maintenance ----------------------------------------------------------------------

    def purge(self, now: float) -> int:
        dropped = 0
        ours = {*self.tags, self._tag}
        batches: dict[str, list[str]] = {}
        with self._io() as client:
            for key in client.scan_iter(match=f"{self.prefix}:once:*", count=1000):
                dropped += int(self._run("purge_once", [key], [_num(now)]))
            # Every stripe's keys and the store's own: one scan ('{jws}:…' and '{jws:…').
            for key in client.scan_iter(match="{" + _glob(self.prefix) + "[}:]*", count=1000):
                tag = key[: key.find("}") + 1]
                if tag not in ours:
                    continue  # another room's tag under the same prefix
                batch = batches.setdefault(tag, [])
                batch.append(key)
                if len(batch) >= 200:
                    dropped += int(self._run("purge", batch, [tag, _num(now)]))
                    batch.clear()
            for tag, batch in batches.items():
                if batch:
                    dropped += int(self._run("purge", batch, [tag, _num(now)]))
            tag = self.status_tag
            while True:
                done = int(self._run("status_purge", [f"{tag}:bits"], [tag, _num(now), 1000]))
                dropped += done
                if done < 1000:
                    break
        return dropped

    def migrate_layout(self) -> dict[str, int]:
        """Move the state of the one-slot layout (earlier versions) into the stripes.

        Safe while the app serves: processes read the old slot through until it is empty,
        every entry is copied before its original is deleted, and a family is marked moved
        (a rotation that read it before refuses to commit, then finds it at its new place)
        before its copy is written. Revocations of keys stay under the store's own tag,
        their record, and are copied into every stripe. Idempotent: run it again after an
        interruption. Returns how many entries of each kind moved."""
        old = self._tag
        moved = {"tokens": 0, "families": 0, "sessions": 0, "subjects": 0, "keys": 0}
        with self._io() as client:
            found = sorted(set(client.scan_iter(match=_glob(old) + ":*", count=1000)))
            for key in found:
                kind, _, name = key[len(old) + 1 :].partition(":")
                if kind == "f":
                    if self._move_family(client, name):
                        moved["families"] += 1
            for key in found:
                kind, _, rest = key[len(old) + 1 :].partition(":")
                if kind == "r" and rest[:2] in ("j:", "s:", "k:"):
                    value, expires = client.get(key), int(client.pexpiretime(key))
                    if value is None:
                        continue
                    expires = expires if expires > 0 else _ms(float(value))
                    which = {"j": "jti", "s": "sid", "k": "kid"}[rest[0]]
                    for tag in self.tags:
                        self._run("revoke", [self._rev(tag, which, rest[2:])], [value, expires, self._channel(tag)])
                    moved[{"jti": "tokens", "sid": "sessions", "kid": "keys"}[which]] += 1
                elif kind == "nb":
                    value = client.get(key)
                    if value is None:
                        continue
                    at, _, until = value.partition(" ")
                    tag = self.tag_of(rest)
                    self._run(
                        "revoke_subject",
                        [self._nb(tag, rest), self._index(tag, rest)],
                        [at, until, TTL_MARGIN, self._channel(tag), tag],
                    )
                    moved["subjects"] += 1
            client.set(f"{old}:layout", f"stripes={self.stripes}")
            # Copied everywhere: the originals can go (a key's revocation stays, its record).
            for key in found:
                kind, _, rest = key[len(old) + 1 :].partition(":")
                if kind in ("nb", "fs", "sp") or (kind == "r" and rest[:2] in ("j:", "s:")):
                    client.delete(key)
        self._legacy = None  # read the layout again
        self._wrote()
        return moved

    def _move_family(self, client: t.Any, sid: str) -> bool:
        old = self._tag
        out = self._run("move_family_out", [self._fam(old, sid), self._spent(old, sid)], [], sharded=False)
        if not out:
            return False
        flat, spent = out
        h = dict(zip(flat[::2], flat[1::2], strict=True))
        shard = self.stripe(h["sub"])
        tag = self.tags[shard]
        expires = _ms(float(h["expires_at"]))
        h.pop("moved", None)
        self._run(
            "move_family_in",
            [self._fam(tag, sid), self._spent(tag, sid), self._index(tag, h["sub"])],
            [sid, h["created_at"], expires, len(spent), *spent, *_pairs(h)],
        )
        # The pointer once the copy is in place (a refresh that meets the old copy marked
        # moved meanwhile locates it again), and before the old copy goes.
        client.set(self._pointer(sid), str(shard), pxat=expires)
        self._located.pop(sid, None)
        client.delete(self._fam(old, sid), self._spent(old, sid))
        return True

    def keys_per_node(self) -> dict[str, int]:
        """``host:port`` -> how many of this store's keys each master holds (one server: one
        entry). Counts every stripe's slot and the store's own, for operators and benchmarks."""
        with self._io() as client:
            if not self.cluster:
                count = sum(1 for _ in client.scan_iter(match="{" + _glob(self.prefix) + "[}:]*", count=1000))
                return {self._where(): count}
            spread: dict[str, int] = {}
            for tag in [*self.tags, self._tag]:
                node = client.get_node_from_key(tag)
                where = f"{node.host}:{node.port}"
                spread[where] = spread.get(where, 0) + int(client.cluster_countkeysinslot(self.slot_of(tag)))
            return spread

    def eviction_risks(self) -> list[str]:
        """What could make Redis drop this store's keys silently: a ``maxmemory`` with any
        ``maxmemory-policy`` but ``noeviction`` (the ``volatile-*`` ones too, since every key
        here carries a TTL), on each node. Empty when none, or when ``CONFIG GET`` is not
        allowed (a managed Redis): then nothing can be said. Raises :class:`StoreError`."""
        with self._io() as client:
            try:
                replies = client.config_get("maxmemory*")
            except self._errors as exc:
                if "unknown command" in str(exc).lower() or "noperm" in str(exc).lower():
                    return []
                raise
        # A cluster client answers per node ({node: {...}}), a plain one with the settings.
        per_node = replies.values() if replies and all(isinstance(v, dict) for v in replies.values()) else [replies]
        risks = []
        for settings in per_node:
            policy, limit = settings.get("maxmemory-policy", "noeviction"), int(settings.get("maxmemory", 0) or 0)
            if limit > 0 and policy != "noeviction":
                risks.append(f"maxmemory {limit} with maxmemory-policy {policy}")
        return sorted(set(risks))

    def close(self) -> None:
        self._closed = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
        client, self._client_obj = self._client_obj, None
        self._scripts = Scripts()
        self._trusted_until = [0.0] * (self.stripes + 1)
        for view in self.views:
            view.invalidate()
        if client is not None:
            try:
                client.close()
            except self._errors:
                pass

    # -- the invalidation subscriber --------------------------------------------------------
    #
    # Shards 0 .. stripes-1 are the stripes; shard ``stripes`` is the store's own tag, watched
    # only while the one-slot layout is read through (the checks read it then).

    def _watch(self) -> None:
        """Make sure this process's subscriber runs (started lazily, restarted after a fork)."""
        if self.max_delay <= 0 or self._closed:
            return
        watcher = self._watcher
        if self.views[0].reset_after_fork():
            for view in self.views[1:]:
                view.reset_after_fork()
            self._trusted_until = [0.0] * (self.stripes + 1)
            watcher = self._watcher = None  # the parent's threads did not cross the fork
        if watcher is not None and watcher.is_alive():
            return
        with self._lock:
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = InvalidationSubscriber(self)
                self._watcher.start()

    def shards(self) -> list[int]:
        """The shards this process watches: every stripe, and the store's own tag while the
        one-slot layout is read through (:mod:`.invalidation`)."""
        return list(range(self.stripes + 1 if self._legacy is not False else self.stripes))

    def _shard_tag(self, shard: int) -> str:
        return self.tags[shard] if shard < self.stripes else self._tag

    def subscription(self, shard: int) -> tuple[str, str]:
        """The subscribe command and channel of ``shard``: sharded pub/sub on a stripe, plain
        pub/sub on the store's own tag (where the previous version publishes)."""
        return ("SSUBSCRIBE" if shard < self.stripes else "SUBSCRIBE"), self._channel(self._shard_tag(shard))

    def shard_owners(self, shards: list[int], attempt: int) -> dict[Node, list[int]]:
        """The master that owns each shard's slot, where every script that can revoke in it
        runs and publishes (on one server: that server). After a lost link (``attempt`` > 0)
        the slot map is read again: slots may have moved."""
        if not self.cluster:
            return {None: list(shards)}
        client = self._client()
        if attempt > 0:
            client.nodes_manager.initialize()
        owners: dict[Node, list[int]] = {}
        for shard in shards:
            node = client.get_node_from_key(self._shard_tag(shard))
            owners.setdefault((node.host, int(node.port)), []).append(shard)
        return owners

    def subscriber_connection(self, node: Node) -> t.Any:
        """A fresh connection, outside every pool, to ``node`` (``None``: the one server)."""
        if node is None:
            from redis.connection import Connection
            from redis.connection import parse_url

            kwargs = dict(parse_url(self.url))
            cls: t.Any = kwargs.pop("connection_class", Connection)
            return cls(**self._subscriber_options(kwargs))
        return self._node_connection(*node)

    def owner_questions(self, node: Node, shards: list[int]) -> dict[int, list[str]] | None:
        """On a cluster: per shard, a read of a key of the shard's slot that is never written.
        A node answers it only while it owns the slot and the slot is not migrating away
        (``MOVED``, ``ASK``), and while it is part of a healthy cluster (``CLUSTERDOWN``).
        ``None`` on one server: every answer there comes from the owner."""
        if node is None:
            return None
        return {shard: ["EXISTS", self._shard_tag(shard) + ":owner-probe"] for shard in shards}

    def _node_connection(self, host: str, port: int) -> t.Any:
        from redis.connection import Connection

        kwargs: dict[str, t.Any] = {"host": host, "port": port}
        auth = urlsplit(self.url).netloc.rpartition("@")[0]
        if auth:
            user, _, password = auth.partition(":")
            kwargs.update(username=user or None, password=password or None)
        return Connection(**self._subscriber_options(kwargs))

    def _subscriber_options(self, kwargs: dict[str, t.Any]) -> dict[str, t.Any]:
        kwargs.update(
            socket_timeout=max(self.timeout, self.max_delay),
            socket_connect_timeout=self.connect_timeout,
            decode_responses=True,
            # RESP3: a subscribed connection may also run the owner questions (RESP2 allows
            # only PING and the subscribe commands there), and messages come as push frames.
            protocol=3,
        )
        return kwargs

    def forget_answers(self, shards: t.Iterable[int] | None = None) -> None:
        """Forget remembered "not revoked" answers of ``shards`` (default: all); the store's
        own tag (shard ``stripes``) bears on every answer while it is read through."""
        chosen = range(self.stripes) if shards is None else shards
        for shard in chosen:
            if shard >= self.stripes:
                for view in self.views:
                    view.invalidate()
            else:
                self.views[shard].invalidate()

    def trust_until(self, shards: t.Iterable[int], instant: float) -> None:
        """Trust remembered answers of ``shards`` until ``instant`` (:func:`time.monotonic`);
        ``0.0``: stop."""
        trusted = self._trusted_until
        for shard in shards:
            trusted[shard] = instant

    def watching(self, sub: str | None = None) -> bool:
        """True while remembered answers are trusted: of ``sub``'s stripe, or of every shard."""
        now = time.monotonic()
        shards = self.shards() if sub is None else [self.stripe(sub), *self.shards()[self.stripes :]]
        return all(self._trusted_until[shard] > now for shard in shards)

    def view_of(self, sub: str) -> NotRevokedCache:
        """The remembered answers of ``sub``'s stripe."""
        return self.views[self.stripe(sub)]


def _glob(text: str) -> str:
    """``text`` as a literal in a Redis ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _later(a: str | None, b: str | None) -> str | None:
    """Two revocation entries of one thing (stripe and one-slot layout) as one: the later
    instants win, as when a script merges two revocations."""
    if a is None or b is None:
        return a if b is None else b
    if " " not in a:
        return a if float(a) >= float(b) else b
    (a_at, _, a_until), (b_at, _, b_until) = a.partition(" "), b.partition(" ")
    at = a_at if float(a_at) >= float(b_at) else b_at
    until = a_until if float(a_until) >= float(b_until) else b_until
    return f"{at} {until}"


def stripe_tags(prefix: str, stripes: int) -> list[str]:
    """The hash tags of ``prefix``'s stripes: stripe ``i``'s slot lies in the ``i``-th of
    ``stripes`` equal bands of the 16384 slots, so a cluster whose masters own contiguous
    ranges (what ``redis-cli --cluster create`` and rebalancing make) gets an even share."""
    from redis.crc import key_slot

    tags = []
    for i in range(stripes):
        n = 0
        while True:
            tag = f"{prefix}:u{i}.{n}"
            if key_slot(tag.encode()) * stripes // 16384 == i:
                break
            n += 1
        tags.append("{" + tag + "}")
    return tags
