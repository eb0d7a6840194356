"""Layer 5: the minimal ONVIF device service on Spyne (GEN-2, SEC-1).

Standard ONVIF clients bootstrap through the device service before they use
any other: they read the clock (GetSystemDateAndTime, PRE_AUTH, so a client
can correct its WS-Security timestamps first), find the other services
(GetServices / GetCapabilities), then identify the device
(GetDeviceInformation, GetScopes). This module serves exactly that subset at
``/onvif/device_service``, so the same clients reach the uplink and event
services of a device directly or through the cloud proxy (GEN-2).

The Spyne models mirror ``xsd/device.xsd`` (tds) and ``xsd/device-common.xsd``
(the tt types only this service uses) element for element; a test compares the
two, and every answer validates against them.

Theory of operation
-------------------
*Addresses.* Every XAddr is built from the request, as ONVIF Core asks ("the
scheme and IP part shall match the one used in the request"): scheme and host
from ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` when present and well formed,
else from the WSGI environ (``wsgi.url_scheme``, ``Host``, ``SERVER_NAME`` /
``SERVER_PORT``); then the ``X-Forwarded-Prefix`` (the cloud proxy sends
``/devices/<id>``), then ``SCRIPT_NAME``, then the service path. With
comma-separated values (a chain of proxies) the first proto and host are the
client-facing ones and the prefixes are joined in order. A malformed
forwarded value is ignored, never copied into an address. Trusting these
headers is safe here: they only shape the addresses in the answer to the very
client that sent them.

*Services.* :class:`ServiceEntry` describes one service (namespace, path,
version, capabilities provider). GetServices and GetCapabilities list only the
services whose path the device application actually routes (``served``), so
the device never advertises an address that answers 404.

*Device information* comes from :class:`DeviceDescription`: given directly, or read
from ``<data>/device-info.json`` (re-read when the file changes; missing file
= defaults). GetScopes derives the fixed ``onvif://www.onvif.org/…`` scopes
(name, hardware, location) from it; no ``Profile`` scope is claimed, since the
device conforms to no ONVIF profile.

*Clock.* GetSystemDateAndTime reads the injected ``clock`` (seconds since the
epoch, like :func:`time.time`), so tests pin the time.
"""

# Spyne declares models and ports with class-level lists:

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from lxml import etree
from spyne import AnyXml, Boolean, ComplexModel, Integer, Unicode, XmlAttribute, rpc
from spyne.util.xml import get_object_as_xml

from .. import __version__
from ..errors import ConfigurationError
from ..namespaces import TDS, TEV, TT, TUP
from ..security.access import AccessClass
from ..security.roles import RoleBook, UserRole, UserRoleError
from ..soap.fault import SoapFault
from ..soap.spyne_glue import SoapEndpoint, SoapService, service_context
from .forwarded import request_base_url
from .media2 import MEDIA2_PATH, TR2
from .ptz import TPTZ
from .recording import TRP, TSE
from .security import SECURITY_PATH, TAS
from .uplink import UplinkServiceCapabilities, UplinkServiceContext

__all__ = [
    "DEVICE_INFO_FILE",
    "DEVICE_PATH",
    "EVENT_PATH",
    "OPERATION_ACCESS",
    "UPLINK_PATH",
    "DeviceDescription",
    "DeviceDescriptionFile",
    "DeviceService",
    "DeviceServiceContext",
    "EventFlags",
    "ServiceEntry",
    "capabilities_element",
    "default_serial",
    "device_context",
    "device_endpoint",
    "device_service_capabilities",
    "request_base_url",
    "scopes_of",
]

#: Conventional paths (wire contract); the same values as in :mod:`.app`.
DEVICE_PATH = "/onvif/device_service"
UPLINK_PATH = "/onvif/uplink_service"
EVENT_PATH = "/onvif/event_service"

#: File name of the device information inside the device's data folder.
DEVICE_INFO_FILE = "device-info.json"

