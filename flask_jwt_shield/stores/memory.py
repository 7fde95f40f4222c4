"""``memory://``: one process's dictionaries. For tests and development."""

from __future__ import annotations

import copy
import itertools
import threading
import time
import typing as t
from collections import deque

from ..errors import StoreError
from .base import Family
from .base import RevocationKind
from .base import Rotation
from .base import StatusClaim
from .base import StatusHolder
from .base import StatusKind
from .base import Use

_PURGE_EVERY = 60.0  # seconds between sweeps of expired entries on writes
#: Default bound of :meth:`MemoryStore.remember_once` (all namespaces together).
MAX_REMEMBERED = 100_000


class MemoryStore:
    """State in this process only: lost on restart, not shared between workers."""

    def __init__(self, *, max_remembered: int = MAX_REMEMBERED) -> None:
        self._lock = threading.RLock()
        self._revoked: dict[tuple[str, str], float] = {}
        self._not_before: dict[str, tuple[float, float]] = {}
        self._families: dict[str, Family] = {}
        self._sids_of: dict[str, set[str]] = {}  # subject -> its family ids, to avoid full scans
        self._spent: dict[str, tuple[Use, float]] = {}
        self._profiles: dict[str, dict[str, t.Any]] = {}
        self._events: deque[dict[str, t.Any]] = deque()
        self._ids = itertools.count(1)
        self._last_purge = 0.0
        # "namespace\0key" -> until, in insertion order (which is nearly ``until`` order).
        # String keys, not tuples: strings are not tracked by the garbage collector, so a
        # cache of a hundred thousand entries adds nothing to its sweeps.
        self._remembered: dict[str, float] = {}
        self._floors: dict[str, float] = {}
        self._max_remembered = max_remembered
        self._status = StatusBook()
        # box -> key -> (until, value), in insertion order (oldest first).
        self._boxes: dict[str, dict[str, tuple[float, str]]] = {}

    # -- revocation (the hot path: plain dict lookups) ---------------------------------

    def check(self, *, jti: str, sid: str | None, sub: str, kid: str, iat: float, now: float) -> str | None:
        revoked = self._revoked
        if revoked:
            until = revoked.get(("jti", jti))
            if until is not None and until > now:
                return "token"
            if sid is not None:
                until = revoked.get(("sid", sid))
                if until is not None and until > now:
                    return "family"
        nb = self._not_before.get(sub)
        if nb is not None and iat <= nb[0] and nb[1] > now:
            return "subject"
        if revoked:
            until = revoked.get(("kid", kid))
            if until is not None and until > now:
                return "key"
        return None

    def revoke(self, kind: RevocationKind, value: str, until: float) -> None:
        with self._lock:
            key = (kind, value)
            self._revoked[key] = max(until, self._revoked.get(key, 0.0))
            self._maybe_purge()

    def is_revoked(self, kind: RevocationKind, value: str, *, now: float) -> bool:
        return self._revoked.get((kind, value), 0.0) > now

    def revoke_subject(self, sub: str, at: float, until: float) -> None:
        with self._lock:
            old = self._not_before.get(sub)
            if old is None or old[0] < at:
                self._not_before[sub] = (at, max(until, old[1] if old else 0.0))
            for family in self._of(sub):
                if not family.revoked and family.ended_by(at, False):
                    self._revoke_family(family.sid, until)

    def not_before(self, sub: str, now: float) -> float | None:
        nb = self._not_before.get(sub)
        return nb[0] if nb is not None and nb[1] > now else None

    # -- refresh families ---------------------------------------------------------------

    def create_family(
        self, family: Family, *, max_sessions: int, idle_ttl: float, until: float, status: StatusClaim | None = None
    ) -> list[str]:
        with self._lock:
            if status is not None:
                try:
                    status.idx = self.status_claim(status.holder, status.candidates, now=status.now)
                    status.made = True
                except StoreError:
                    pass  # the family is stored all the same; the caller claims apart
            stored = copy.deepcopy(family)
            self._families[family.sid] = stored
            self._sids_of.setdefault(family.sub, set()).add(family.sid)
            if stored.ended_by(self._not_before_at(family.sub, family.created_at), False):
                self._revoke_family(family.sid, until)  # a login racing "log out everywhere"
            live = sorted(
                (f for f in self._of(family.sub) if f.live(family.created_at, idle_ttl)),
                key=lambda f: f.created_at,
            )
            dropped = [f.sid for f in live[: max(0, len(live) - max_sessions)]]
            for sid in dropped:
                self._revoke_family(sid, until)
            return dropped

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
        with self._lock:
            if status is not None:  # first: a claim that fails leaves the token unspent
                status.idx = self.status_claim(status.holder, status.candidates, now=status.now)
                status.made = True
                if status.idx is None:
                    return Rotation("unclaimed")
            family = self._families.get(sid)
            if family is None:
                return Rotation("unknown")
            was_revoked = family.revoked
            outcome = family.spend(
                jti,
                new_jti=new_jti,
                new_iat=new_iat,
                now=now,
                idle_ttl=idle_ttl,
                grace=grace,
                ip=ip,
                country=country,
                not_before=self._not_before_at(family.sub, now),
                key_revoked=self._key_revoked(kid, now),
                new_kid=new_kid,
            )
            if outcome == "revoked" and not was_revoked:
                self._revoke_family(sid, until)
            if outcome == "rotated":
                self._spent[jti] = (Use(now, ip), family.expires_at)
            elif outcome == "reused":
                spent = self._spent.get(jti)
                self._revoke_family(sid, until)
                return Rotation("reused", copy.deepcopy(family), spent[0] if spent else None)
            return Rotation(outcome, copy.deepcopy(family))

    def get_family(self, sid: str) -> Family | None:
        family = self._families.get(sid)
        return copy.deepcopy(family) if family is not None else None

    def revoke_family(self, sid: str, until: float) -> Family | None:
        with self._lock:
            return self._revoke_family(sid, until)

    def _revoke_family(self, sid: str, until: float) -> Family | None:
        family = self._families.get(sid)
        if family is not None:
            family.revoked = True
        key = ("sid", sid)
        self._revoked[key] = max(until, self._revoked.get(key, 0.0))
        return copy.deepcopy(family) if family is not None else None

    def families(self, sub: str, *, now: float, idle_ttl: float) -> list[Family]:
        with self._lock:
            not_before = self._not_before_at(sub, now)
            live = [
                copy.deepcopy(f)
                for f in self._of(sub)
                if f.live(now, idle_ttl) and not f.ended_by(not_before, self._key_revoked(f.kid, now))
            ]
        return sorted(live, key=lambda f: f.created_at)

    def _not_before_at(self, sub: str, now: float) -> float | None:
        nb = self._not_before.get(sub)
        return nb[0] if nb is not None and nb[1] > now else None

    def _key_revoked(self, kid: str | None, now: float) -> bool:
        until = self._revoked.get(("kid", kid)) if kid is not None else None
        return until is not None and until > now

    def _of(self, sub: str) -> list[Family]:
        return [self._families[sid] for sid in self._sids_of.get(sub, ())]

    # -- detector state and events -------------------------------------------------------

    def get_profile(self, sub: str) -> dict[str, t.Any] | None:
        profile = self._profiles.get(sub)
        return copy.deepcopy(profile) if profile is not None else None

    def put_profile(self, sub: str, profile: dict[str, t.Any]) -> None:
        with self._lock:
            self._profiles[sub] = copy.deepcopy(profile)

    def add_event(self, event: dict[str, t.Any], *, retention: int) -> None:
        with self._lock:
            self._events.append(dict(event))
            while len(self._events) > retention:
                self._events.popleft()

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
        with self._lock:
            snapshot = list(self._events)
        found = []
        for event in reversed(snapshot):
            if (
                (subject is None or event.get("subject") == subject)
                and (jti is None or event.get("jti") == jti)
                and (sid is None or event.get("sid") == sid)
                and (kind is None or event.get("kind") == kind)
                and (since is None or event["at"] >= since)
            ):
                found.append(dict(event))
                if len(found) >= limit:
                    break
        return found

    # -- one-time keys (the DPoP replay cache) ---------------------------------------------

    def remember_once(self, namespace: str, key: str, until: float, *, now: float) -> bool:
        entry = f"{namespace}\x00{key}"
        with self._lock:
            remembered = self._remembered
            known = remembered.get(entry)
            if known is not None:
                if known > now:
                    return False
                del remembered[entry]  # expired: re-inserted at the end, in expiry order
            floor = self._floors.get(namespace)
            if floor is not None and until <= floor:
                return False  # it may be a key dropped to stay within the bound
            if len(remembered) >= self._max_remembered:
                self._make_room(now)
            remembered[entry] = until
            return True

    def _make_room(self, now: float) -> None:
        remembered = self._remembered
        # Expired entries cluster at the front (insertion order is nearly expiry order).
        while remembered:
            entry, until = next(iter(remembered.items()))
            if until > now:
                break
            del remembered[entry]
        if len(remembered) < self._max_remembered:
            return
        for entry in [e for e, u in remembered.items() if u <= now]:
            del remembered[entry]
        while len(remembered) >= self._max_remembered:
            entry, until = next(iter(remembered.items()))
            del remembered[entry]
            namespace = entry.partition("\x00")[0]
            self._floors[namespace] = max(until, self._floors.get(namespace, until))

    # -- the status list ---------------------------------------------------------------------

    def status_claim(self, holder: StatusHolder, candidates: t.Sequence[int], *, now: float) -> int | None:
        with self._lock:
            return self._status.claim(holder, candidates, now)

    def status_mark(self, kind: StatusKind, value: str, *, at: float | None, until: float, now: float) -> int:
        with self._lock:
            return self._status.mark(kind, value, at, until, now)

    def status_bits(self, size: int, *, version: int | None, now: float) -> tuple[int, bytes | None]:
        with self._lock:
            return self._status.bits(size, version, now)

    # -- ordered boxes (the transmitter's streams and undelivered SETs) --------------------

    def box_put(self, box: str, key: str, value: str, until: float, *, max_items: int, now: float) -> int:
        with self._lock:
            items = self._boxes.setdefault(box, {})
            items.pop(key, None)
            items[key] = (until, value)
            for expired in [k for k, (u, _) in items.items() if u <= now]:
                del items[expired]
            dropped = 0
            while len(items) > max_items:
                del items[next(iter(items))]
                dropped += 1
            return dropped

    def box_items(self, box: str, *, now: float, limit: int) -> list[tuple[str, str]]:
        with self._lock:
            items = self._boxes.get(box, {})
            return [(k, v) for k, (u, v) in items.items() if u > now][:limit]

    def box_delete(self, box: str, keys: t.Sequence[str]) -> int:
        with self._lock:
            items = self._boxes.get(box)
            if not items:
                return 0
            found = sum(items.pop(k, None) is not None for k in keys)
            if not items:
                del self._boxes[box]
            return found

    # -- maintenance ----------------------------------------------------------------------

    def _maybe_purge(self) -> None:
        now = time.time()
        if now - self._last_purge > _PURGE_EVERY:
            self._last_purge = now
            self.purge(now)

    def purge(self, now: float) -> int:
        with self._lock:
            dropped = 0
            for key in [k for k, until in self._revoked.items() if until <= now]:
                del self._revoked[key]
                dropped += 1
            for sub in [s for s, (_, until) in self._not_before.items() if until <= now]:
                del self._not_before[sub]
                dropped += 1
            for jti in [j for j, (_, until) in self._spent.items() if until <= now]:
                del self._spent[jti]
                dropped += 1
            for entry in [e for e, until in self._remembered.items() if until <= now]:
                del self._remembered[entry]
                dropped += 1
            for items in self._boxes.values():
                for item_key in [k for k, (u, _) in items.items() if u <= now]:
                    del items[item_key]
                    dropped += 1
            for ns in [n for n, floor in self._floors.items() if floor <= now]:
                del self._floors[ns]  # every key at or below it has expired: nothing to guard
            dropped += self._status.purge(now)
            for sid in [s for s, f in self._families.items() if f.expires_at <= now]:
                family = self._families.pop(sid)
                sids = self._sids_of.get(family.sub)
                if sids is not None:
                    sids.discard(sid)
                    if not sids:
                        del self._sids_of[family.sub]
                dropped += 1
            return dropped

    def close(self) -> None:
        pass


