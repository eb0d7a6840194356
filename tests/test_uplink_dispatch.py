"""CFG-1 … CFG-6, PROV-5, SEC-1: every answer of the uplink service, over a corpus of requests, against the XSD.

The uplink service writes its answers with lxml (no Spyne models to compare with the XSD), so the XSD itself
is the check: a corpus of requests -- every operation, with and without its optional items, extension
content of the own and of foreign namespaces, the faults (malformed and unsupported addresses, missing,
ambiguous or unknown references, bad user levels, an extension over budget, MaxUplinks, an unknown address,
schema violations, an unknown operation, missing rights) -- runs in order through the device application
(access control, then the operation table); every 200 answer validates against ``xsd/uplink.xsd`` (its
schema view, PROV-5) and its key values are asserted; every fault has its code chain and HTTP status. The
answers carry no SOAP Header, faults no ``wsa:RelatesTo``; GetServices embeds the same ``tup:Capabilities``;
the operation that runs is the one access control parsed, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import seed_device
from helpers import FAULT, call_wsgi, check_dispatched, count_parses, fault_chain, soap_environ
from lxml import etree

from iec62676_2_33 import schemas
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TUP
from iec62676_2_33.security.access import operation_access_from
from iec62676_2_33.security.middleware import ENVIRON_UPLINK_LEVEL, AccessControlMiddleware
from iec62676_2_33.services.app import UPLINK_PATH, DeviceApplication, build_device_app
from iec62676_2_33.services.uplink import OPERATION_ACCESS, UplinkServiceContext, schema_view, uplink_endpoint
from iec62676_2_33.store import AuthServerConfig, DeviceStore
from iec62676_2_33.uplinkconfig import UplinkCapabilities

WSA = "http://www.w3.org/2005/08/addressing"
V = "urn:vendor:uplink"
NS = {"env": SOAP_ENV, "tup": TUP, "tds": TDS, "wsa": WSA, "v": V}
ADMIN = {ENVIRON_UPLINK_LEVEL: "Administrator"}
OPERATOR = {ENVIRON_UPLINK_LEVEL: "Operator"}
USER = {ENVIRON_UPLINK_LEVEL: "User"}
CAPABILITIES = UplinkCapabilities(max_uplinks=4, protocols=("https", "wss"), authorization_modes=("mTLS", "AccessToken"))
#: The runtime's live status of one address (the others are Offline without Error).
LIVE = ("https://b.example/x", "Connecting", "TLS <handshake> failed & retried")
CERT = "<tup:CertificateID>cert-1</tup:CertificateID>"
VENDOR = f'<v:Tuning xmlns:v="{V}" v:mode="eco"><v:Rate>5</v:Rate></v:Tuning>'


def set_uplink(address: str, rest: str = f"{CERT}<tup:UserLevel>Operator</tup:UserLevel>") -> str:
    return (f"<tup:SetUplink><tup:Configuration><tup:RemoteAddress>{address}</tup:RemoteAddress>{rest}"
            "</tup:Configuration></tup:SetUplink>")


def delete_uplink(address: str) -> str:
    return f"<tup:DeleteUplink><tup:RemoteAddress>{address}</tup:RemoteAddress></tup:DeleteUplink>"


def envelope(body: str, header: str = "") -> bytes:
    head = f"<env:Header>{header}</env:Header>" if header else ""
    return (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tup="{TUP}" '
            f'xmlns:tds="{TDS}" xmlns:wsa="{WSA}">{head}<env:Body>{body}</env:Body></env:Envelope>').encode()


def call(app: Any, body: str, header: str = "", path: str = UPLINK_PATH, **extra: str) -> tuple[int, etree._Element]:
    status, root = call_wsgi(app, soap_environ(envelope(body, header), path, **extra))
    return int(status.split()[0]), root


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceApplication]:
    """The device application with cert-1, policy-1, authorization server as-1 and a live status for b.example."""
    data = tmp_path / "d"
    seed_device(data)
    with DeviceStore(data) as store:
        store.put_auth_server(AuthServerConfig(token="as-1", url="https://as.example/token", client_id="c",
                                               client_secret="s"))

        def status(address: str) -> tuple[str, str | None]:
            return LIVE[1:] if address == LIVE[0] else ("Offline", None)

        yield build_device_app(UplinkServiceContext(store=store, capabilities=CAPABILITIES, status=status),
                               clock=lambda: 1_700_000_000.0)


# -- the checks of the answers ------------------------------------------------------------------

def capabilities(response: etree._Element) -> None:
    [caps] = response
    assert caps.tag == f"{{{TUP}}}Capabilities" and len(caps) == 0
    assert dict(caps.attrib) == {"MaxUplinks": "4", "Protocols": "https wss", "AuthorizationModes": "mTLS AccessToken",
                                 "StreamingOverUplink": "false"}


def shape(element: etree._Element) -> tuple[object, ...]:
    """An element as names, attributes, text and children (prefixes are the serialiser's choice)."""
    return (etree.QName(element).localname, dict(element.attrib), element.text or "",
            [shape(child) for child in element])


def uplinks(*expected: list[tuple[object, ...]]) -> Callable[[etree._Element], None]:
    """GetUplinks lists exactly ``expected`` configurations, each as the shapes of its children in order."""
    def check(response: etree._Element) -> None:
        assert {c.tag for c in response} <= {f"{{{TUP}}}Configuration"}
        assert [[shape(child) for child in cfg] for cfg in response] == list(expected)
    return check


def configuration(address: str, levels: str = "Operator", status: str = "Offline", *,
                  certificate: str | None = "cert-1", policy: str | None = None, server: str | None = None,
                  error: str | None = None, extension: tuple[tuple[object, ...], ...] = ()) -> list[tuple[object, ...]]:
    items = [("RemoteAddress", address), ("CertificateID", certificate), ("UserLevel", levels), ("Status", status),
             ("CertPathValidationPolicyID", policy), ("AuthorizationServer", server), ("Error", error)]
    return [(name, {}, value, []) for name, value in items if value is not None] + list(extension)


def empty(response: etree._Element) -> None:
    assert len(response) == 0 and not (response.text or "").strip()


SENDER_ARGS = ["env:Sender", "ter:InvalidArgs"]
BAD_ADDRESS = ["env:Sender", "ter:InvalidArgVal", "ter:RemoteAddress"]
BAD_VALUE = ["env:Sender", "ter:InvalidArgVal"]
REFUSED = ["env:Sender", "ter:NotAuthorized"]
FUTURE: tuple[object, ...] = ("FutureThing", {}, "x", [])
TUNING: tuple[object, ...] = ("Tuning", {f"{{{V}}}mode": "eco"}, "", [("Rate", {}, "5", [])])
A = configuration("https://a.example/up")
B = configuration("https://b.example/x", "User Operator", "Connecting", policy="policy-1", error=LIVE[2])
C = configuration("wss://c.example/up", "User", certificate=None, server="as-1", extension=(FUTURE, TUNING))

#: (request body, header, environ, expected status, answer tag or FAULT, check of the answer or fault chain)
CORPUS: list[tuple[str, str, dict[str, str], int, str, Any]] = [
    ("<tup:GetServiceCapabilities/>", "", {}, 200, "GetServiceCapabilitiesResponse", capabilities),
    ("<tup:GetServiceCapabilities/>", "<wsa:MessageID>urn:uuid:1</wsa:MessageID>", {}, 200,
     "GetServiceCapabilitiesResponse", capabilities),
    # WS-Addressing is not compared with the Body here: the Body decides what runs
    ("<tup:GetServiceCapabilities/>", f"<wsa:Action>{TUP}/GetUplinks</wsa:Action>", {}, 200,
     "GetServiceCapabilitiesResponse", capabilities),
    ("<tup:GetUplinks/>", "", USER, 200, "GetUplinksResponse", uplinks()),
    (set_uplink("https://a.example/up"), "", ADMIN, 200, "SetUplinkResponse", empty),
    # the address is normalised; Status and Error of a request are the device's, not read
    (set_uplink(" https://b.example/x ", f"{CERT}<tup:UserLevel> User   Operator </tup:UserLevel>"
                "<tup:Status>Connected</tup:Status><tup:CertPathValidationPolicyID>policy-1"
                "</tup:CertPathValidationPolicyID><tup:Error>e</tup:Error>"), "", ADMIN, 200, "SetUplinkResponse", empty),
    # PROV-5: an own-namespace element and a vendor element after Error are kept
    (set_uplink("wss://c.example/up", "<tup:UserLevel>User</tup:UserLevel><tup:AuthorizationServer>as-1"
                f"</tup:AuthorizationServer><tup:FutureThing>x</tup:FutureThing>{VENDOR}"), "", ADMIN, 200,
     "SetUplinkResponse", empty),
    ("<tup:GetUplinks/>", "", USER, 200, "GetUplinksResponse", uplinks(A, B, C)),
    # the same address again replaces the configuration
    (set_uplink("https://a.example/up", f"{CERT}<tup:UserLevel>Administrator</tup:UserLevel>"), "", ADMIN, 200,
     "SetUplinkResponse", empty),
    (set_uplink("https://d.example/", "<tup:CertificateID></tup:CertificateID><tup:UserLevel>User"
                "</tup:UserLevel><tup:AuthorizationServer>as-1</tup:AuthorizationServer>"), "", ADMIN, 200,
     "SetUplinkResponse", empty),
    ("<tup:GetUplinks/>", "", USER, 200, "GetUplinksResponse",
     uplinks(configuration("https://a.example/up", "Administrator"), B, C,
             configuration("https://d.example/", "User", certificate=None, server="as-1"))),
    # CFG-3 faults
    (set_uplink("https://e.example/"), "", {}, 401, FAULT, REFUSED),
    (set_uplink("https://e.example/"), "", OPERATOR, 400, FAULT, REFUSED),
    (set_uplink("https://e.example/"), "", ADMIN, 500, FAULT, ["env:Receiver", "ter:Action", "ter:MaxUplinks"]),
    (delete_uplink("https://d.example/"), "", ADMIN, 200, "DeleteUplinkResponse", empty),
    (set_uplink("ftp://e.example/"), "", ADMIN, 400, FAULT, SENDER_ARGS + ["ter:ProtocolNotSupported"]),
    (set_uplink("not a uri"), "", ADMIN, 400, FAULT, BAD_ADDRESS),
    (set_uplink(""), "", ADMIN, 400, FAULT, BAD_ADDRESS),
    (set_uplink("https://"), "", ADMIN, 400, FAULT, BAD_ADDRESS),
    (set_uplink("https://e.example/?access_token=abc"), "", ADMIN, 400, FAULT, BAD_ADDRESS),
    (set_uplink("https://e.example/?access_token="), "", ADMIN, 400, FAULT, BAD_ADDRESS),
    (set_uplink("https://" + "x" * 2100 + ".example/"), "", ADMIN, 400, FAULT, BAD_ADDRESS),
    (set_uplink("https://e.example/", "<tup:UserLevel>User</tup:UserLevel>"), "", ADMIN, 400, FAULT,
     SENDER_ARGS + ["ter:MissingAuthentication"]),
    (set_uplink("https://e.example/", f"{CERT}<tup:UserLevel>User</tup:UserLevel><tup:AuthorizationServer>as-1"
                "</tup:AuthorizationServer>"), "", ADMIN, 400, FAULT, SENDER_ARGS + ["ter:AmbiguousAuthentication"]),
    (set_uplink("https://e.example/", "<tup:CertificateID> cert-1 </tup:CertificateID><tup:UserLevel>User"
                "</tup:UserLevel>"), "", ADMIN, 400, FAULT, BAD_VALUE + ["ter:CertificateID"]),
    (set_uplink("https://e.example/", "<tup:UserLevel>User</tup:UserLevel><tup:AuthorizationServer>nope"
                "</tup:AuthorizationServer>"), "", ADMIN, 400, FAULT,
     BAD_VALUE + ["ter:AuthorizationServerConfigurationToken"]),
    (set_uplink("https://e.example/", f"{CERT}<tup:UserLevel>User</tup:UserLevel><tup:CertPathValidationPolicyID>"
                "nope</tup:CertPathValidationPolicyID>"), "", ADMIN, 400, FAULT,
     BAD_VALUE + ["ter:CertPathValidationPolicyID"]),
    (set_uplink("https://e.example/", f"{CERT}<tup:UserLevel>Boss</tup:UserLevel>"), "", ADMIN, 400, FAULT, BAD_VALUE),
    (set_uplink("https://e.example/", f"{CERT}<tup:UserLevel>User User</tup:UserLevel>"), "", ADMIN, 400, FAULT,
     BAD_VALUE),
    (set_uplink("https://e.example/", f"{CERT}<tup:UserLevel></tup:UserLevel>"), "", ADMIN, 400, FAULT, BAD_VALUE),
    (set_uplink("https://e.example/", f"{CERT}<tup:UserLevel>User</tup:UserLevel><tup:F>{'y' * 5000}</tup:F>"), "",
     ADMIN, 400, FAULT, BAD_VALUE),
    # schema violations: missing or misplaced items, a known name repeated after Error, two namespaces
    (set_uplink("https://e.example/", CERT), "", ADMIN, 400, FAULT, SENDER_ARGS),
    (("<tup:SetUplink><tup:Configuration><tup:UserLevel>User</tup:UserLevel><tup:RemoteAddress>https://e.example/"
      f"</tup:RemoteAddress>{CERT}</tup:Configuration></tup:SetUplink>"), "", ADMIN, 400, FAULT, SENDER_ARGS),
    (set_uplink("https://e.example/", f"{CERT}<tup:UserLevel>User</tup:UserLevel><tup:Future>1</tup:Future>"
                "<tup:UserLevel>User</tup:UserLevel>"), "", ADMIN, 400, FAULT, SENDER_ARGS),
    (set_uplink("https://e.example/", f'{CERT}<tup:UserLevel>User</tup:UserLevel><x:UserLevel xmlns:x="urn:x">'
                "Administrator</x:UserLevel>"), "", ADMIN, 400, FAULT, SENDER_ARGS),
    ("<tup:SetUplink/>", "", ADMIN, 400, FAULT, SENDER_ARGS),
    ("<tup:SetUplink><tup:Configuration/></tup:SetUplink>", "", ADMIN, 400, FAULT, SENDER_ARGS),
    # CFG-4
    (delete_uplink("https://a.example/up"), "", OPERATOR, 400, FAULT, REFUSED),
    (delete_uplink(" https://b.example/x "), "", ADMIN, 200, "DeleteUplinkResponse", empty),
    (delete_uplink("https://b.example/x"), "", ADMIN, 400, FAULT, BAD_VALUE + ["ter:Address"]),
    (delete_uplink(""), "", ADMIN, 400, FAULT, BAD_VALUE + ["ter:Address"]),
    ("<tup:DeleteUplink/>", "", ADMIN, 400, FAULT, SENDER_ARGS),
    ('<tup:DeleteUplink><x:RemoteAddress xmlns:x="urn:x">https://a/</x:RemoteAddress></tup:DeleteUplink>', "",
     ADMIN, 400, FAULT, SENDER_ARGS),
    ("<tup:GetUplinks/>", "", USER, 200, "GetUplinksResponse",
     uplinks(configuration("https://a.example/up", "Administrator"), C)),
    # the rest
    ("<tup:GetServiceCapabilities>x</tup:GetServiceCapabilities>", "", {}, 400, FAULT, SENDER_ARGS),
    ("<tup:GetUplinks/>", "", {}, 401, FAULT, REFUSED),
    ("<tup:GetUplinks/>", "<wsa:MessageID>m-1</wsa:MessageID>", {}, 401, FAULT, REFUSED),
    ("<tup:Frobnicate/>", "", ADMIN, 500, FAULT, ["env:Receiver", "ter:ActionNotSupported"]),
    ("<tds:GetUplinks/>", "", ADMIN, 500, FAULT, ["env:Receiver", "ter:ActionNotSupported"]),
]


def test_corpus_answers_validate_and_carry_the_values_cfg_1_to_cfg_5_prov_5(device: DeviceApplication) -> None:
    """CFG-1 … CFG-5, PROV-5, SEC-1: the corpus in order (SetUplink and DeleteUplink change the device's
    uplinks): every answer validates against the authored XSD and carries the expected values; every fault
    its chain and status; no answer carries a SOAP Header, no fault a RelatesTo."""
    for body, header, environ, status, tag, check in CORPUS:
        got, root = call(device, body, header, **environ)
        check_dispatched(got, root, status, TUP, tag, check,
                         lambda answer: schemas.validate(schema_view(answer), "uplink"))


def test_get_services_embeds_the_capabilities_cfg_5(device: DeviceApplication) -> None:
    """CFG-5: GetServices with IncludeCapability embeds the uplink service's own tup:Capabilities."""
    status, root = call(device, "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability></tds:GetServices>",
                        path="/onvif/device_service")
    assert status == 200
    [service] = [s for s in root.iterfind("env:Body/tds:GetServicesResponse/tds:Service", NS)
                 if s.findtext("tds:Namespace", namespaces=NS) == TUP]
    embedded = service.find("tds:Capabilities", NS)
    schemas.validate(embedded[0], "uplink")
    capabilities(embedded)


def test_extension_keeps_its_qname_values_prov_5(device: DeviceApplication) -> None:
    """PROV-5: an extension whose QName value names the own namespace reads back with that prefix bound."""
    status, _ = call(device, set_uplink("https://q.example/", f"{CERT}<tup:UserLevel>User</tup:UserLevel>"
                                        f'<v:Q xmlns:v="{V}">tup:Thing</v:Q>'), **ADMIN)
    assert status == 200
    status, root = call(device, "<tup:GetUplinks/>", **USER)
    [kept] = root.iterfind("env:Body/tup:GetUplinksResponse/tup:Configuration/v:Q", NS)
    assert (kept.text, kept.nsmap.get("tup")) == ("tup:Thing", TUP)


def test_without_access_control_and_other_methods_sec_1(tmp_path: Path) -> None:
    """SEC-1: without access control in front the endpoint fails closed; a GET is 405; the table of rights
    is the only gate (a User may read, not write)."""
    with DeviceStore(tmp_path / "d") as store:
        endpoint = uplink_endpoint(UplinkServiceContext(store=store))
        status, root = call(endpoint, "<tup:GetServiceCapabilities/>")
        assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:Action"])
        got: list[str] = []
        body = b"".join(endpoint({"REQUEST_METHOD": "GET"}, lambda s, h, exc_info=None: got.append(s)))
        assert got == ["405 Method Not Allowed"] and body
        app = AccessControlMiddleware(endpoint, operation_access=operation_access_from(OPERATION_ACCESS),
                                      wsse=None, digest=None)
        assert call(app, "<tup:GetUplinks/>", **USER)[0] == 200
        status, root = call(app, set_uplink("https://a.example/"), **USER)
        assert (status, fault_chain(root)) == (400, REFUSED)
        assert store.list_uplinks() == []


def test_the_operation_run_is_the_one_parsed_once_sec_1(device: DeviceApplication,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-1: an uplink-service request is parsed once (by the inline decision or by access control) and the
    operation that answers is the one access control decided on."""
    parses = count_parses(monkeypatch)
    for body, runs_inline, answer in (("<tup:GetServiceCapabilities/>", True, "GetServiceCapabilitiesResponse"),
                                      ("<tup:GetUplinks/>", True, "GetUplinksResponse"),
                                      (delete_uplink("https://none.example/"), False, "Fault")):
        parses.clear()
        environ = soap_environ(envelope(body), UPLINK_PATH, **ADMIN)
        assert device.runs_inline(environ) is runs_inline
        out = b"".join(device(environ, lambda status, headers, exc_info=None: None))
        assert len(parses) == 1, body
        assert etree.QName(etree.fromstring(out).find("env:Body", NS)[0]).localname == answer