#: SEC-1: access class of each operation (ONVIF Core device management).
OPERATION_ACCESS = {
    (TDS, "GetServices"): AccessClass.PRE_AUTH,
    (TDS, "GetServiceCapabilities"): AccessClass.PRE_AUTH,
    (TDS, "GetCapabilities"): AccessClass.PRE_AUTH,
    (TDS, "GetSystemDateAndTime"): AccessClass.PRE_AUTH,
    (TDS, "GetDeviceInformation"): AccessClass.READ_SYSTEM,
    (TDS, "GetScopes"): AccessClass.READ_SYSTEM,
    (TDS, "GetUserRoles"): AccessClass.READ_SYSTEM,  # PROV-4 (Core, User roles)
    (TDS, "SetUserRole"): AccessClass.WRITE_SYSTEM,
    (TDS, "DeleteUserRole"): AccessClass.WRITE_SYSTEM,
}

#: The Version GetServices reports for each service (Major = year, Minor = month of
#: an ONVIF release): the release whose vocabulary the authored WSDL/XSD speaks,
#: i.e. the earliest release of the official service WSDL that holds every
#: operation, element and attribute name we author (the newest of them named).
SERVICE_VERSIONS: Mapping[str, tuple[int, int]] = MappingProxyType({
    TDS: (25, 12),  # GetUserRoles, SetUserRole, DeleteUserRole, tt:UserRole (PROV-4)
    TUP: (26, 6),  # AccessToken (24.06), UserLevel listing roles (25.12), the status string Connected (26.06)
    TEV: (22, 6),  # tev:Capabilities/@MetadataOverMQTT
    TR2: (19, 6),  # every name we use is in the 19.06 revision
    TAS: (25, 12),  # tas:Capabilities/@KeyPairGeneration
    TPTZ: (17, 6),  # every name we use is in the 17.06 revision
    TSE: (26, 6),  # tse:Capabilities/@NLSearch and @ImageSearch
    TRP: (18, 6),  # every name we use is in the 18.06 revision
})

_SCOPE_BASE = "onvif://www.onvif.org/"


# --------------------------------------------------------------------------- device information

@dataclass(frozen=True)
class DeviceDescription:
    """What GetDeviceInformation and GetScopes report.

    ``locations`` are scope paths such as ``"city/frankfurt"`` (each becomes
    ``onvif://www.onvif.org/location/city/frankfurt``). JSON form: the same
    field names, all optional, e.g. ``{"name": "Gate 3", "locations": ["city/frankfurt"]}``.
    """

    manufacturer: str = "IEC 62676-2-33 reference implementation"
    model: str = "iec62676-device"
    firmware_version: str = __version__
    serial_number: str = "0"
    hardware_id: str = "iec62676-2-33"
    name: str = "iec62676-device"
    locations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "locations":
                if isinstance(value, str) or not isinstance(value, (list, tuple)):
                    raise ConfigurationError(f"device information: locations must be a list of strings, "
                                             f"got {value!r}")
                for item in value:
                    if not isinstance(item, str) or not item.strip("/"):
                        raise ConfigurationError(f"device information: each location must be a non-empty "
                                                 f"string such as 'city/frankfurt', got {item!r}")
                object.__setattr__(self, "locations", tuple(value))
            elif not isinstance(value, str) or not value:
                raise ConfigurationError(f"device information: {f.name} must be a non-empty string, "
                                         f"got {value!r}")

    @classmethod
    def from_json(cls, obj: object, *, defaults: DeviceDescription | None = None) -> DeviceDescription:
        """Build from a JSON object; absent keys keep ``defaults``; unknown keys are an error."""
        if not isinstance(obj, dict):
            raise ConfigurationError(f"device information must be a JSON object, got {type(obj).__name__}")
        allowed = [f.name for f in fields(cls)]
        unknown = [k for k in obj if k not in allowed]
        if unknown:
            raise ConfigurationError(f"device information: unknown key(s) {', '.join(map(repr, unknown))}; "
                                     f"allowed: {', '.join(allowed)}")
        base = defaults or cls()
        values = {name: obj.get(name, getattr(base, name)) for name in allowed}
        return cls(**values)


