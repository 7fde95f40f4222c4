"""OpenID Shared Signals: Security Event Tokens (RFC 8417) in both directions.

* :mod:`.receiver` -- SETs in: verified, de-duplicated and applied as the shield's own
  revocations (pushed per RFC 8935 to :meth:`JWTShield.security_events_blueprint
  <flask_jwt_shield.JWTShield.security_events_blueprint>`, or polled).
* :mod:`.transmitter` -- SETs out: the shield's revocations as CAEP and RISC events, signed
  with the key ring, kept per stream in the store until delivered.
* :mod:`.streams` -- the transmitter's streams (SSF 1.0 §8) and what each still holds.
* :mod:`.endpoints` -- the transmitter's HTTP side: discovery, stream management, status,
  verification, RFC 8936 poll.
* :mod:`.connection` -- the receiver's side of a stream: discovery, stream setup and RFC
  8936 polling of a transmitter, from configuration only.

A package rather than one module: each of these is a job of its own, and the receiver and
the transmitter share only the event vocabulary (:mod:`.vocabulary`).
"""

from __future__ import annotations

from .endpoints import bearer_receivers as bearer_receivers
from .receiver import ACTIONS as ACTIONS
from .receiver import SESSION_FALLBACKS as SESSION_FALLBACKS
from .receiver import SET_TYPE as SET_TYPE
from .receiver import Authorizer as Authorizer
from .receiver import ReceiverSettings as ReceiverSettings
from .receiver import SecurityEventReceiver as SecurityEventReceiver
from .receiver import SessionFallback as SessionFallback
from .receiver import SETError as SETError
from .receiver import make_blueprint as make_blueprint
from .vocabulary import CAEP as CAEP
from .vocabulary import RISC as RISC
from .vocabulary import SESSION_REVOKED as SESSION_REVOKED
