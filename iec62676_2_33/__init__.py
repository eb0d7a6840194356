"""IEC 62676-2-33 reference implementation: cloud uplink and remote management access."""

from __future__ import annotations

from .errors import (
    AuthenticationError,
    ConfigurationError,
    Iec62676Error,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    SchemaError,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "Iec62676Error",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SchemaError",
    "TransportError",
    "__version__",
]