def default_serial(seed: str) -> str:
    """A stable serial number derived from a per-device random value (the value is not revealed)."""
    return hashlib.sha256(f"iec62676 serial {seed}".encode()).hexdigest()[:12].upper()


class DeviceDescriptionFile:
    """``<data>/device-info.json``, re-read whenever it changes; a missing file gives ``defaults``.

    A malformed file raises :class:`ConfigurationError` naming the file (at
    construction, so a device does not start with a broken file, and on the
    request that first sees a broken edit).
    """

    def __init__(self, path: str | Path, defaults: DeviceDescription | None = None) -> None:
        self.path = Path(path)
        self.defaults = defaults or DeviceDescription()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._info = self.defaults
        self.get()

    def get(self) -> DeviceDescription:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._info = None, self.defaults
                return self._info
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                try:
                    obj = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ConfigurationError(f"cannot read device information {str(self.path)!r}: {exc}") from exc
                try:
                    self._info = DeviceDescription.from_json(obj, defaults=self.defaults)
                except ConfigurationError as exc:
                    raise ConfigurationError(f"{str(self.path)!r}: {exc}") from exc
                self._stamp = stamp
            return self._info


def scopes_of(info: DeviceDescription) -> list[str]:
    """The fixed discovery scopes: name, hardware (the model) and every location."""
    scopes = [f"{_SCOPE_BASE}name/{quote(info.name, safe='')}",
              f"{_SCOPE_BASE}hardware/{quote(info.model, safe='')}"]
    for location in info.locations:
        path = "/".join(quote(part, safe="") for part in location.strip("/").split("/"))
        scopes.append(f"{_SCOPE_BASE}location/{path}")
    return scopes


# --------------------------------------------------------------------------- context

CapabilitiesProvider = Callable[[], "etree._Element | None"]


@dataclass(frozen=True)
class ServiceEntry:
    """One service of the device as GetServices lists it."""

    namespace: str
    path: str
    #: The service's capabilities element (e.g. ``tup:Capabilities``) for
    #: ``IncludeCapability``; ``None`` (or a provider returning ``None``) leaves it out.
    capabilities: CapabilitiesProvider | None = None

    @property
    def version(self) -> tuple[int, int]:
        """The release whose vocabulary the service speaks (:data:`SERVICE_VERSIONS`)."""
        return SERVICE_VERSIONS[self.namespace]


@dataclass(frozen=True)
class EventFlags:
    """The event capability flags GetCapabilities reports (tt:EventCapabilities)."""

    ws_subscription_policy_support: bool = False
    ws_pull_point_support: bool = True
    ws_pausable_subscription_manager_interface_support: bool = False


def _always(_path: str) -> bool:
    return True


@dataclass
class DeviceServiceContext:
    """What the device service works with.

    ``info`` is a :class:`DeviceDescription` or a :class:`DeviceDescriptionFile`; ``served``
    tells which paths the device application routes (a container or a
    predicate; default: every listed service); ``clock`` gives seconds since
    the epoch.
    """

    info: DeviceDescription | DeviceDescriptionFile = field(default_factory=DeviceDescription)
    services: Sequence[ServiceEntry] = ()
    served: Container[str] | Callable[[str], bool] = _always
    clock: Callable[[], float] = time.time
    events: EventFlags = field(default_factory=EventFlags)
    #: PROV-4: the device's user roles (None: MaxUserRoles is not reported and the role operations fault).
    roles: RoleBook | None = None

    def device_info(self) -> DeviceDescription:
        return self.info.get() if isinstance(self.info, DeviceDescriptionFile) else self.info

    def is_served(self, path: str) -> bool:
        served = self.served
        return served(path) if callable(served) else path in served

    def live_services(self) -> list[ServiceEntry]:
        return [s for s in self.services if self.is_served(s.path)]

    def service(self, namespace: str) -> ServiceEntry | None:
        return next((s for s in self.live_services() if s.namespace == namespace), None)

    def now(self) -> datetime:
        return datetime.fromtimestamp(int(self.clock()), UTC)


