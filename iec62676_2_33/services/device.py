"""Layer 5: the minimal ONVIF device service (GEN-2, SEC-1).

Standard ONVIF clients bootstrap through the device service before they use
any other: they read the clock (GetSystemDateAndTime, PRE_AUTH, so a client
can correct its WS-Security timestamps first), find the other services
(GetServices / GetCapabilities), then identify the device
(GetDeviceInformation, GetScopes). This module serves exactly that subset at
``/onvif/device_service``, so the same clients reach the uplink and event
services of a device directly or through the cloud proxy (GEN-2).

The answers are written with lxml element for element as ``xsd/device.xsd``
(tds) and ``xsd/device-common.xsd`` (the tt types only this service uses)
declare them; a test validates the answer to every request of a corpus (each
operation, with and without its optional arguments, forwarded headers, the
faults) against them and checks the values.

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

*Dispatch.* The operations are served by a
:class:`~..soap.dispatch.QNameDispatcher` (the checks every SOAP endpoint
makes: the operation in the table, the authored XSD, no local name in two
namespaces; then one handler per operation) with ``addressing=False``: like the
Spyne-hosted services, the answers carry no SOAP Header and a ``wsa:Action``
is not compared with the Body (WS-Addressing is optional for these operations
in ONVIF Core). Every ONVIF client calls them first and video management
systems poll them on many devices, so their cost matters: through Spyne
(serialising nested complex models, method contexts, events) the app spent,
per call with an already parsed request (best of 5 x 2000, same machine),
GetSystemDateAndTime 373 us, GetServiceCapabilities 284 us, GetDeviceInformation
159 us, GetServices without capabilities 396 us; with the handlers writing
lxml directly 45, 31, 22 and 55 us (docs/benchmarks.md, "Proxy front").
"""

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

from .. import __version__
from ..errors import ConfigurationError
from ..namespaces import SOAP_ENV, TDS, TEV, TT, TUP
from ..security.access import AccessClass
from ..security.roles import RoleBook, UserRole, UserRoleError, refuse_beyond
from ..soap.answer_xml import texts
from ..soap.dispatch import Answer, Handler, QNameDispatcher
from ..soap.envelope import SoapRequest
from ..soap.fault import SoapFault
from .forwarded import request_base_url
from .media2 import MEDIA2_PATH, TR2
from .ptz import TPTZ
from .recording import TRP, TSE
from .security import SECURITY_PATH, TAS
from .uplink import UplinkServiceContext
from .uplink import capabilities_element as uplink_capabilities

