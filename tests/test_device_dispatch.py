"""GEN-2, SEC-1, PROV-4: every answer of the device service, over a corpus of requests, against the authored XSD.

The device service writes its answers with lxml (no Spyne models to compare with the XSD), so the XSD
itself is the check: a corpus of requests -- every operation, with and without its optional arguments,
with forwarded headers, with WS-Addressing headers, and the faults (bad arguments, an unknown operation,
a refused role, no credentials) -- runs through the device application (access control, then the
operation table) with a pinned clock; every 200 answer validates against ``xsd/device.xsd`` and its key
values are asserted; every fault has its code chain and HTTP status. The answers carry no SOAP Header
(WS-Addressing is left out, as by every Spyne-hosted service), and the operation that runs is the one
access control parsed, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import FAULT, call_wsgi, check_dispatched, count_parses, fault_chain, soap_environ
from lxml import etree

from iec62676_2_33 import schemas
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TEV, TT, TUP
from iec62676_2_33.security.middleware import ENVIRON_UPLINK_LEVEL
from iec62676_2_33.services.app import DEVICE_PATH, DeviceApplication, build_device_app
from iec62676_2_33.services.device import OPERATION_ACCESS, SERVICE_VERSIONS, DeviceServiceContext, device_endpoint
from iec62676_2_33.services.events import EventServiceContext
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore

WSA = "http://www.w3.org/2005/08/addressing"
NS = {"env": SOAP_ENV, "tds": TDS, "tt": TT}
MOMENT = datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC).timestamp() + 0.9
ADMIN = {ENVIRON_UPLINK_LEVEL: "Administrator"}
USER = {ENVIRON_UPLINK_LEVEL: "User"}
FORWARDED = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "cloud.example:8443",
             "HTTP_X_FORWARDED_PREFIX": "/devices/cam-7"}
HERE = "http://cam.local"
THERE = "https://cloud.example:8443/devices/cam-7"
#: The services of the application built here, in GetServices order.
SERVICES = [TDS, TUP, TEV, "http://www.onvif.org/ver20/media/wsdl", "http://www.onvif.org/ver10/advancedsecurity/wsdl"]
PATHS = ["/onvif/device_service", "/onvif/uplink_service", "/onvif/event_service", "/onvif/media2_service",
         "/onvif/security_service"]
ROLE = ("<tds:SetUserRole><tds:UserRole><tt:Name>{}</tt:Name><tt:Functions>{}</tt:Functions></tds:UserRole>"
        "</tds:SetUserRole>")


def envelope(body: str, header: str = "") -> bytes:
    head = f"<env:Header>{header}</env:Header>" if header else ""
    return (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tds="{TDS}" '
            f'xmlns:tt="{TT}" xmlns:wsa="{WSA}">{head}<env:Body>{body}</env:Body></env:Envelope>').encode()


def call(app: Any, body: str, header: str = "", **environ: str) -> tuple[int, etree._Element]:
    status, root = call_wsgi(app, soap_environ(envelope(body, header), DEVICE_PATH, **environ))
    return int(status.split()[0]), root


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceApplication]:
    """The device application (access control on every route) with an event service and a pinned clock."""
    with DeviceStore(tmp_path / "d") as store, ResourceRegistry(tmp_path / "resources.sqlite") as registry:
        events = EventServiceContext.create(registry, clock=lambda: MOMENT)
        yield build_device_app(UplinkServiceContext(store=store), clock=lambda: MOMENT, events=events)


def children(element: etree._Element) -> list[tuple[str, str | None]]:
    return [(etree.QName(c).localname, c.text) for c in element]


# -- the checks of the answers ------------------------------------------------------------------

def services(base: str, include: bool) -> Callable[[etree._Element], None]:
    def check(response: etree._Element) -> None:
        listed = response.findall("tds:Service", NS)
        assert [(s.findtext("tds:Namespace", namespaces=NS), s.findtext("tds:XAddr", namespaces=NS))
                for s in listed] == [(ns, base + path) for ns, path in zip(SERVICES, PATHS, strict=True)]
        assert [(s.findtext("tds:Version/tt:Major", namespaces=NS), s.findtext("tds:Version/tt:Minor", namespaces=NS))
                for s in listed] == [tuple(str(n) for n in SERVICE_VERSIONS[ns]) for ns in SERVICES]
        embedded = [s.find("tds:Capabilities", NS) for s in listed]
        if not include:
            assert embedded == [None] * len(SERVICES)
            return
        assert [etree.QName(e[0]).text for e in embedded] == [f"{{{ns}}}Capabilities" for ns in SERVICES]
        device_caps = embedded[0][0]
        assert [etree.QName(c).localname for c in device_caps] == ["Network", "Security", "System"]
        assert device_caps.find("tds:Security", NS).get("MaxUserRoles") == "16"
        assert embedded[1][0].get("MaxUplinks") == "8"
        schemas.validate(embedded[1][0], "uplink")
        assert embedded[2][0].get("MaxPullPoints") == "32"
        assert [etree.QName(c).localname for c in listed[0]] == ["Namespace", "XAddr", "Capabilities", "Version"]
    return check


def service_capabilities(response: etree._Element) -> None:
    caps = response.find("tds:Capabilities", NS)
    assert [etree.QName(c).localname for c in caps] == ["Network", "Security", "System"]
    assert dict(caps.find("tds:Network", NS).attrib) == {
        "IPFilter": "false", "ZeroConfiguration": "false", "IPVersion6": "false", "DynDNS": "false"}
    assert dict(caps.find("tds:Security", NS).attrib) == {
        "DefaultAccessPolicy": "true", "UsernameToken": "true", "HttpDigest": "true", "MaxUserRoles": "16"}
    assert dict(caps.find("tds:System", NS).attrib) == {
        "DiscoveryResolve": "false", "DiscoveryBye": "false", "RemoteDiscovery": "false", "SystemBackup": "false",
        "SystemLogging": "false", "DiscoveryNotSupported": "true", "NetworkConfigNotSupported": "true",
        "UserConfigNotSupported": "true"}


def capabilities(base: str, device: bool, events: bool) -> Callable[[etree._Element], None]:
    def check(response: etree._Element) -> None:
        caps = response.find("tds:Capabilities", NS)
        assert [etree.QName(c).localname for c in caps] == ["Device"] * device + ["Events"] * events
        if device:
            assert children(caps.find("tt:Device", NS)) == [("XAddr", base + DEVICE_PATH)]
        if events:
            assert children(caps.find("tt:Events", NS)) == [
                ("XAddr", base + "/onvif/event_service"), ("WSSubscriptionPolicySupport", "false"),
                ("WSPullPointSupport", "true"), ("WSPausableSubscriptionManagerInterfaceSupport", "false")]
    return check


def date_and_time(response: etree._Element) -> None:
    sdt = response.find("tds:SystemDateAndTime", NS)
    assert children(sdt)[:2] == [("DateTimeType", "Manual"), ("DaylightSavings", "false")]
    assert [etree.QName(c).localname for c in sdt] == [
        "DateTimeType", "DaylightSavings", "TimeZone", "UTCDateTime", "LocalDateTime"]
    assert children(sdt.find("tt:TimeZone", NS)) == [("TZ", "UTC0")]
    for name in ("UTCDateTime", "LocalDateTime"):
        node = sdt.find(f"tt:{name}", NS)
        assert children(node.find("tt:Time", NS)) == [("Hour", "23"), ("Minute", "59"), ("Second", "58")]
        assert children(node.find("tt:Date", NS)) == [("Year", "2024"), ("Month", "2"), ("Day", "29")]


def device_information(response: etree._Element) -> None:
    info = children(response)
    assert [name for name, _ in info] == ["Manufacturer", "Model", "FirmwareVersion", "SerialNumber", "HardwareId"]
    assert info[0] == ("Manufacturer", "IEC 62676-2-33 reference implementation")
    assert info[4] == ("HardwareId", "iec62676-2-33")
    assert len(info[3][1] or "") == 12


def scopes(response: etree._Element) -> None:
    assert [children(s) for s in response] == [
        [("ScopeDef", "Fixed"), ("ScopeItem", "onvif://www.onvif.org/name/iec62676-device")],
        [("ScopeDef", "Fixed"), ("ScopeItem", "onvif://www.onvif.org/hardware/iec62676-device")]]
    assert {etree.QName(s).text for s in response} == {f"{{{TDS}}}Scopes"}


def user_roles(*expected: tuple[str, str | None]) -> Callable[[etree._Element], None]:
    def check(response: etree._Element) -> None:
        assert {etree.QName(r).text for r in response} <= {f"{{{TDS}}}UserRole"}
        assert [(r.findtext("tt:Name", namespaces=NS), r.findtext("tt:Functions", namespaces=NS) or None)
                for r in response] == list(expected)
    return check


def empty(response: etree._Element) -> None:
    assert len(response) == 0


PREDEFINED = [("onvif:Administrator", None), ("onvif:Operator", None), ("onvif:User", None)]

#: (request body, header, environ, expected status, answer tag or FAULT, check of the answer or fault chain)
CORPUS: list[tuple[str, str, dict[str, str], int, str, Any]] = [
    ("<tds:GetSystemDateAndTime/>", "", {}, 200, "GetSystemDateAndTimeResponse", date_and_time),
    ("<tds:GetSystemDateAndTime/>", "<wsa:MessageID>urn:uuid:1</wsa:MessageID>", {}, 200,
     "GetSystemDateAndTimeResponse", date_and_time),
    ("<tds:GetSystemDateAndTime/>", f"<wsa:Action>{TDS}/GetSystemDateAndTime</wsa:Action>", {}, 200,
     "GetSystemDateAndTimeResponse", date_and_time),
    # WS-Addressing is not compared with the Body here: the Body decides what runs
    ("<tds:GetSystemDateAndTime/>", f"<wsa:Action>{TDS}/GetScopes</wsa:Action>", {}, 200,
     "GetSystemDateAndTimeResponse", date_and_time),
    ("<tds:GetServiceCapabilities/>", "", {}, 200, "GetServiceCapabilitiesResponse", service_capabilities),
    ("<tds:GetServiceCapabilities/>", "", FORWARDED, 200, "GetServiceCapabilitiesResponse", service_capabilities),
    ("<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>", "", {}, 200,
     "GetServicesResponse", services(HERE, False)),
    ("<tds:GetServices><tds:IncludeCapability>0</tds:IncludeCapability></tds:GetServices>", "", {}, 200,
     "GetServicesResponse", services(HERE, False)),
    ("<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability></tds:GetServices>", "", {}, 200,
     "GetServicesResponse", services(HERE, True)),
    ("<tds:GetServices><tds:IncludeCapability>1</tds:IncludeCapability></tds:GetServices>", "", FORWARDED, 200,
     "GetServicesResponse", services(THERE, True)),
    # xs:boolean collapses white space: " true " is true
    ("<tds:GetServices><tds:IncludeCapability> true </tds:IncludeCapability></tds:GetServices>", "", {}, 200,
     "GetServicesResponse", services(HERE, True)),
    ("<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>", "",
     {"HTTP_X_FORWARDED_PREFIX": "/outer,/devices/x", "SCRIPT_NAME": "/mounted"}, 200, "GetServicesResponse",
     services(HERE + "/outer/devices/x/mounted", False)),
    ("<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>", "",
     {"HTTP_X_FORWARDED_HOST": "evil.example/path", "HTTP_X_FORWARDED_PROTO": "javascript"}, 200,
     "GetServicesResponse", services(HERE, False)),
    ("<tds:GetCapabilities/>", "", {}, 200, "GetCapabilitiesResponse", capabilities(HERE, True, True)),
    ("<tds:GetCapabilities/>", "", FORWARDED, 200, "GetCapabilitiesResponse", capabilities(THERE, True, True)),
    ("<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>", "", {}, 200,
     "GetCapabilitiesResponse", capabilities(HERE, True, True)),
    ("<tds:GetCapabilities><tds:Category>Device</tds:Category></tds:GetCapabilities>", "", {}, 200,
     "GetCapabilitiesResponse", capabilities(HERE, True, False)),
    ("<tds:GetCapabilities><tds:Category>Events</tds:Category></tds:GetCapabilities>", "", {}, 200,
     "GetCapabilitiesResponse", capabilities(HERE, False, True)),
    ("<tds:GetDeviceInformation/>", "", USER, 200, "GetDeviceInformationResponse", device_information),
    ("<tds:GetScopes/>", "", USER, 200, "GetScopesResponse", scopes),
    ("<tds:GetUserRoles/>", "", USER, 200, "GetUserRolesResponse", user_roles(*PREDEFINED)),
    ("<tds:GetUserRoles><tds:UserRole>onvif:Operator</tds:UserRole></tds:GetUserRoles>", "", USER, 200,
     "GetUserRolesResponse", user_roles(("onvif:Operator", None))),
    (ROLE.format("viewer", " tds:GetScopes  tds:GetScopes tds:GetDeviceInformation"), "", ADMIN, 200,
     "SetUserRoleResponse", empty),
    ("<tds:GetUserRoles/>", "", USER, 200, "GetUserRolesResponse",
     user_roles(*PREDEFINED, ("viewer", "tds:GetScopes tds:GetDeviceInformation"))),
    ("<tds:DeleteUserRole><tds:UserRole>viewer</tds:UserRole></tds:DeleteUserRole>", "", ADMIN, 200,
     "DeleteUserRoleResponse", empty),
    ("<tds:GetUserRoles/>", "", USER, 200, "GetUserRolesResponse", user_roles(*PREDEFINED)),
    # faults
    ("<tds:GetServices/>", "", {}, 400, FAULT, ["env:Sender", "ter:InvalidArgs"]),
    ("<tds:GetServices><tds:IncludeCapability>maybe</tds:IncludeCapability></tds:GetServices>", "", {}, 400,
     FAULT, ["env:Sender", "ter:InvalidArgs"]),
    ('<tds:GetServices><x:IncludeCapability xmlns:x="urn:x">true</x:IncludeCapability></tds:GetServices>', "", {},
     400, FAULT, ["env:Sender", "ter:InvalidArgs"]),
    ("<tds:GetServiceCapabilities>x</tds:GetServiceCapabilities>", "", {}, 400, FAULT,
     ["env:Sender", "ter:InvalidArgs"]),
    ("<tds:GetCapabilities><tds:Category>Everything</tds:Category></tds:GetCapabilities>", "", {}, 400, FAULT,
     ["env:Sender", "ter:InvalidArgs"]),
    ("<tds:GetCapabilities><tds:Category>PTZ</tds:Category></tds:GetCapabilities>", "", {}, 500, FAULT,
     ["env:Receiver", "ter:ActionNotSupported", "ter:NoSuchService"]),
    ("<tds:GetCapabilities><tds:Category>All</tds:Category><tds:Category>Media</tds:Category></tds:GetCapabilities>",
     "", {}, 500, FAULT, ["env:Receiver", "ter:ActionNotSupported", "ter:NoSuchService"]),
    ("<tds:GetDeviceInformation/>", "", {}, 401, FAULT, ["env:Sender", "ter:NotAuthorized"]),
    ("<tds:GetScopes/>", "<wsa:MessageID>m-2</wsa:MessageID>", {}, 401, FAULT, ["env:Sender", "ter:NotAuthorized"]),
    (ROLE.format("viewer", "tds:GetScopes"), "", USER, 400, FAULT, ["env:Sender", "ter:NotAuthorized"]),
    ("<tds:GetUserRoles><tds:UserRole>nobody</tds:UserRole></tds:GetUserRoles>", "", USER, 400, FAULT,
     ["env:Sender", "ter:InvalidArgVal", "ter:InvalidUserRole"]),
    ("<tds:GetUserRoles><tds:UserRole/></tds:GetUserRoles>", "", USER, 400, FAULT,
     ["env:Sender", "ter:InvalidArgVal", "ter:InvalidUserRole"]),
    (ROLE.format("onvif:Mine", "tds:GetScopes"), "", ADMIN, 400, FAULT,
     ["env:Sender", "ter:OperationProhibited", "ter:OnvifPrefix"]),
    (ROLE.format("bad name", "tds:GetScopes"), "", ADMIN, 400, FAULT,
     ["env:Sender", "ter:InvalidArgVal", "ter:InvalidUserRole"]),
    (ROLE.format("other", "tds:SetSystemDateAndTime"), "", ADMIN, 500, FAULT,
     ["env:Receiver", "ter:Action", "ter:FunctionNotImplemented"]),
    ("<tds:SetUserRole/>", "", ADMIN, 400, FAULT, ["env:Sender", "ter:InvalidArgs"]),
    ("<tds:DeleteUserRole><tds:UserRole>onvif:Operator</tds:UserRole></tds:DeleteUserRole>", "", ADMIN, 400, FAULT,
     ["env:Sender", "ter:OperationProhibited", "ter:OnvifPrefix"]),
    ("<tds:DeleteUserRole><tds:UserRole>viewer</tds:UserRole></tds:DeleteUserRole>", "", ADMIN, 400, FAULT,
     ["env:Sender", "ter:InvalidArgVal", "ter:InvalidUserRole"]),
    ("<tds:DeleteUserRole/>", "", ADMIN, 400, FAULT, ["env:Sender", "ter:InvalidArgs"]),
    ("<tds:SetSystemDateAndTime/>", "", ADMIN, 500, FAULT, ["env:Receiver", "ter:ActionNotSupported"]),
    ("<tt:GetSystemDateAndTime/>", "", {}, 500, FAULT, ["env:Receiver", "ter:ActionNotSupported"]),
]


def test_corpus_answers_validate_and_carry_the_values_gen_2_sec_1_prov_4(device: DeviceApplication) -> None:
    """GEN-2, SEC-1, PROV-4: the corpus in order (the role requests change the device's roles): every answer
    validates against the authored XSD and carries the expected values; every fault its chain and status;
    no answer carries a SOAP Header."""
    for body, header, environ, status, tag, check in CORPUS:
        got, root = call(device, body, header, **environ)
        check_dispatched(got, root, status, TDS, tag, check, lambda answer: schemas.validate(answer, "device"))


def test_misconfigured_and_edited_device_information_gen_2(device: DeviceApplication) -> None:
    """GEN-2: a broken device-info.json is a Receiver fault naming it; an edited one is answered (escaped)."""
    info_file = Path(device.store.data_dir) / "device-info.json"
    info_file.write_text('{"modell": "typo"}', encoding="utf-8")
    for operation in ("GetDeviceInformation", "GetScopes"):
        status, root = call(device, f"<tds:{operation}/>", **ADMIN)
        assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:Action"])
        assert "unknown key(s) 'modell'" in root.findtext(".//env:Reason/env:Text", namespaces=NS)
    info_file.write_text('{"name": "Gate 3 / north", "locations": ["city/x y"], "model": "Cam <5000> & co"}',
                         encoding="utf-8")
    status, root = call(device, "<tds:GetDeviceInformation/>", **ADMIN)
    answer = root.find("env:Body", NS)[0]
    schemas.validate(answer, "device")
    assert answer.findtext("tds:Model", namespaces=NS) == "Cam <5000> & co"
    status, root = call(device, "<tds:GetScopes/>", **ADMIN)
    answer = root.find("env:Body", NS)[0]
    schemas.validate(answer, "device")
    assert [s.findtext("tt:ScopeItem", namespaces=NS) for s in answer] == [
        "onvif://www.onvif.org/name/Gate%203%20%2F%20north", "onvif://www.onvif.org/hardware/Cam%20%3C5000%3E%20%26%20co",
        "onvif://www.onvif.org/location/city/x%20y"]


def test_without_roles_or_services_gen_2_prov_4() -> None:
    """GEN-2, PROV-4: a device without user roles reports no MaxUserRoles and refuses the role operations;
    a service it does not route is neither listed nor offered."""
    from iec62676_2_33.security.access import operation_access_from
    from iec62676_2_33.security.middleware import AccessControlMiddleware
    from iec62676_2_33.services.device import ServiceEntry

    context = DeviceServiceContext(services=[ServiceEntry(TDS, DEVICE_PATH), ServiceEntry(TEV, "/onvif/event_service")],
                                   served={DEVICE_PATH}, clock=lambda: MOMENT)
    app = AccessControlMiddleware(device_endpoint(context), operation_access=operation_access_from(OPERATION_ACCESS),
                                  wsse=None, digest=None)
    status, root = call(app, "<tds:GetServiceCapabilities/>", **ADMIN)
    answer = root.find("env:Body", NS)[0]
    schemas.validate(answer, "device")
    assert "MaxUserRoles" not in answer.find("tds:Capabilities/tds:Security", NS).attrib
    status, root = call(app, "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability></tds:GetServices>",
                        **ADMIN)
    answer = root.find("env:Body", NS)[0]
    schemas.validate(answer, "device")
    assert [s.findtext("tds:Namespace", namespaces=NS) for s in answer] == [TDS]
    for body in ("<tds:GetUserRoles/>", ROLE.format("x", "tds:GetScopes"),
                 "<tds:DeleteUserRole><tds:UserRole>x</tds:UserRole></tds:DeleteUserRole>"):
        status, root = call(app, body, **ADMIN)
        assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:ActionNotSupported"])
    status, root = call(app, "<tds:GetCapabilities><tds:Category>Events</tds:Category></tds:GetCapabilities>")
    assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:ActionNotSupported", "ter:NoSuchService"])
    # without access control in front the endpoint fails closed
    status, root = call(device_endpoint(context), "<tds:GetSystemDateAndTime/>")
    assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:Action"])


def test_the_operation_run_is_the_one_parsed_once_sec_1(device: DeviceApplication,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-1: a device-service request is parsed once (by the inline decision or by access control) and
    the operation that answers is the one access control decided on."""
    parses = count_parses(monkeypatch)
    for name, runs_inline in (("GetSystemDateAndTime", True), ("GetUserRoles", False)):
        parses.clear()
        env = soap_environ(envelope(f"<tds:{name}/>"), DEVICE_PATH, **USER)
        assert device.runs_inline(env) is runs_inline
        status, root = call_wsgi(device, env)
        assert status == "200 OK" and len(parses) == 1
        assert root.find("env:Body", NS)[0].tag == f"{{{TDS}}}{name}Response"