# --------------------------------------------------------------------------- Spyne models (mirror the XSD)

class NetworkCapabilities(ComplexModel):  # type: ignore[misc]
    __namespace__ = TDS
    _type_info = [
        ("IPFilter", XmlAttribute(Boolean)),
        ("ZeroConfiguration", XmlAttribute(Boolean)),
        ("IPVersion6", XmlAttribute(Boolean)),
        ("DynDNS", XmlAttribute(Boolean)),
    ]


class SecurityCapabilities(ComplexModel):  # type: ignore[misc]
    __namespace__ = TDS
    _type_info = [
        ("DefaultAccessPolicy", XmlAttribute(Boolean)),
        ("UsernameToken", XmlAttribute(Boolean)),
        ("HttpDigest", XmlAttribute(Boolean)),
        ("MaxUserRoles", XmlAttribute(Integer)),
    ]


class UserRoleModel(ComplexModel):  # type: ignore[misc]
    """tt:UserRole (PROV-4)."""

    __namespace__ = TT
    __type_name__ = "UserRole"
    _type_info = [("Name", Unicode(min_occurs=1)), ("Functions", Unicode(min_occurs=1))]


class SystemCapabilities(ComplexModel):  # type: ignore[misc]
    __namespace__ = TDS
    _type_info = [
        ("DiscoveryResolve", XmlAttribute(Boolean)),
        ("DiscoveryBye", XmlAttribute(Boolean)),
        ("RemoteDiscovery", XmlAttribute(Boolean)),
        ("SystemBackup", XmlAttribute(Boolean)),
        ("SystemLogging", XmlAttribute(Boolean)),
        ("DiscoveryNotSupported", XmlAttribute(Boolean)),
        ("NetworkConfigNotSupported", XmlAttribute(Boolean)),
        ("UserConfigNotSupported", XmlAttribute(Boolean)),
    ]


class DeviceServiceCapabilities(ComplexModel):  # type: ignore[misc]
    """tds:DeviceServiceCapabilities."""

    __namespace__ = TDS
    _type_info = [
        ("Network", NetworkCapabilities.customize(min_occurs=1)),
        ("Security", SecurityCapabilities.customize(min_occurs=1)),
        ("System", SystemCapabilities.customize(min_occurs=1)),
    ]


