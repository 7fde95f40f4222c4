"""Security events: what the shield decided, recorded three ways (and alerted on).

Each event is sent as a blinker signal (see :mod:`flask_jwt_shield.signals`), written as one
JSON line to the audit logger, and appended to the store so that operators can query it
(``shield.events()``, ``flask jwt-shield events``). With ``JWT_SHIELD_ALERT_WEBHOOK`` the
kinds in ``JWT_SHIELD_ALERT_EVENTS`` also go to the webhook sink (:mod:`.alerts`), which
sends them off the request path. Tokens are named by ``jti``, never included.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import time
import typing as t
import uuid

from flask import Flask

from .alerts import AlertSink
from .config import ShieldConfig
from .errors import StoreError
from .signals import BY_KIND
from .signals import EventKind
from .stores import Store

logger = logging.getLogger("flask_jwt_shield")

#: Every event kind, in signal order.
KINDS: tuple[EventKind, ...] = tuple(BY_KIND)


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One decision of the shield.

    ``kind`` and ``action`` stay plain strings here: this class also reads back stored
    events, which an older or newer version may have written with names this one lacks.
    Events are *recorded* through :meth:`EventRecorder.record`, which takes an
    :data:`~flask_jwt_shield.signals.EventKind`.
    """

    kind: str
    at: float
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    subject: str | None = None
    jti: str | None = None
    sid: str | None = None
    kid: str | None = None
    ip: str | None = None
    country: str | None = None
    action: str | None = None
    detail: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: t.Mapping[str, t.Any]) -> SecurityEvent:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def mask_ip(ip: str | None, mode: str) -> str | None:
    """``ip`` as ``JWT_SHIELD_EVENT_IP`` allows: whole, its /24 (IPv4) or /48 (IPv6), or none."""
    if ip is None or mode == "full":
        return ip
    if mode == "none":
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


class EventRecorder:
    """Records the events of one app."""

    def __init__(self, config: ShieldConfig, store: Store) -> None:
        self.store = store
        self.retention = config.events.event_retention
        self.ip_mode = config.events.event_ip
        self.audit = logging.getLogger(config.events.audit_logger)
        #: The webhook sink, ``None`` without ``JWT_SHIELD_ALERT_WEBHOOK``.
        self.alerts = AlertSink(config.alerts) if config.alerts is not None else None

    def record(self, app: Flask, kind: EventKind, **fields: t.Any) -> SecurityEvent:
        """Build, signal, log and store one event. Never raises for a store failure."""
        fields["ip"] = mask_ip(fields.get("ip"), self.ip_mode)
        event = SecurityEvent(kind=kind, at=time.time(), **fields)
        data = event.to_dict()
        self.audit.info(json.dumps(data, sort_keys=True, default=str))
        BY_KIND[kind].send(app, event=event)
        if self.alerts is not None:
            self.alerts.submit(app.name, data)  # only queues: the POST happens in its thread
        try:
            self.store.add_event(data, retention=self.retention)
        except StoreError as exc:
            # The audit line above already holds the event; the store is best effort.
            logger.warning("could not store security event %s (%s): %s", event.id, kind, exc)
        return event


def query(
    store: Store,
    *,
    subject: str | None = None,
    jti: str | None = None,
    sid: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[SecurityEvent]:
    """Stored security events matching every given filter, newest first."""
    rows = store.events(subject=subject, jti=jti, sid=sid, kind=kind, since=since, limit=limit)
    return [SecurityEvent.from_dict(r) for r in rows]
