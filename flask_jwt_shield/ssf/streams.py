"""The transmitter's streams (OpenID SSF 1.0 §8) and the SETs each still holds.

Both live in the store (:meth:`~flask_jwt_shield.stores.base.Store.box_put`), so every
process of the issuing app sees the same streams, and a SET that could not be pushed waits
there, in order, until the receiver polls it or a later push delivers it:

* the streams: one box, at most ``JWT_SHIELD_SSF_MAX_STREAMS``;
* per stream, its undelivered SETs by ``jti``: at most ``JWT_SHIELD_SSF_MAX_PENDING``, each
  kept ``JWT_SHIELD_SSF_RETENTION`` seconds. Beyond the count the oldest SET is dropped, and
  the drop is counted (:attr:`StreamStore.dropped`) and logged, never silent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import typing as t

from ..config import SSFSettings
from ..stores import Store
from .vocabulary import POLL
from .vocabulary import PUSH

logger = logging.getLogger("flask_jwt_shield")

STREAMS_BOX = "ssf-streams"
#: A stream lives until deleted: its box entry's expiry is this far ahead.
_FOREVER = 100 * 365 * 86400.0
STATUSES = ("enabled", "paused", "disabled")
METHODS = (PUSH, POLL)


def sets_box(stream_id: str) -> str:
    return f"ssf-sets:{stream_id}"


@dataclasses.dataclass(slots=True)
class Stream:
    """One receiver's stream. ``owner`` is the receiver as the app's ``authorize``
    callback named it; every management call of another receiver answers 404."""

    stream_id: str
    owner: str
    aud: str
    method: str
    endpoint_url: str | None = None
    #: Push: the ``Authorization`` value sent with each SET (never shown again).
    authorization_header: str | None = None
    events_requested: list[str] | None = None
    description: str | None = None
    status: str = "enabled"
    reason: str | None = None
    created_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Stream:
        data = json.loads(text)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def delivered(self, supported: t.Sequence[str]) -> list[str]:
        """SSF 1.0 §8.1.1 ``events_delivered``: what was asked and is supported; everything
        supported when nothing was asked."""
        if self.events_requested is None:
            return list(supported)
        return [e for e in supported if e in self.events_requested]


class StreamStore:
    """Streams and their undelivered SETs, through the app's store. Raises
    :class:`~flask_jwt_shield.errors.StoreError` when the store cannot be reached."""

    def __init__(self, store: Store, settings: SSFSettings) -> None:
        self.store = store
        self.settings = settings
        #: Undelivered SETs dropped by this process because a stream held
        #: ``JWT_SHIELD_SSF_MAX_PENDING`` already.
        self.dropped = 0
        self._lock = threading.Lock()

    # -- streams ---------------------------------------------------------------------------

    def all(self) -> list[Stream]:
        now = time.time()
        items = self.store.box_items(STREAMS_BOX, now=now, limit=self.settings.ssf_max_streams + 1)
        streams = []
        for key, value in items:
            try:
                streams.append(Stream.from_json(value))
            except (ValueError, TypeError):  # written by another version: skipped, not fatal
                logger.warning("SSF stream %s is unreadable and skipped", key)
        return streams

    def get(self, stream_id: str) -> Stream | None:
        return next((s for s in self.all() if s.stream_id == stream_id), None)

    def put(self, stream: Stream) -> None:
        now = time.time()
        self.store.box_put(
            STREAMS_BOX,
            stream.stream_id,
            stream.to_json(),
            now + _FOREVER,
            max_items=self.settings.ssf_max_streams,
            now=now,
        )

    def delete(self, stream_id: str) -> bool:
        found = self.store.box_delete(STREAMS_BOX, [stream_id]) > 0
        box = sets_box(stream_id)
        while True:
            keys = [k for k, _ in self.store.box_items(box, now=0.0, limit=1000)]
            if not keys:
                return found
            self.store.box_delete(box, keys)

    # -- undelivered SETs ------------------------------------------------------------------

    def hold(self, stream_id: str, jti: str, token: str) -> None:
        """Keep ``token`` until it is delivered, acknowledged or too old."""
        now = time.time()
        dropped = self.store.box_put(
            sets_box(stream_id),
            jti,
            token,
            now + self.settings.ssf_retention,
            max_items=self.settings.ssf_max_pending,
            now=now,
        )
        if dropped:
            with self._lock:
                self.dropped += dropped
            logger.warning(
                "SSF stream %s holds %d undelivered SETs already: dropped the %d oldest (%d in this process so far);"
                " its receiver has not polled or accepted pushes for a while",
                stream_id,
                self.settings.ssf_max_pending,
                dropped,
                self.dropped,
            )

    def pending(self, stream_id: str, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` undelivered ``(jti, SET)``, oldest first."""
        return self.store.box_items(sets_box(stream_id), now=time.time(), limit=limit)

    def forget(self, stream_id: str, jtis: t.Sequence[str]) -> int:
        """Delivered or acknowledged: no longer kept. Returns how many were held."""
        return self.store.box_delete(sets_box(stream_id), list(jtis))
