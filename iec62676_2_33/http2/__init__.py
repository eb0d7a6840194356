"""Layer 3: HTTP/2 roles on h2 (sans-IO), with the limits h2 does not enforce (UPL-3, UPL-15, UPL-16).

After the ``101`` of the h2c-reverse upgrade the cloud is the HTTP/2 client
(:class:`H2ClientRole`) and the device the HTTP/2 server
(:class:`H2ServerRole`) on the one connection the device dialled. Both are
bytes-in / events-out state machines on ``h2`` that take ``now`` instead of
reading a clock; :class:`H2Limits` lists every bound they enforce. See
:mod:`iec62676_2_33.http2.role` for the theory of operation.
"""

from __future__ import annotations

from .client import H2ClientRole
from .limits import DEFAULT_LIMITS, H2Limits, Rate, RateLimiter
from .role import (
    PREFACE,
    ConnectionTerminated,
    DataReceived,
    Event,
    H2Role,
    Headers,
    PingAcknowledged,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from .server import H2ServerRole

__all__ = [
    "DEFAULT_LIMITS",
    "PREFACE",
    "ConnectionTerminated",
    "DataReceived",
    "Event",
    "H2ClientRole",
    "H2Limits",
    "H2Role",
    "H2ServerRole",
    "Headers",
    "PingAcknowledged",
    "Rate",
    "RateLimiter",
    "RemoteSettingsChanged",
    "RequestReceived",
    "ResponseReceived",
    "StreamEnded",
    "StreamReset",
    "TrailersReceived",
]
