"""SEC-1, SEC-3, EVT-2, EVT-4: the event service dispatches the one parsed request by the QName of its operation.

The generic endpoint (:class:`iec62676_2_33.soap.dispatch.QNameDispatcher`) is driven in-process behind the
real access-control middleware: the handler gets the very tree access control decided on and nothing to read
again, a refused request never reaches it, and every way a request can fail is one clear fault (never a
traceback). Then the event service of a running device, over loopback: unknown operations and methods at both
of its addresses, a subscription operation at the event address without ``wsa:To``, and siblings that share a
local name across namespaces inside a Filter.
"""

from __future__ import annotations

import http.client
import io
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import RunningDevice
from helpers import fault_chain
from lxml import etree
from test_events_deviations import pull_body, with_headers
from test_events_service import NS, answer, envelope, event_url, post, subscribe

from iec62676_2_33.namespaces import SOAP_ENV, TEV, TT, WSA
from iec62676_2_33.security.access import AccessClass, operation_access_from
from iec62676_2_33.security.middleware import ENVIRON_REQUEST, AccessControlMiddleware
from iec62676_2_33.soap.dispatch import Answer, QNameDispatcher
from iec62676_2_33.soap.fault import SoapFault

WSA_FAULT = "http://www.w3.org/2005/08/addressing/soap/fault"
CAPABILITIES = (TEV, "GetServiceCapabilities")
PROPERTIES = (TEV, "GetEventProperties")


def request(body: str, header: str = "") -> bytes:
    return (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tev="{TEV}" xmlns:wsa="{WSA}">'
            f"<env:Header>{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>").encode()


def call(app: Any, data: bytes, method: str = "POST") -> tuple[str, dict[str, str], bytes]:
    """One in-process WSGI request: (status line, headers, body)."""
    environ = {"REQUEST_METHOD": method, "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data),
               "CONTENT_TYPE": "application/soap+xml; charset=utf-8", "wsgi.url_scheme": "http",
               "HTTP_HOST": "cam.local", "SERVER_NAME": "cam.local", "SERVER_PORT": "80", "SCRIPT_NAME": "",
               "PATH_INFO": "/onvif/event_service"}
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, dict(headers)
        return lambda _chunk: None

    body = b"".join(app(environ, start_response))
    assert int(got["headers"]["Content-Length"]) == len(body)
    return got["status"], got["headers"], body


class Handlers:
    """A table of two operations that records what each call was handed."""

    def __init__(self) -> None:
        self.seen: list[tuple[etree._Element, bool, bytes]] = []
        self.fail: BaseException | None = None

    def capabilities(self, context: Any, request: Any, environ: dict[str, Any]) -> Answer:
        self.seen.append((request.operation, request is environ[ENVIRON_REQUEST], environ["wsgi.input"].read()))
        if self.fail is not None:
            raise self.fail
        # the tail is text that uses a prefix declared by the endpoint's nsmap only
        return Answer(f"{TEV}/GetServiceCapabilitiesResponse", etree.Element(f"{{{TEV}}}GetServiceCapabilitiesResponse"),
                      b'<tt:Item Name="a&amp;b"/>')

    def properties(self, context: Any, request: Any, environ: dict[str, Any]) -> Answer:
        self.seen.append((request.operation, True, b""))
        return Answer(f"{TEV}/GetEventPropertiesResponse", etree.Element(f"{{{TEV}}}GetEventPropertiesResponse"))


@pytest.fixture
def served() -> tuple[Any, Handlers]:
    handlers = Handlers()
    dispatcher = QNameDispatcher({CAPABILITIES: handlers.capabilities, PROPERTIES: handlers.properties},
                                 xsd="events", context=None, nsmap={"env": SOAP_ENV, "tt": TT, "wsa": WSA},
                                 fault_action=WSA_FAULT)
    table = {CAPABILITIES: AccessClass.PRE_AUTH, PROPERTIES: AccessClass.READ_MEDIA}
    app = AccessControlMiddleware(dispatcher, operation_access=operation_access_from(table), wsse=None, digest=None)
    return app, handlers


def test_the_handler_gets_the_tree_access_control_decided_on_sec_1_sec_3(served: tuple[Any, Handlers]) -> None:
    """SEC-1, SEC-3: the handler runs on the parsed request access control saw (no body left to read); a request
    access control refuses (Anonymous calling a READ_MEDIA operation) never reaches a handler."""
    app, handlers = served
    status, _headers, body = call(app, request("<tev:GetServiceCapabilities/>",
                                               "<wsa:MessageID>urn:uuid:1</wsa:MessageID>"))
    assert status == "200 OK"
    [(operation, same_request, unread)] = handlers.seen
    assert operation.tag == f"{{{TEV}}}GetServiceCapabilities" and same_request and unread == b""
    root = etree.fromstring(body)
    assert root.findtext("env:Header/wsa:Action", namespaces=NS) == f"{TEV}/GetServiceCapabilitiesResponse"
    assert root.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:1"
    item = root.find(f"env:Body/tev:GetServiceCapabilitiesResponse/{{{TT}}}Item", NS)
    assert item is not None and item.get("Name") == "a&b"  # the tail, spliced in as the answer's last child
    status, _headers, body = call(app, request("<tev:GetEventProperties/>"))
    assert status == "400 Bad Request" and fault_chain(etree.fromstring(body)) == ["env:Sender", "ter:NotAuthorized"]
    assert len(handlers.seen) == 1