__all__ = [
    "DEVICE_INFO_FILE",
    "DEVICE_PATH",
    "EVENT_PATH",
    "OPERATION_ACCESS",
    "UPLINK_PATH",
    "DeviceDescription",
    "DeviceDescriptionFile",
    "DeviceServiceContext",
    "EventFlags",
    "ServiceEntry",
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


# --------------------------------------------------------------------------- answers (element for element as the XSD)

#: Declared on every answer envelope (the answers' elements are in these two namespaces).
_NSMAP = {"env": SOAP_ENV, "tds": TDS, "tt": TT}


def _tds(name: str) -> str:
    return f"{{{TDS}}}{name}"


def _tt(name: str) -> str:
    return f"{{{TT}}}{name}"


def device_service_capabilities(roles: RoleBook | None = None) -> etree._Element:
    """``tds:Capabilities`` (tds:DeviceServiceCapabilities): the default access policy, UsernameToken and HTTP
    Digest (SEC-1, SEC-2), user roles with ``roles`` (MaxUserRoles, PROV-4); no discovery, network or user
    configuration over ONVIF. GetServiceCapabilities answers it, GetServices embeds it."""
    caps = etree.Element(_tds("Capabilities"))
    etree.SubElement(caps, _tds("Network"), IPFilter="false", ZeroConfiguration="false", IPVersion6="false",
                     DynDNS="false")
    security = etree.SubElement(caps, _tds("Security"), DefaultAccessPolicy="true", UsernameToken="true",
                                HttpDigest="true")
    if roles is not None:
        security.set("MaxUserRoles", str(roles.max_roles))
    etree.SubElement(caps, _tds("System"), DiscoveryResolve="false", DiscoveryBye="false", RemoteDiscovery="false",
                     SystemBackup="false", SystemLogging="false", DiscoveryNotSupported="true",
                     NetworkConfigNotSupported="true", UserConfigNotSupported="true")
    return caps


def _date_time(parent: etree._Element, tag: str, moment: datetime) -> None:
    """A tt:DateTime child ``tag`` of ``parent``: Time (hour, minute, second) then Date (year, month, day)."""
    node = etree.SubElement(parent, tag)
    texts(etree.SubElement(node, _tt("Time")), (_tt("Hour"), moment.hour), (_tt("Minute"), moment.minute),
           (_tt("Second"), moment.second))
    texts(etree.SubElement(node, _tt("Date")), (_tt("Year"), moment.year), (_tt("Month"), moment.month),
           (_tt("Day"), moment.day))


def _answer(name: str) -> tuple[str, etree._Element]:
    """The ``wsa:Action`` and the empty answer element of operation ``name`` (``tds:<name>Response``)."""
    return f"{TDS}/{name}Response", etree.Element(_tds(f"{name}Response"))


def _boolean_arg(operation: etree._Element, name: str) -> bool:
    """An xs:boolean child the XSD has checked (``true``, ``false``, ``1``, ``0``)."""
    return (operation.findtext(_tds(name)) or "").strip() in ("true", "1")


# --------------------------------------------------------------------------- the operations

def _info(context: DeviceServiceContext) -> DeviceDescription:
    try:
        return context.device_info()
    except ConfigurationError as exc:
        raise SoapFault(code="Receiver", subcodes=("Action",),
                        reason=f"the device information is misconfigured: {exc}") from None


def _get_services(context: DeviceServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    include = _boolean_arg(request.operation, "IncludeCapability")
    base = request_base_url(environ)
    action, response = _answer("GetServices")
    for entry in context.live_services():
        service = texts(etree.SubElement(response, _tds("Service")), (_tds("Namespace"), entry.namespace),
                         (_tds("XAddr"), base + entry.path))
        caps = entry.capabilities() if include and entry.capabilities is not None else None
        if caps is not None:
            etree.SubElement(service, _tds("Capabilities")).append(caps)
        texts(etree.SubElement(service, _tds("Version")), (_tt("Major"), entry.version[0]),
               (_tt("Minor"), entry.version[1]))
    return Answer(action, response)


def _get_service_capabilities(context: DeviceServiceContext, _request: SoapRequest,
                              _environ: dict[str, Any]) -> Answer:
    action, response = _answer("GetServiceCapabilities")
    response.append(device_service_capabilities(context.roles))
    return Answer(action, response)


def _get_capabilities(context: DeviceServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    device, events, ptz = context.service(TDS), context.service(TEV), context.service(TPTZ)
    available = {"Device": device, "Events": events, "PTZ": ptz}
    wanted = {c.text or "" for c in request.operation.iterchildren(_tds("Category"))} or {"All"}
    if "All" in wanted:  # all that exist; only a category named explicitly must exist
        wanted = {name for name, entry in available.items() if entry is not None} | (wanted - {"All"})
    missing = sorted(name for name in wanted if available.get(name) is None)
    if missing:
        raise SoapFault(code="Receiver", subcodes=("ActionNotSupported", "NoSuchService"),
                        reason=f"this device has no {', '.join(missing)} service; it offers "
                               f"{', '.join(n for n, s in available.items() if s is not None)}")
    base = request_base_url(environ)
    action, response = _answer("GetCapabilities")
    caps = etree.SubElement(response, _tds("Capabilities"))
    if "Device" in wanted and device is not None:
        texts(etree.SubElement(caps, _tt("Device")), (_tt("XAddr"), base + device.path))
    if "Events" in wanted and events is not None:
        flags = context.events
        texts(etree.SubElement(caps, _tt("Events")), (_tt("XAddr"), base + events.path),
               (_tt("WSSubscriptionPolicySupport"), flags.ws_subscription_policy_support),
               (_tt("WSPullPointSupport"), flags.ws_pull_point_support),
               (_tt("WSPausableSubscriptionManagerInterfaceSupport"),
                flags.ws_pausable_subscription_manager_interface_support))
    if "PTZ" in wanted and ptz is not None:
        texts(etree.SubElement(caps, _tt("PTZ")), (_tt("XAddr"), base + ptz.path))
    return Answer(action, response)


def _get_system_date_and_time(context: DeviceServiceContext, _request: SoapRequest,
                              _environ: dict[str, Any]) -> Answer:
    now = context.now()
    action, response = _answer("GetSystemDateAndTime")
    sdt = texts(etree.SubElement(response, _tds("SystemDateAndTime")), (_tt("DateTimeType"), "Manual"),
                 (_tt("DaylightSavings"), False))
    texts(etree.SubElement(sdt, _tt("TimeZone")), (_tt("TZ"), "UTC0"))
    _date_time(sdt, _tt("UTCDateTime"), now)
    _date_time(sdt, _tt("LocalDateTime"), now)
    return Answer(action, response)


def _get_device_information(context: DeviceServiceContext, _request: SoapRequest,
                            _environ: dict[str, Any]) -> Answer:
    info = _info(context)
    action, response = _answer("GetDeviceInformation")
    texts(response, (_tds("Manufacturer"), info.manufacturer), (_tds("Model"), info.model),
           (_tds("FirmwareVersion"), info.firmware_version), (_tds("SerialNumber"), info.serial_number),
           (_tds("HardwareId"), info.hardware_id))
    return Answer(action, response)


def _get_scopes(context: DeviceServiceContext, _request: SoapRequest, _environ: dict[str, Any]) -> Answer:
    action, response = _answer("GetScopes")
    for item in scopes_of(_info(context)):
        texts(etree.SubElement(response, _tds("Scopes")), (_tt("ScopeDef"), "Fixed"), (_tt("ScopeItem"), item))
    return Answer(action, response)


def _get_user_roles(context: DeviceServiceContext, request: SoapRequest, _environ: dict[str, Any]) -> Answer:
    wanted = request.operation.find(_tds("UserRole"))
    with _role_faults():
        roles = _roles(context).roles(None if wanted is None else wanted.text or "")
    action, response = _answer("GetUserRoles")
    for role in roles:
        texts(etree.SubElement(response, _tds("UserRole")), (_tt("Name"), role.name),
               (_tt("Functions"), " ".join(role.functions)))
    return Answer(action, response)


def _set_user_role(context: DeviceServiceContext, request: SoapRequest, environ: dict[str, Any]) -> Answer:
    role = request.operation.find(_tds("UserRole"))
    name = "" if role is None else role.findtext(_tt("Name")) or ""
    functions = "" if role is None else role.findtext(_tt("Functions")) or ""
    book = _roles(context)
    refuse_beyond(book, environ, [f for f in functions.split() if f in book.classes], f"role {name[:64]!r}")
    with _role_faults():
        book.set(UserRole(name, tuple(functions.split())))
    return Answer(*_answer("SetUserRole"))


def _delete_user_role(context: DeviceServiceContext, request: SoapRequest, _environ: dict[str, Any]) -> Answer:
    with _role_faults():
        _roles(context).delete(request.operation.findtext(_tds("UserRole")) or "")
    return Answer(*_answer("DeleteUserRole"))


def _roles(context: DeviceServiceContext) -> RoleBook:
    if context.roles is None:
        raise SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                        reason="this device does not support user roles (no MaxUserRoles)")
    return context.roles


@contextmanager
def _role_faults() -> Iterator[None]:
    """A refused role request as its SOAP fault (the subcodes ONVIF Core lists)."""
    try:
        yield
    except UserRoleError as exc:
        raise SoapFault(code=exc.code, subcodes=exc.subcodes, reason=str(exc)) from None


#: The operations of ``tds:Device`` that a client needs to bootstrap (GEN-2), and the user roles (PROV-4).
_OPERATIONS: Mapping[tuple[str, str], Handler] = MappingProxyType({
    (TDS, "GetServices"): _get_services,
    (TDS, "GetServiceCapabilities"): _get_service_capabilities,
    (TDS, "GetCapabilities"): _get_capabilities,
    (TDS, "GetSystemDateAndTime"): _get_system_date_and_time,
    (TDS, "GetDeviceInformation"): _get_device_information,
    (TDS, "GetScopes"): _get_scopes,
    (TDS, "GetUserRoles"): _get_user_roles,
    (TDS, "SetUserRole"): _set_user_role,
    (TDS, "DeleteUserRole"): _delete_user_role,
})


def device_endpoint(context: DeviceServiceContext) -> QNameDispatcher:
    """The WSGI app of the device service (no access control: see :mod:`.app`)."""
    return QNameDispatcher(_OPERATIONS, xsd="device", context=context, nsmap=_NSMAP, addressing=False)


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

    services = [
        ServiceEntry(TDS, DEVICE_PATH, capabilities=lambda: device_service_capabilities(roles)),
        ServiceEntry(TUP, UPLINK_PATH, capabilities=lambda: uplink_capabilities(uplink)),
        ServiceEntry(TEV, EVENT_PATH, capabilities=event_capabilities),
        ServiceEntry(TR2, MEDIA2_PATH, capabilities=media2_capabilities),
        ServiceEntry(TAS, SECURITY_PATH, capabilities=security_capabilities),  # PROV-1
        *extra_services,  # PTZ, recording search, replay (ANX-B-2, ANX-B-3)
    ]
    return DeviceServiceContext(info=info, services=services, served=served, clock=clock, roles=roles)
