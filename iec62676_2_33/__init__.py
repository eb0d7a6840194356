"""IEC 62676-2-33 reference implementation: cloud uplink and remote management access.

The names application code needs are importable from here, typed (the package
ships ``py.typed``). Each is loaded on first use (PEP 562), so importing the
sans-IO core does not pull in zeep or Spyne; type checkers see the real
imports under ``TYPE_CHECKING``. Every exception derives from
:class:`Iec62676Error`.

* Start here: :func:`serve_cloud` (accept device uplinks; a :class:`Cloud`)
  and :func:`serve_device` (run a device from its data folder; a :class:`Device`),
  both async context managers; see ``docs/api.md``.
* Cloud side: :class:`CloudListener` (devices, events, requests over an uplink),
  :class:`DeviceInfo`, :class:`DeviceEvent`, the authenticators,
  :class:`UplinkTransport` / :class:`AsyncUplinkTransport` (zeep over an uplink).
* Device side: :class:`DeviceStore`, :class:`UplinkAgent`, :class:`AgentSettings`.
* Clients: :class:`UplinkClient`, :class:`AsyncUplinkClient`,
  :class:`ResourceQueryClient`; faults as :class:`SoapFault`.
* Domain: :class:`UplinkConfiguration` (checked by :func:`parse_remote_address`
  and SetUplink's rules), :class:`RemoteToken`, :class:`DeviceId`,
  :class:`Resource`, :class:`ResourceRegistry`, the filters.
* Sans-IO core: :class:`UpgradeClient`, :class:`UpgradeServer`,
  :class:`LinkMonitor`, :class:`UplinkSupervisor`, :class:`ReconnectBackoff`,
  :class:`H2ClientRole`, :class:`H2ServerRole`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .api import Cloud, Device, serve_cloud, serve_device
    from .client import AsyncUplinkClient, UplinkClient
    from .domain.deviceid import DeviceId
    from .domain.filters import LocationFilter, PrefixFilter, ResourceQuery, ScopeFilter, SelectFilter
    from .domain.registry import ResourceRegistry
    from .domain.resources import GeoLocation, Resource
    from .domain.tokens import InvalidToken, RemoteToken, TokenContext, TokenMapper
    from .http2.client import H2ClientRole
    from .http2.limits import H2Limits
    from .http2.server import H2ServerRole
    from .query import ResourceQueryClient
    from .runtime.agent import AgentSettings, UplinkAgent
    from .runtime.cloud import (
        Authenticator,
        CloudListener,
        DeviceEvent,
        DeviceInfo,
        EitherAuthenticator,
        HttpResponse,
        ListenerSettings,
        MtlsAuthenticator,
        UnknownDevice,
        UpgradeRejected,
    )
    from .runtime.cloud_server import CloudOptions, run_cloud
    from .runtime.device import run_device
    from .runtime.zeep_transport import AsyncUplinkTransport, UplinkTransport
    from .sansio.backoff import ReconnectBackoff
    from .sansio.link import LinkMonitor, UplinkSupervisor
    from .sansio.upgrade import UpgradeClient, UpgradeServer
    from .security.jwt_auth import InvalidAccessToken, TokenAuthenticator
    from .soap.fault import SoapFault
    from .store import DeviceStore
    from .uplinkconfig import UplinkCapabilities, UplinkConfigError, UplinkConfiguration, parse_remote_address

__version__ = "0.1.0"

#: Public name → the module that defines it (loaded on first access; the same as the imports above).
_LAZY = {
    "serve_cloud": "api",
    "serve_device": "api",
    "Cloud": "api",
    "Device": "api",
    "DeviceStore": "store",
    "run_device": "runtime.device",
    "UplinkAgent": "runtime.agent",
    "AgentSettings": "runtime.agent",
    "CloudListener": "runtime.cloud",
    "ListenerSettings": "runtime.cloud",
    "DeviceInfo": "runtime.cloud",
    "DeviceEvent": "runtime.cloud",
    "HttpResponse": "runtime.cloud",
    "Authenticator": "runtime.cloud",
    "MtlsAuthenticator": "runtime.cloud",
    "EitherAuthenticator": "runtime.cloud",
    "TokenAuthenticator": "security.jwt_auth",
    "UnknownDevice": "runtime.cloud",
    "UpgradeRejected": "runtime.cloud",
    "InvalidAccessToken": "security.jwt_auth",
    "CloudOptions": "runtime.cloud_server",
    "run_cloud": "runtime.cloud_server",
    "UplinkTransport": "runtime.zeep_transport",
    "AsyncUplinkTransport": "runtime.zeep_transport",
    "AsyncUplinkClient": "client",
    "UplinkClient": "client",
    "ResourceQueryClient": "query",
    "SoapFault": "soap.fault",
    "UplinkCapabilities": "uplinkconfig",
    "UplinkConfiguration": "uplinkconfig",
    "UplinkConfigError": "uplinkconfig",
    "parse_remote_address": "uplinkconfig",
    "RemoteToken": "domain.tokens",
    "TokenContext": "domain.tokens",
    "TokenMapper": "domain.tokens",
    "InvalidToken": "domain.tokens",
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
}

__all__ = [
    "AgentSettings",
    "AsyncUplinkClient",
    "AsyncUplinkTransport",
    "AuthenticationError",
    "Authenticator",
    "Cloud",
    "CloudListener",
    "CloudOptions",
    "ConfigurationError",
    "Device",
    "DeviceEvent",
    "DeviceId",
    "DeviceInfo",
    "DeviceStore",
    "EitherAuthenticator",
    "GeoLocation",
    "H2ClientRole",
    "H2Limits",
    "H2ServerRole",
    "HttpResponse",
    "Iec62676Error",
    "InvalidAccessToken",
    "InvalidToken",
    "LinkMonitor",
    "ListenerSettings",
    "LocalProtocolError",
    "LocationFilter",
    "MtlsAuthenticator",
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
    "TokenAuthenticator",
    "TokenContext",
    "TokenMapper",
    "TransportError",
    "UnknownDevice",
    "UpgradeClient",
    "UpgradeRejected",
    "UpgradeServer",
    "UplinkAgent",
    "UplinkCapabilities",
    "UplinkClient",
    "UplinkConfigError",
    "UplinkConfiguration",
    "UplinkSupervisor",
    "UplinkTransport",
    "__version__",
    "parse_remote_address",
    "run_cloud",
    "run_device",
    "serve_cloud",
    "serve_device",
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