class StatusBook:
    """The status list of one process (the memory store's; the caller holds the lock).

    ``slots``: index -> its holder; ``groups``: ``(kind, value)`` -> the indices whose holder
    it names, so a revocation touches only its own tokens; ``marks``: what was revoked, for
    tokens that claim an index afterwards; ``ends``: index -> when its session ends.
    """

    def __init__(self) -> None:
        self.slots: dict[int, StatusHolder] = {}
        self.groups: dict[tuple[str, str], set[int]] = {}
        self.marks: dict[tuple[str, str], tuple[float | None, float]] = {}
        self.ends: dict[int, float] = {}
        self.data = bytearray()
        self.version = 0

    @staticmethod
    def _names(holder: StatusHolder) -> list[tuple[str, str]]:
        return [(kind, value) for kind in ("jti", "sid", "sub", "kid") if (value := getattr(holder, kind)) is not None]

    def _set(self, idx: int, status: int) -> None:
        byte, bit = idx >> 3, 1 << (idx & 7)
        if byte >= len(self.data):
            if not status:
                return
            self.data.extend(bytes(byte + 1 - len(self.data)))
        old = self.data[byte]
        new = old | bit if status else old & ~bit
        if new != old:
            self.data[byte] = new
            self.version += 1

    def _marked(self, holder: StatusHolder, now: float) -> bool:
        for kind, value in self._names(holder):
            mark = self.marks.get((kind, value))
            if mark is not None and mark[1] > now and holder.marked_by(t.cast(StatusKind, kind), value, mark[0]):
                return True
        return False

    def claim(self, holder: StatusHolder, candidates: t.Sequence[int], now: float) -> int | None:
        for idx in self.groups.get(("jti", holder.jti), ()):
            if self.slots[idx].until > now:
                return idx  # the same token again (a re-issue within the reuse grace)
        for idx in candidates:
            old = self.slots.get(idx)
            if old is not None and old.until > now:
                continue
            if old is not None:
                self._release(idx, old)
            self.slots[idx] = holder
            for name in self._names(holder):
                self.groups.setdefault(name, set()).add(idx)
            if holder.ends_at is not None and holder.ends_at < holder.until:
                self.ends[idx] = holder.ends_at
            self._set(idx, 1 if self._marked(holder, now) else 0)
            return idx
        return None

    def _release(self, idx: int, old: StatusHolder) -> None:
        for name in self._names(old):
            members = self.groups.get(name)
            if members is not None:
                members.discard(idx)
                if not members:
                    del self.groups[name]
        self.ends.pop(idx, None)

    def mark(self, kind: StatusKind, value: str, at: float | None, until: float, now: float) -> int:
        old = self.marks.get((kind, value))
        if old is not None and old[1] > now:
            at = max(at, old[0]) if at is not None and old[0] is not None else at
            until = max(until, old[1])
        self.marks[(kind, value)] = (at, until)
        before = self.version
        for idx in list(self.groups.get((kind, value), ())):
            holder = self.slots[idx]
            if holder.until > now and holder.marked_by(kind, value, at):
                self._set(idx, 1)
        return self.version - before

    def bits(self, size: int, version: int | None, now: float) -> tuple[int, bytes | None]:
        for idx, ends_at in list(self.ends.items()):
            if ends_at <= now:
                del self.ends[idx]
                if self.slots[idx].until > now:
                    self._set(idx, 1)
        if version == self.version:
            return self.version, None
        length = -(-size // 8)
        data = bytes(self.data[:length])
        return self.version, data + bytes(length - len(data))

    def purge(self, now: float) -> int:
        dropped = 0
        for idx in [i for i, holder in self.slots.items() if holder.until <= now]:
            self._release(idx, self.slots.pop(idx))
            dropped += 1
        for name in [n for n, (_, until) in self.marks.items() if until <= now]:
            del self.marks[name]
            dropped += 1
        return dropped
