"""Flask-JWT-Shield: what if a JWT is stolen?"""

from __future__ import annotations

from . import signals
from .config import ConfigKey
from .context import current_claims
from .context import get_claims
from .errors import AccessDenied
from .errors import ConfigurationError
from .errors import ExpiredToken
from .errors import InsufficientUserAuthentication
from .errors import InvalidClient
from .errors import InvalidDPoPProof
from .errors import InvalidGrant
from .errors import InvalidRequest
from .errors import InvalidScope
from .errors import InvalidToken
from .errors import KeysUnavailable
from .errors import MissingToken
from .errors import NotIssuedHere
from .errors import RateLimitExceeded
from .errors import RevokedToken
from .errors import ShieldError
from .errors import StoreError
from .errors import StoreUnavailable
from .errors import UnsupportedGrantType
from .errors import UseDPoPNonce
from .events import SecurityEvent
from .extension import JWTShield
from .oauth import ClientCredentials
from .sessions import Session
from .sessions import TokenPair

__all__ = [
    "AccessDenied",
    "ClientCredentials",
    "ConfigKey",
    "ConfigurationError",
    "ExpiredToken",
    "InsufficientUserAuthentication",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidToken",
    "JWTShield",
    "KeysUnavailable",
    "MissingToken",
    "RateLimitExceeded",
    "RevokedToken",
    "SecurityEvent",
    "Session",
    "ShieldError",
    "StoreError",
    "StoreUnavailable",
    "TokenPair",
    "NotIssuedHere",
    "UnsupportedGrantType",
    "UseDPoPNonce",
    "current_claims",
    "get_claims",
    "signals",
]