class OnvifVersion(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Major", Integer(min_occurs=1)), ("Minor", Integer(min_occurs=1))]


class Service(ComplexModel):  # type: ignore[misc]
    """tds:Service; ``Capabilities`` wraps the service's own capabilities element."""

    __namespace__ = TDS
    _type_info = [
        ("Namespace", Unicode(min_occurs=1)),
        ("XAddr", Unicode(min_occurs=1)),
        ("Capabilities", AnyXml),
        ("Version", OnvifVersion.customize(min_occurs=1)),
    ]


class TimeZone(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("TZ", Unicode(min_occurs=1))]


class Time(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Hour", Integer(min_occurs=1)), ("Minute", Integer(min_occurs=1)),
                  ("Second", Integer(min_occurs=1))]


class Date(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Year", Integer(min_occurs=1)), ("Month", Integer(min_occurs=1)),
                  ("Day", Integer(min_occurs=1))]


class DateTime(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("Time", Time.customize(min_occurs=1)), ("Date", Date.customize(min_occurs=1))]


class SystemDateTime(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("DateTimeType", Unicode(min_occurs=1)),
        ("DaylightSavings", Boolean(min_occurs=1)),
        ("TimeZone", TimeZone),
        ("UTCDateTime", DateTime),
        ("LocalDateTime", DateTime),
    ]


class Scope(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("ScopeDef", Unicode(min_occurs=1)), ("ScopeItem", Unicode(min_occurs=1))]


class DeviceCapabilities(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [("XAddr", Unicode(min_occurs=1))]


class EventCapabilities(ComplexModel):  # type: ignore[misc]
    __namespace__ = TT
    _type_info = [
        ("XAddr", Unicode(min_occurs=1)),
        ("WSSubscriptionPolicySupport", Boolean(min_occurs=1)),
        ("WSPullPointSupport", Boolean(min_occurs=1)),
        ("WSPausableSubscriptionManagerInterfaceSupport", Boolean(min_occurs=1)),
    ]


class Capabilities(ComplexModel):  # type: ignore[misc]
    """tt:Capabilities (the backward compatible GetCapabilities answer)."""

    __namespace__ = TT
    _type_info = [("Device", DeviceCapabilities), ("Events", EventCapabilities)]


class DeviceInformation(ComplexModel):  # type: ignore[misc]
    """The content of tds:GetDeviceInformationResponse (answered bare: these are its children)."""

    __namespace__ = TDS
    __type_name__ = "GetDeviceInformationResponse"
    _type_info = [
        ("Manufacturer", Unicode(min_occurs=1)),
        ("Model", Unicode(min_occurs=1)),
        ("FirmwareVersion", Unicode(min_occurs=1)),
        ("SerialNumber", Unicode(min_occurs=1)),
        ("HardwareId", Unicode(min_occurs=1)),
    ]


def device_service_capabilities(roles: RoleBook | None = None) -> DeviceServiceCapabilities:
    """What this device implements: the default access policy, UsernameToken and HTTP Digest (SEC-1, SEC-2),
    user roles with ``roles`` (MaxUserRoles, PROV-4); no discovery, network or user configuration over ONVIF."""
    return DeviceServiceCapabilities(
        Network=NetworkCapabilities(IPFilter=False, ZeroConfiguration=False, IPVersion6=False, DynDNS=False),
        Security=SecurityCapabilities(DefaultAccessPolicy=True, UsernameToken=True, HttpDigest=True,
                                     MaxUserRoles=None if roles is None else roles.max_roles),
        System=SystemCapabilities(DiscoveryResolve=False, DiscoveryBye=False, RemoteDiscovery=False,
                                  SystemBackup=False, SystemLogging=False, DiscoveryNotSupported=True,
                                  NetworkConfigNotSupported=True, UserConfigNotSupported=True),
    )


def capabilities_element(instance: ComplexModel, namespace: str) -> etree._Element:
    """A Spyne capabilities instance as the ``<ns>:Capabilities`` element GetServices embeds."""
    element = get_object_as_xml(instance, type(instance), "Capabilities")
    element.tag = f"{{{namespace}}}Capabilities"
    return element


def _datetime(moment: datetime) -> DateTime:
    return DateTime(Time=Time(Hour=moment.hour, Minute=moment.minute, Second=moment.second),
                    Date=Date(Year=moment.year, Month=moment.month, Day=moment.day))


# --------------------------------------------------------------------------- the service

def _context(ctx: Any) -> DeviceServiceContext:
    context: DeviceServiceContext = service_context(ctx)
    return context


def _base(ctx: Any) -> str:
    return request_base_url(ctx.transport.req_env)


def _info(ctx: Any) -> DeviceDescription:
    try:
        return _context(ctx).device_info()
    except ConfigurationError as exc:
        raise SoapFault(code="Receiver", subcodes=("Action",),
                        reason=f"the device information is misconfigured: {exc}") from None


class DeviceService(SoapService):
    """The operations of ``tds:Device`` that a client needs to bootstrap (GEN-2)."""

    __service_name__ = "DeviceService"
    __port_types__ = ["Device"]

    @rpc(Boolean(min_occurs=1), _returns=Service.customize(max_occurs="unbounded"),  # type: ignore[misc]
         _in_variable_names={"include_capability": "IncludeCapability"}, _out_variable_name="Service")
    def GetServices(ctx: Any, include_capability: bool) -> list[Service]:
        context, base = _context(ctx), _base(ctx)
        out = []
        for entry in context.live_services():
            caps = entry.capabilities() if include_capability and entry.capabilities is not None else None
            out.append(Service(Namespace=entry.namespace, XAddr=base + entry.path, Capabilities=caps,
                               Version=OnvifVersion(Major=entry.version[0], Minor=entry.version[1])))
        return out

    @rpc(_returns=DeviceServiceCapabilities, _out_variable_name="Capabilities")  # type: ignore[misc]
    def GetServiceCapabilities(ctx: Any) -> DeviceServiceCapabilities:
        return device_service_capabilities(_context(ctx).roles)

    @rpc(Unicode(max_occurs="unbounded"), _returns=Capabilities,  # type: ignore[misc]
         _in_variable_names={"category": "Category"}, _out_variable_name="Capabilities")
    def GetCapabilities(ctx: Any, category: list[str] | None) -> Capabilities:
        context, base = _context(ctx), _base(ctx)
        device = context.service(TDS)
        events = context.service(TEV)
        available = {"Device": device, "Events": events}
        wanted = set(category or ["All"])
        if "All" in wanted:  # all that exist; only a category named explicitly must exist
            wanted = {name for name, entry in available.items() if entry is not None} | (wanted - {"All"})
        missing = sorted(name for name in wanted if available.get(name) is None)
        if missing:
            raise SoapFault(code="Receiver", subcodes=("ActionNotSupported", "NoSuchService"),
                            reason=f"this device has no {', '.join(missing)} service; it offers "
                                   f"{', '.join(n for n, s in available.items() if s is not None)}")
        result = Capabilities()
        if "Device" in wanted and device is not None:
            result.Device = DeviceCapabilities(XAddr=base + device.path)
        if "Events" in wanted and events is not None:
            flags = context.events
            result.Events = EventCapabilities(
                XAddr=base + events.path,
                WSSubscriptionPolicySupport=flags.ws_subscription_policy_support,
                WSPullPointSupport=flags.ws_pull_point_support,
                WSPausableSubscriptionManagerInterfaceSupport=(
                    flags.ws_pausable_subscription_manager_interface_support))
        return result

    @rpc(_returns=SystemDateTime, _out_variable_name="SystemDateAndTime")  # type: ignore[misc]
    def GetSystemDateAndTime(ctx: Any) -> SystemDateTime:
        now = _context(ctx).now()
        return SystemDateTime(DateTimeType="Manual", DaylightSavings=False, TimeZone=TimeZone(TZ="UTC0"),
                              UTCDateTime=_datetime(now), LocalDateTime=_datetime(now))

    @rpc(_returns=DeviceInformation, _body_style="bare")  # type: ignore[misc]
    def GetDeviceInformation(ctx: Any) -> DeviceInformation:
        info = _info(ctx)
        return DeviceInformation(Manufacturer=info.manufacturer, Model=info.model,
                                 FirmwareVersion=info.firmware_version, SerialNumber=info.serial_number,
                                 HardwareId=info.hardware_id)

    @rpc(_returns=Scope.customize(max_occurs="unbounded"), _out_variable_name="Scopes")  # type: ignore[misc]
    def GetScopes(ctx: Any) -> list[Scope]:
        return [Scope(ScopeDef="Fixed", ScopeItem=item) for item in scopes_of(_info(ctx))]

    @rpc(Unicode, _returns=UserRoleModel.customize(max_occurs="unbounded"),  # type: ignore[misc]
         _in_variable_names={"name": "UserRole"}, _out_variable_name="UserRole")
    def GetUserRoles(ctx: Any, name: str | None) -> list[UserRoleModel]:
        with _role_faults():
            roles = _roles(ctx).roles(name)
        return [UserRoleModel(Name=r.name, Functions=" ".join(r.functions)) for r in roles]

    @rpc(UserRoleModel.customize(min_occurs=1), _returns=None,  # type: ignore[misc]
         _in_variable_names={"role": "UserRole"})
    def SetUserRole(ctx: Any, role: UserRoleModel) -> None:
        with _role_faults():
            _roles(ctx).set(UserRole(role.Name or "", tuple((role.Functions or "").split())))

    @rpc(Unicode(min_occurs=1), _returns=None, _in_variable_names={"name": "UserRole"})  # type: ignore[misc]
    def DeleteUserRole(ctx: Any, name: str) -> None:
        with _role_faults():
            _roles(ctx).delete(name)


def _roles(ctx: Any) -> RoleBook:
    roles = _context(ctx).roles
    if roles is None:
        raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                        reason="this device does not support user roles (no MaxUserRoles)")
    return roles


@contextmanager
def _role_faults() -> Iterator[None]:
    """A refused role request as its SOAP fault (the subcodes ONVIF Core lists)."""
    try:
        yield
    except UserRoleError as exc:
        raise SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc)) from None