def test_every_refusal_is_one_fault_with_the_fault_action_sec_3(served: tuple[Any, Handlers],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """SEC-3: a method other than POST, an unknown operation, a contradicting wsa:Action, a request the XSD
    refuses, siblings of one local name in two namespaces, a handler's own fault and a handler that breaks:
    each is one fault (with the endpoint's wsa:Action and the request's MessageID), never a traceback."""
    app, handlers = served
    status, headers, body = call(app, b"", method="GET")
    assert (status, headers["Allow"]) == ("405 Method Not Allowed", "POST") and b"POST" in body
    message_id = "<wsa:MessageID>urn:uuid:2</wsa:MessageID>"
    cases = [
        (request("<tev:Unknown/>", message_id), "500", ["env:Receiver", "ter:ActionNotSupported"]),
        (request("<tev:GetServiceCapabilities/>", f"<wsa:Action>{TEV}/GetEventProperties</wsa:Action>{message_id}"),
         "400", ["env:Sender", "ter:InvalidArgVal", "ter:ActionMismatch"]),
        (request("<tev:GetServiceCapabilities><tev:Extra/></tev:GetServiceCapabilities>", message_id),
         "400", ["env:Sender", "ter:InvalidArgs"]),
    ]
    for data, code, chain in cases:
        status, _headers, body = call(app, data)
        root = etree.fromstring(body)
        assert (status[:3], fault_chain(root)) == (code, chain)
        assert root.findtext("env:Header/wsa:Action", namespaces=NS) == WSA_FAULT
        assert root.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:2"
    assert handlers.seen == []
    handlers.fail = SoapFault(code="Sender", subcodes=("InvalidArgVal", "Mine"), reason="refused by the handler")
    status, _headers, body = call(app, request("<tev:GetServiceCapabilities/>"))
    assert (status, fault_chain(etree.fromstring(body))) == ("400 Bad Request",
                                                             ["env:Sender", "ter:InvalidArgVal", "ter:Mine"])
    handlers.fail = RuntimeError("internal detail that stays inside")
    with caplog.at_level(logging.WARNING, logger="iec62676_2_33.soap.dispatch"):
        status, _headers, body = call(app, request("<tev:GetServiceCapabilities/>"))
    assert (status, fault_chain(etree.fromstring(body))) == ("500 Internal Server Error", ["env:Receiver", "ter:Action"])
    assert b"internal detail" not in body and b"Traceback" not in body
    [record] = [r for r in caplog.records if r.name == "iec62676_2_33.soap.dispatch"]
    assert "RuntimeError" in record.getMessage() and record.exc_info is None


def test_unknown_operations_and_methods_at_both_event_addresses_evt_4(device: RunningDevice) -> None:
    """EVT-4: an operation of another service at the event address, and wsnt:Subscribe or
    CreatePullPointSubscription at a subscription's address, are refused with ActionNotSupported (relating
    to the MessageID, with the event service's fault action), never answered empty; GET is 405."""
    address = subscribe(device)
    message_id = "<wsa:MessageID>urn:uuid:3</wsa:MessageID>"
    cases = [
        (event_url(device), '<tds:GetDeviceInformation xmlns:tds="http://www.onvif.org/ver10/device/wsdl"/>'),
        (address, "<wsnt:Subscribe/>"),
        (address, "<tev:CreatePullPointSubscription/>"),
    ]
    for url, body in cases:
        status, root = post(url, with_headers(body, message_id))
        assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:ActionNotSupported"]), url
        assert root.findtext("env:Header/wsa:Action", namespaces=NS) == WSA_FAULT
        assert root.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:3"
    for url in (event_url(device), address):
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        try:
            conn.request("GET", parts.path)
            response = conn.getresponse()
            assert (response.status, response.getheader("Allow")) == (405, "POST")
            response.read()
        finally:
            conn.close()


def test_a_subscription_operation_at_the_event_address_needs_wsa_to_evt_4(device: RunningDevice) -> None:
    """EVT-4: PullMessages at the event service's address without a wsa:To naming a subscription is
    ResourceUnknown (relating to its MessageID); with it, it runs on that subscription."""
    address = subscribe(device)
    status, root = post(event_url(device), with_headers(pull_body(), "<wsa:MessageID>urn:uuid:4</wsa:MessageID>"))
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"])
    assert root.findtext("env:Header/wsa:Action", namespaces=NS) == WSA_FAULT
    assert root.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:4"
    status, root = post(event_url(device), with_headers(pull_body(), f"<wsa:To>{address}</wsa:To>"))
    assert status == 200 and answer(root).tag == f"{{{TEV}}}PullMessagesResponse"


def test_a_filter_element_in_two_namespaces_is_refused_evt_2(device: RunningDevice) -> None:
    """EVT-2: filter elements are read by local name in any namespace, so two siblings of one local name in
    two namespaces (which the schema's xs:any lets through) are refused rather than one of them picked."""
    flt = ('<tev:Filter><tt:PrefixFilter><tt:Prefix>a</tt:Prefix></tt:PrefixFilter>'
           '<x:PrefixFilter xmlns:x="urn:x"><x:Prefix>b</x:Prefix></x:PrefixFilter></tev:Filter>')
    status, root = post(event_url(device), envelope(f"<tev:CreatePullPointSubscription>{flt}"
                                                    "</tev:CreatePullPointSubscription>"))
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgs"])
    assert b"two namespaces" in etree.tostring(root)
