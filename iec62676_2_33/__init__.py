"""IEC 62676-2-33 reference implementation: cloud uplink and remote management access.

The names a device vendor, a VMS vendor or a conformance engineer needs first
are importable from here; each is loaded on first use (PEP 562), so importing
the sans-IO core does not pull in zeep or Spyne.

* Device side: :class:`DeviceStore`, :func:`run_device`, :class:`UplinkAgent`.
* Cloud side: :class:`CloudListener`, :func:`run_cloud`, :class:`CloudOptions`,
  :class:`UplinkTransport` / :class:`AsyncUplinkTransport` (zeep over an uplink).
* Clients: :class:`UplinkClient`, :class:`AsyncUplinkClient`,
  :class:`ResourceQueryClient`; faults as :class:`SoapFault`.
* Domain: :class:`UplinkConfiguration`, :class:`RemoteToken`,
  :class:`TokenContext`, :class:`TokenMapper`, :class:`DeviceId`,
  :class:`Resource`, :class:`GeoLocation`, :class:`ResourceRegistry`, the filters.
* Sans-IO core: :class:`UpgradeClient`, :class:`UpgradeServer`,
  :class:`LinkMonitor`, :class:`UplinkSupervisor`, :class:`ReconnectBackoff`,
  :class:`H2ClientRole`, :class:`H2ServerRole`.
"""

from __future__ import annotations

import importlib
from typing import Any

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

#: Public name → the module that defines it (loaded on first access).
_LAZY = {
    "AsyncUplinkClient": "client",
    "UplinkClient": "client",
    "ResourceQueryClient": "query",
    "SoapFault": "soap.fault",
    "DeviceStore": "store",
    "UplinkCapabilities": "uplinkconfig",
    "UplinkConfiguration": "uplinkconfig",
    "RemoteToken": "domain.tokens",
    "TokenContext": "domain.tokens",
    "TokenMapper": "domain.tokens",
    "DeviceId": "domain.deviceid",
    "GeoLocation": "domain.resources",
    "Resource": "domain.resources",
    "ResourceRegistry": "domain.registry",
    "LocationFilter": "domain.filters",
    "PrefixFilter": "domain.filters",
    "ResourceQuery": "domain.filters",
    "ScopeFilter": "domain.filters",
    "SelectFilter": "domain.filters",
    "UpgradeClient": "sansio.upgrade",
    "UpgradeServer": "sansio.upgrade",
    "LinkMonitor": "sansio.link",
    "UplinkSupervisor": "sansio.link",
    "ReconnectBackoff": "sansio.backoff",
    "H2ClientRole": "http2.client",
    "H2ServerRole": "http2.server",
    "H2Limits": "http2.limits",
    "CloudListener": "runtime.cloud",
    "CloudOptions": "runtime.cloud_server",
    "run_cloud": "runtime.cloud_server",
    "run_device": "runtime.device",
    "UplinkAgent": "runtime.agent",
    "UplinkTransport": "runtime.zeep_transport",
    "AsyncUplinkTransport": "runtime.zeep_transport",
}

__all__ = [
    "AsyncUplinkClient",
    "AsyncUplinkTransport",
    "AuthenticationError",
    "CloudListener",
    "CloudOptions",
    "ConfigurationError",
    "DeviceId",
    "DeviceStore",
    "GeoLocation",
    "H2ClientRole",
    "H2Limits",
    "H2ServerRole",
    "Iec62676Error",
    "LinkMonitor",
    "LocalProtocolError",
    "LocationFilter",
    "PrefixFilter",
    "ProtocolError",
    "ReconnectBackoff",
    "RemoteProtocolError",
    "RemoteToken",
    "Resource",
    "ResourceQuery",
    "ResourceQueryClient",
    "ResourceRegistry",
    "SchemaError",
    "ScopeFilter",
    "SelectFilter",
    "SoapFault",
    "TokenContext",
    "TokenMapper",
    "TransportError",
    "UpgradeClient",
    "UpgradeServer",
    "UplinkAgent",
    "UplinkCapabilities",
    "UplinkClient",
    "UplinkConfiguration",
    "UplinkSupervisor",
    "UplinkTransport",
    "__version__",
    "run_cloud",
    "run_device",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