def device_endpoint(context: DeviceServiceContext) -> SoapEndpoint:
    """The WSGI app of the device service (no access control: see :mod:`.app`)."""
    return SoapEndpoint([DeviceService], TDS, xsd="device", context=context, name="DeviceService")


def device_context(uplink: UplinkServiceContext, *, clock: Callable[[], float] = time.time,
                   served: Container[str] | Callable[[str], bool] = _always,
                   info: DeviceDescription | DeviceDescriptionFile | None = None,
                   event_capabilities: CapabilitiesProvider | None = None,
                   media2_capabilities: CapabilitiesProvider | None = None,
                   security_capabilities: CapabilitiesProvider | None = None,
                   extra_services: Sequence[ServiceEntry] = (), roles: RoleBook | None = None) -> DeviceServiceContext:
    """The device service of a device around an :class:`~.uplink.UplinkServiceContext`.

    Device information: ``info`` or ``<data>/device-info.json`` (defaults with
    a serial number derived from the store). Services: device, uplink (with
    its capabilities), event (capabilities from ``event_capabilities``) and Media2
    (from ``media2_capabilities``), then ``extra_services``.
    """
    store = uplink.store
    if info is None:
        info = DeviceDescriptionFile(Path(store.data_dir) / DEVICE_INFO_FILE,
                              DeviceDescription(serial_number=default_serial(store.device_salt())))

    def uplink_caps() -> etree._Element:
        caps = uplink.current_capabilities()
        return capabilities_element(UplinkServiceCapabilities(
            MaxUplinks=caps.max_uplinks, Protocols=" ".join(caps.protocols),
            AuthorizationModes=" ".join(caps.authorization_modes),
            StreamingOverUplink=caps.streaming_over_uplink), TUP)

    services = [
        ServiceEntry(TDS, DEVICE_PATH,
                     capabilities=lambda: capabilities_element(device_service_capabilities(roles), TDS)),
        ServiceEntry(TUP, UPLINK_PATH, capabilities=uplink_caps),
        ServiceEntry(TEV, EVENT_PATH, capabilities=event_capabilities),
        ServiceEntry(TR2, MEDIA2_PATH, capabilities=media2_capabilities),
        ServiceEntry(TAS, SECURITY_PATH, capabilities=security_capabilities),  # PROV-1
        *extra_services,  # PTZ, recording search, replay (ANX-B-2, ANX-B-3)
    ]
    return DeviceServiceContext(info=info, services=services, served=served, clock=clock, roles=roles)
