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
that it still does (:meth:`RedisStore.owner_probe`); it follows a migration or a failover.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from ..errors import ConfigurationError
from ..errors import StoreError
from .base import Family
from .base import RevocationKind
from .base import Rotation
from .base import StatusClaim
from .base import StatusHolder
from .base import StatusKind
from .base import Use
from .invalidation import InvalidationSubscriber
from .redis_scripts import SOURCES
from .redis_scripts import ScriptName
from .redis_scripts import Scripts
from .view import NotRevokedCache

#: Redis TTLs run this long past the app's own expiry instant (clock skew between hosts).
TTL_MARGIN = 60.0
_ROTATE_ATTEMPTS = 50
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

    return (redis.exceptions.RedisError, OSError)


#: Each script's SHA1, as the server names it (EVALSHA in a pipeline).
_SHAS: t.Final[dict[ScriptName, str]] = {
    name: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest() for name, source in SOURCES.items()
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
        self._tag = "{" + prefix + "}"
        #: The status list's own hash tag: its bitmap and indexes live in one slot, apart
        #: from the revocation state (see :mod:`.redis_scripts`).
        self.status_tag = "{" + prefix + ":sl}"
        #: The pub/sub channel every write that can revoke a token publishes on.
        self.invalidation_channel = self._tag + ":invalidate"
        self._events_key = prefix + ":events"
        self._lock = threading.Lock()
        self._client_obj: t.Any = None
        self._scripts = Scripts()
        self._errors = _redis_errors()
        self.view = NotRevokedCache()
        self._trusted_until = 0.0
        self._watcher: InvalidationSubscriber | None = None
        self._closed = False

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

    def _run(self, name: ScriptName, keys: list[str], args: list[t.Any]) -> t.Any:
        with self._io() as client:
            return self._scripts.run(client, name, keys, args)

    def _wrote(self) -> None:
        # This process sees its own revocations at once, not after the round trip of the
        # invalidation message.
        self.view.invalidate()

    # -- keys --------------------------------------------------------------------------

    def _rev(self, kind: str, value: str) -> str:
        return f"{self._tag}:r:{kind[0]}:{value}"

    def _nb(self, sub: str) -> str:
        return f"{self._tag}:nb:{sub}"

    def _fam(self, sid: str) -> str:
        return f"{self._tag}:f:{sid}"

    def _spent(self, sid: str) -> str:
        return f"{self._tag}:sp:{sid}"

    def _kid_key(self, kid: str | None) -> str:
        """The revocation key of ``kid``; for ``None`` a key that never exists (same slot)."""
        return self._rev("kid", kid) if kid is not None else f"{self._tag}:r:k-none"

    def _index(self, sub: str) -> str:
        return f"{self._tag}:fs:{sub}"

    def _profile(self, sub: str) -> str:
        return f"{self.prefix}:p:{sub}"

    # -- revocation --------------------------------------------------------------------

    def check(self, *, jti: str, sid: str | None, sub: str, kid: str, iat: float, now: float) -> str | None:
        view = self.view
        if view.fresh(jti) and self._trusted_until > time.monotonic():
            return None  # a remembered answer, younger than the last invalidation
        self._watch()
        generation = view.generation
        keys = [self._rev("jti", jti), self._nb(sub), self._rev("kid", kid)]
        if sid is not None:
            keys.append(self._rev("sid", sid))
        with self._io() as client:
            values = client.mget(keys)
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
        self._run("revoke", [self._rev(kind, value)], [_num(until), _ms(until), self.invalidation_channel])
        self._wrote()

    def is_revoked(self, kind: RevocationKind, value: str, *, now: float) -> bool:
        with self._io() as client:
            until = client.get(self._rev(kind, value))
        return until is not None and float(until) > now

    def revoke_subject(self, sub: str, at: float, until: float) -> None:
        self._run(
            "revoke_subject",
            [self._nb(sub), self._index(sub)],
            [_num(at), _num(until), TTL_MARGIN, self.invalidation_channel, self._tag],
        )
        self._wrote()

    def not_before(self, sub: str, now: float) -> float | None:
        with self._io() as client:
            value = client.get(self._nb(sub))
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
        dropped = self._run_with_claim(
            status,
            "create_family",
            [self._fam(family.sid), self._index(family.sub), self._nb(family.sub), self._kid_key(None)],
            [
                self._tag,
                family.sid,
                _num(family.created_at),
                _ms(family.expires_at),
                max_sessions,
                _num(idle_ttl),
                _num(until),
                TTL_MARGIN,
                self.invalidation_channel,
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
        key = self._fam(sid)
        for attempt in range(_ROTATE_ATTEMPTS):
            if status is not None and attempt == 0:
                # The claim rides with the first read of the family, before anything is
                # decided: one that fails (or finds no free index) leaves the token unspent.
                h = self._claim_with_read(status, key)
                if status.idx is None:
                    return Rotation("unclaimed")
            else:
                with self._io() as client:
                    h = client.hgetall(key)
            if not h:
                return Rotation("unknown")
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
                [key, self._spent(sid), self._nb(family.sub), self._kid_key(kid)],
                [
                    self._tag,
                    sid,
                    h.get("v", ""),
                    outcome,
                    _num(until),
                    TTL_MARGIN,
                    self.invalidation_channel,
                    _ms(family.expires_at),
                    entry,
                    len(absent),
                    *absent,
                    *_pairs(fields),
                    _num(now),
                ],
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
            return Rotation("reused", family, self._first_use(sid, jti))
        raise StoreError(f"Redis store {self._where()}: family {sid!r} kept changing during rotation")

    def _first_use(self, sid: str, jti: str) -> Use | None:
        with self._io() as client:
            entries = client.lrange(self._spent(sid), 0, -1)
        for entry in entries:
            spent, at, ip = json.loads(entry)
            if spent == jti:
                return Use(float(at), ip)
        return None

    def get_family(self, sid: str) -> Family | None:
        with self._io() as client:
            h = client.hgetall(self._fam(sid))
        return _family_of(h) if h else None

    def revoke_family(self, sid: str, until: float) -> Family | None:
        flat = self._run(
            "revoke_family",
            [self._fam(sid), self._rev("sid", sid)],
            [self._tag, sid, _num(until), TTL_MARGIN, self.invalidation_channel],
        )
        self._wrote()
        h = dict(zip(flat[::2], flat[1::2], strict=True))
        return _family_of(h) if h else None

    def families(self, sub: str, *, now: float, idle_ttl: float) -> list[Family]:
        with self._io() as client:
            sids = client.zrange(self._index(sub), 0, -1)
            if not sids:
                return []
            pipe = client.pipeline(transaction=False)
            for sid in sids:
                pipe.hgetall(self._fam(sid))
            pipe.get(self._nb(sub))
            *rows, nb = pipe.execute()
            live = [f for f in (_family_of(h) for h in rows if h) if f.live(now, idle_ttl)]
            kids = sorted({f.kid for f in live if f.kid is not None})
            revoked_kids = {
                k
                for k, v in zip(kids, client.mget([self._rev("kid", k) for k in kids]) if kids else [], strict=True)
                if v is not None and float(v) > now
            }
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
        pipe.evalsha(_SHAS[name], len(keys), *keys, *args)

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
        batch: list[str] = []
        with self._io() as client:
            for key in client.scan_iter(match=f"{self.prefix}:once:*", count=1000):
                dropped += int(self._run("purge_once", [key], [_num(now)]))
            for key in client.scan_iter(match=f"{self._tag}:*", count=1000):
                batch.append(key)
                if len(batch) >= 200:
                    dropped += int(self._run("purge", batch, [self._tag, _num(now)]))
                    batch = []
            if batch:
                dropped += int(self._run("purge", batch, [self._tag, _num(now)]))
            tag = self.status_tag
            while True:
                done = int(self._run("status_purge", [f"{tag}:bits"], [tag, _num(now), 1000]))
                dropped += done
                if done < 1000:
                    break
        return dropped

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
        self._trusted_until = 0.0
        self.view.invalidate()
        if client is not None:
            try:
                client.close()
            except self._errors:
                pass

    # -- the invalidation subscriber --------------------------------------------------------

    def _watch(self) -> None:
        """Make sure this process's subscriber runs (started lazily, restarted after a fork)."""
        if self.max_delay <= 0 or self._closed:
            return
        watcher = self._watcher
        if self.view.reset_after_fork():
            self._trusted_until = 0.0
            watcher = self._watcher = None  # the parent's thread did not cross the fork
        if watcher is not None and watcher.is_alive():
            return
        with self._lock:
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = InvalidationSubscriber(self)
                self._watcher.start()

    def subscriber_connection(self, attempt: int) -> t.Any:
        """A fresh connection, outside every pool, to the server that owns the store's data.

        On a cluster: the master of the store's hash slot, where every script that can
        revoke runs and publishes -- its messages reach a subscriber there without crossing
        the cluster bus. After a lost session (``attempt`` > 0) the slot map is read again:
        the slot may have moved. For the invalidation subscriber
        (:class:`~.invalidation.SubscribedStore`)."""
        if not self.cluster:
            from redis.connection import Connection
            from redis.connection import parse_url

            kwargs = dict(parse_url(self.url))
            cls: t.Any = kwargs.pop("connection_class", Connection)
            return cls(**self._subscriber_options(kwargs))
        client = self._client()
        if attempt > 0:
            client.nodes_manager.initialize()
        node = client.get_node_from_key(self.invalidation_channel)
        return self._node_connection(node.host, node.port)

    def owner_probe(self, subscription: t.Any) -> tuple[t.Any, list[str]] | None:
        """On a cluster: a second connection to the node of ``subscription``, and a read of a
        key of the store's slot that is never written. The node answers it only while it
        owns the slot and the slot is not migrating away (``MOVED``, ``ASK``), and while it
        is part of a healthy cluster (``CLUSTERDOWN``); any of those ends the subscriber's
        session. ``None`` on one server: every answer there comes from the owner."""
        if not self.cluster:
            return None
        return self._node_connection(subscription.host, subscription.port), ["EXISTS", self._tag + ":owner-probe"]

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
            protocol=2,  # pub/sub messages as plain replies, not RESP3 push frames
        )
        return kwargs

    def forget_answers(self) -> None:
        """Forget every remembered "not revoked" answer (an invalidation message came)."""
        self.view.invalidate()

    def trust_until(self, instant: float) -> None:
        """Trust remembered answers until ``instant`` (:func:`time.monotonic`); ``0.0``: stop."""
        self._trusted_until = instant

    def watching(self) -> bool:
        """True while remembered answers are trusted (the subscription is confirmed live)."""
        return self._trusted_until > time.monotonic()
