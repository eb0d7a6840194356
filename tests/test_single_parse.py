"""SEC-1, SEC-3, SEC-4: access control and the dispatcher read one message — the same parsed tree.

First the two attacks that got protected operations run without credentials
(a ``charset=utf-7`` body whose UTF-8 reading and UTF-7 reading name
different operations; a ``multipart/related`` body whose MIME root part is
another envelope), sent as raw bytes to a running device and, for the
uplink, with an Operator uplink's UserLevel. Then a property test generates
request variants (encodings, declarations, charset and action parameters,
SOAPAction, WS-Addressing Action, MIME types, comments, processing
instructions, several Body children, character data, namespace prefixes) and
checks, for every one, that the operation the service ran is exactly the operation
access control decided on, and that an anonymous caller never ran anything
but a PRE_AUTH operation.
"""

from __future__ import annotations

import http.client
import io
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ADMIN, RunningDevice, seed_device
from helpers import fault_chain
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from iec62676_2_33.namespaces import SOAP_ENV, TUP, WSA
from iec62676_2_33.security.access import operation_access_from
from iec62676_2_33.security.middleware import ENVIRON_REQUEST, ENVIRON_UPLINK_LEVEL, AccessControlMiddleware
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.uplink import OPERATION_ACCESS, UplinkServiceContext, uplink_endpoint
from iec62676_2_33.soap.dispatch import Handler
from iec62676_2_33.soap.envelope import parse_request
from iec62676_2_33.store import DeviceStore

HARMLESS = "<tup:GetServiceCapabilities/>"
EVIL = "https://evil.example.com/uplink"
DANGEROUS = (f"<tup:SetUplink><tup:Configuration><tup:RemoteAddress>{EVIL}</tup:RemoteAddress>"
             "<tup:CertificateID>cert-1</tup:CertificateID><tup:UserLevel>Administrator</tup:UserLevel>"
             "</tup:Configuration></tup:SetUplink>")
SOAP_CT = "application/soap+xml; charset=utf-8"


def wrap(body: str, header: str = "") -> str:
    return (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tup="{TUP}" xmlns:wsa="{WSA}">{header}'
            f"<env:Body>{body}</env:Body></env:Envelope>")


def post(url: str, data: bytes, content_type: str | None, headers: dict[str, str] | None = None,
         ) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        all_headers = dict(headers or {})
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        conn.request("POST", parts.path, data, all_headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def stored_uplinks(data: Path) -> list[str]:
    with DeviceStore(data) as store:
        return [cfg.remote_address for cfg in store.list_uplinks()]


def utf7(text: str) -> bytes:
    """UTF-7 with the markup characters in base64 (Python's encoder leaves them direct)."""
    return text.replace("<", "+ADw-").replace(">", "+AD4-").encode("ascii")


UTF7_SMUGGLE = (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tup="{TUP}"><env:Body>'.encode()
                + utf7(DANGEROUS) + HARMLESS.encode() + b"</env:Body></env:Envelope>")


def multipart_smuggle(hidden: str) -> tuple[bytes, str]:
    inner = wrap(hidden)
    outer = wrap(HARMLESS)
    data = (f"--BB\r\nContent-Type: application/soap+xml\r\n\r\n{outer}"
            f"<?x \r\n--BB\r\nContent-Type: application/soap+xml\r\n\r\n{inner}\r\n--BB--\r\n?>").encode()
    return data, 'multipart/related; type="application/soap+xml"; boundary=BB'


# --------------------------------------------------------------------------- the two findings, raw


def test_sec3_utf7_charset_differential_refused(device: RunningDevice) -> None:
    """SEC-3: a charset=utf-7 body that reads as GetServiceCapabilities in UTF-8 and as SetUplink in UTF-7
    is refused before authentication; nothing is stored."""
    assert b"<tup:SetUplink>" not in UTF7_SMUGGLE and "<tup:SetUplink>" in UTF7_SMUGGLE.decode("utf-7")
    status, body = post(device.url, UTF7_SMUGGLE, "application/soap+xml; charset=utf-7")
    assert status == 400
    assert fault_chain(etree.fromstring(body))[0] == "env:Sender"
    assert EVIL not in stored_uplinks(device.data)


def test_sec3_multipart_differential_refused(device: RunningDevice) -> None:
    """SEC-3: SOAP-with-attachments is refused (415): a MIME root part hiding GetUplinks never runs."""
    data, content_type = multipart_smuggle("<tup:GetUplinks/>")
    status, body = post(device.url, data, content_type)
    assert status == 415
    assert b"GetUplinksResponse" not in body
    assert fault_chain(etree.fromstring(body))[0] == "env:Sender"


def test_sec4_operator_uplink_cannot_escalate_by_utf7(tmp_path: Path) -> None:
    """SEC-4, UPL-12: over an Operator uplink the same smuggled SetUplink (Administrator) is refused."""
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        status, body = call(app, UTF7_SMUGGLE, "application/soap+xml; charset=utf-7",
                            **{ENVIRON_UPLINK_LEVEL: ["Operator"]})
        assert status == 400 and fault_chain(etree.fromstring(body))[0] == "env:Sender"
        status, _ = call(app, wrap(DANGEROUS).encode(), SOAP_CT, **{ENVIRON_UPLINK_LEVEL: ["Operator"]})
        assert status == 400  # the honest request is refused for the Operator too
        assert store.list_uplinks() == []


def test_sec3_fault_echoes_only_a_prefix_of_the_input(device: RunningDevice) -> None:
    """SEC-3: a fault never repeats more than a short prefix of what the client sent."""
    huge = "x" * 200_000
    status, body = post(device.url, wrap(f"<tup:{huge}/>").encode(), SOAP_CT)
    assert status in (400, 500)
    assert len(body) < 2_000 and huge[:1000].encode() not in body


def test_sec3_missing_or_foreign_media_type_refused(device: RunningDevice) -> None:
    """SEC-3: no Content-Type, text/xml or application/json: 415 with a Sender fault, nothing runs."""
    data = wrap(DANGEROUS).encode()
    for content_type in (None, "text/xml; charset=utf-8", "application/json"):
        status, body = post(device.url, data, content_type)
        assert status == 415, content_type
        assert fault_chain(etree.fromstring(body))[0] == "env:Sender"
    assert EVIL not in stored_uplinks(device.data)


def test_sec1_every_route_passes_access_control(tmp_path: Path) -> None:
    """SEC-1: every service route of the device is behind access control, and a service endpoint
    reached without it refuses (fails closed) instead of parsing the bytes itself."""
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        assert app.routes and all(isinstance(route, AccessControlMiddleware) for route in app.routes.values())
        bare = uplink_endpoint(UplinkServiceContext(store=store))
        status, body = call(bare, wrap(HARMLESS).encode(), SOAP_CT)
        assert status == 500 and b"GetServiceCapabilitiesResponse" not in body


# --------------------------------------------------------------------------- encodings, unit


@pytest.mark.parametrize("codec, charset, declared", [
    ("utf-8", None, None), ("utf-8", "utf-8", "UTF-8"), ("utf-8-sig", "utf-8", None),
    ("utf-16", "utf-16", "UTF-16"), ("utf-16", None, None),
])
def test_sec1_utf8_and_utf16_accepted(codec: str, charset: str | None, declared: str | None) -> None:
    """SEC-1: UTF-8 and UTF-16 (with its byte order mark) with consistent labels identify the operation."""
    text = wrap(HARMLESS)
    if declared:
        text = f'<?xml version="1.0" encoding="{declared}"?>' + text
    content_type = "application/soap+xml" + (f"; charset={charset}" if charset else "")
    request = parse_request(content_type, text.encode(codec))
    assert request.operation_name == (TUP, "GetServiceCapabilities")


@pytest.mark.parametrize("data, charset, reason", [
    (wrap(HARMLESS).encode("utf-7"), "utf-7", "charset"),
    (wrap(HARMLESS).encode("latin-1"), "iso-8859-1", "charset"),
    (wrap(HARMLESS).encode("utf-32"), None, "UTF-32"),
    (wrap(HARMLESS).encode("utf-16-le"), "utf-16", "byte order mark"),
    (wrap(HARMLESS).encode("cp500"), None, "not valid utf-8"),
    (b'<?xml version="1.0" encoding="UTF-16"?>' + wrap(HARMLESS).encode(), None, "declaration says"),
    (b'<?xml version="1.0" encoding="utf-7"?>' + wrap(HARMLESS).encode(), "utf-8", "declaration says"),
    (wrap(HARMLESS).encode("utf-16"), "utf-8", "does not match"),
    (b"\xef\xbb\xbf" + wrap(HARMLESS).encode("utf-8") + b"\xff", None, "not valid utf-8"),
])
def test_sec3_other_encodings_and_mismatches_refused(data: bytes, charset: str | None, reason: str) -> None:
    """SEC-3: anything but consistent UTF-8/UTF-16 is refused with a Sender fault, before authentication."""
    from iec62676_2_33.soap.fault import SoapFault

    content_type = "application/soap+xml" + (f"; charset={charset}" if charset else "")
    with pytest.raises(SoapFault) as info:
        parse_request(content_type, data)
    assert info.value.code == "Sender" and reason in info.value.reason


@pytest.mark.parametrize("body, reason", [
    (HARMLESS + DANGEROUS, "exactly one operation"),
    (HARMLESS + "junk", "character data"),
    ("junk" + HARMLESS, "character data"),
])
def test_sec3_body_must_hold_exactly_one_operation(body: str, reason: str) -> None:
    """SEC-3: several Body children, or text beside the operation, are refused."""
    from iec62676_2_33.soap.fault import SoapFault

    with pytest.raises(SoapFault) as info:
        parse_request(SOAP_CT, wrap(body).encode())
    assert reason in info.value.reason


def test_sec3_two_bodies_or_headers_refused() -> None:
    """SEC-3: an envelope with two Bodies, or two Headers, is refused (a reader could take either)."""
    from iec62676_2_33.soap.fault import SoapFault

    two_bodies = wrap(HARMLESS).replace("</env:Envelope>", f"<env:Body>{DANGEROUS}</env:Body></env:Envelope>")
    two_headers = wrap(HARMLESS, "<env:Header/><env:Header/>")
    for text in (two_bodies, two_headers):
        with pytest.raises(SoapFault):
            parse_request(SOAP_CT, text.encode())


def test_sec1_comments_and_pis_are_not_operations() -> None:
    """SEC-1: comments and processing instructions around the operation are dropped by the one parser."""
    text = wrap(f"<!-- {DANGEROUS} --><?pi {DANGEROUS}?>{HARMLESS}<!-- x -->")
    assert parse_request(SOAP_CT, text.encode()).operation_name == (TUP, "GetServiceCapabilities")


# --------------------------------------------------------------------------- property: decided == ran


def call(app: Any, data: bytes, content_type: str | None, extra_headers: dict[str, str] | None = None,
         **environ: Any) -> tuple[int, bytes]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data),
        "wsgi.url_scheme": "http", "HTTP_HOST": "cam.local", "SERVER_NAME": "cam.local", "SERVER_PORT": "80",
        "SCRIPT_NAME": "", "PATH_INFO": "/onvif/uplink_service", **environ}
    if content_type is not None:
        env["CONTENT_TYPE"] = content_type
    for name, value in (extra_headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    got: dict[str, str] = {}
    out = b"".join(app(env, lambda status, headers, exc_info=None: got.setdefault("status", status)))
    return int(got["status"].split()[0]), out


class Recorder:
    """What access control decided on and what the service ran, per request."""

    def __init__(self) -> None:
        self.decided: list[str] = []
        self.ran: list[str] = []


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Recorder, DeviceStore]]:
    record = Recorder()
    table = operation_access_from(OPERATION_ACCESS)

    def decide(namespace: str, name: str) -> Any:
        record.decided.append(name)
        return table(namespace, name)

    def spy(name: str, handler: Handler) -> Handler:
        def run(context: Any, request: Any, environ: dict[str, Any]) -> Any:
            record.ran.append(name)
            return handler(context, request, environ)
        return run

    with DeviceStore(tmp_path / "d") as store:
        endpoint = uplink_endpoint(UplinkServiceContext(store=store))
        for operation, handler in endpoint.handlers.items():
            monkeypatch.setitem(endpoint.handlers, operation, spy(operation[1], handler))
        app = AccessControlMiddleware(endpoint, operation_access=decide, wsse=None, digest=None)
        yield app, record, store


CODECS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-7", "latin-1", "utf-32", "cp500", "mixed"]
LABELS = [None, "utf-8", "UTF-8", "utf-16", "utf-16le", "utf-7", "iso-8859-1", "utf-32", "ebcdic-cp-us"]
MEDIA = ["application/soap+xml", "text/xml", "application/xml",
         'multipart/related; type="application/soap+xml"; boundary=BB', None]
ITEMS = st.sampled_from(["H", "D", "h", "C", "P", "T", "W"])  # h: HARMLESS in the default namespace


def mostly(usual: Any, others: list[Any]) -> st.SearchStrategy[Any]:
    """``usual`` most of the time, so that many variants get past the reader and reach a service."""
    return st.sampled_from([usual] * 2 * len(others) + others)


def render(item: str) -> str:
    return {
        "H": HARMLESS, "D": DANGEROUS, "h": f'<GetServiceCapabilities xmlns="{TUP}"/>',
        "C": f"<!--{DANGEROUS}-->", "P": f"<?smuggle {DANGEROUS}?>", "T": "tup:SetUplink", "W": " \n\t",
    }[item]


@st.composite
def variants(draw: st.DrawFn) -> tuple[bytes, str | None, dict[str, str]]:
    items = draw(st.one_of(st.lists(st.sampled_from(["H", "D", "h"]), min_size=1, max_size=1),
                           st.lists(ITEMS, min_size=1, max_size=4)))
    header = draw(mostly("", ["<env:Header/>",
                                   f"<env:Header><wsa:Action>{TUP}/SetUplink</wsa:Action></env:Header>",
                                   "<env:Header/><env:Header/>"]))
    text = wrap("".join(render(i) for i in items), header)
    if draw(mostly(False, [True])):
        text = text.replace("</env:Envelope>", f"<env:Body>{DANGEROUS}</env:Body></env:Envelope>")
    codec = draw(mostly("utf-8", CODECS))
    declared = draw(mostly(None, LABELS))
    if declared is not None:
        text = f'<?xml version="1.0" encoding="{declared}"?>' + text
    if codec == "mixed":  # the UTF-7 smuggle: only the dangerous part is UTF-7
        head, _, tail = text.partition("<env:Body>")
        data = (head + "<env:Body>").encode() + utf7(DANGEROUS) + tail.encode()
    elif codec == "utf-7":
        data = utf7(text)
    else:
        data = text.encode(codec)
    media = draw(mostly("application/soap+xml", MEDIA))
    charset = draw(mostly(None, LABELS))
    content_type = None if media is None else media + (f"; charset={charset}" if charset else "")
    if content_type is not None and draw(st.booleans()):
        content_type += f'; action="{TUP}/SetUplink"'
    headers = {"SOAPAction": f'"{TUP}/SetUplink"'} if draw(st.booleans()) else {}
    return data, content_type, headers


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=variants())
@example(variant=(UTF7_SMUGGLE, "application/soap+xml; charset=utf-7", {}))
@example(variant=(*multipart_smuggle(DANGEROUS), {}))
def test_sec1_operation_run_is_operation_decided_anonymous(
        recorded: tuple[Any, Recorder, DeviceStore], variant: tuple[bytes, str | None, dict[str, str]]) -> None:
    """SEC-1, SEC-3: for every generated variant, anonymous: what ran is what was decided, and only a
    PRE_AUTH operation (GetServiceCapabilities) can have run; SetUplink never ran, nothing stored."""
    app, record, store = recorded
    record.decided.clear()
    record.ran.clear()
    data, content_type, headers = variant
    status, _ = call(app, data, content_type, headers)
    event(f"status {status}, ran {record.ran}")
    assert record.ran in ([], record.decided)
    assert record.ran in ([], ["GetServiceCapabilities"])
    assert (status == 200) == (record.ran == ["GetServiceCapabilities"])
    assert store.list_uplinks() == []


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=variants())
@example(variant=(UTF7_SMUGGLE, "application/soap+xml; charset=utf-7", {}))
def test_sec4_operation_run_is_operation_decided_uplink(
        recorded: tuple[Any, Recorder, DeviceStore], variant: tuple[bytes, str | None, dict[str, str]]) -> None:
    """SEC-4: with an Administrator uplink everything is allowed, so this checks the rule alone: at most
    one operation runs per request and it is the one access control decided on."""
    app, record, _store = recorded
    record.decided.clear()
    record.ran.clear()
    data, content_type, headers = variant
    status, _ = call(app, data, content_type, headers, **{ENVIRON_UPLINK_LEVEL: ["Administrator"]})
    event(f"status {status}, ran {record.ran}")
    assert len(record.decided) <= 1
    assert record.ran in ([], record.decided)


def test_sec1_application_gets_the_tree_access_control_parsed(tmp_path: Path) -> None:
    """SEC-1: the application receives the parsed request (the same object) and no bytes to read."""
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((environ[ENVIRON_REQUEST], environ["wsgi.input"].read()))
        start_response("200 OK", [])
        return [b""]

    gate = AccessControlMiddleware(app, operation_access=operation_access_from(OPERATION_ACCESS),
                                   wsse=None, digest=None)
    status, _ = call(gate, wrap(HARMLESS).encode(), SOAP_CT)
    assert status == 200
    (request, unread), = seen
    assert request.operation_name == (TUP, "GetServiceCapabilities") and unread == b""


def test_sec2_admin_still_works_end_to_end(device: RunningDevice) -> None:
    """SEC-2: a well-formed, authenticated SetUplink still runs (the strict reader refuses only the odd)."""
    from datetime import datetime

    from iec62676_2_33.security.wsse import build_username_token

    token = build_username_token(ADMIN[0], ADMIN[1], datetime.now(UTC))
    header = f"<env:Header>{etree.tostring(token).decode()}</env:Header>"
    status, _ = post(device.url, ('<?xml version="1.0" encoding="UTF-8"?>' + wrap(DANGEROUS, header)).encode(),
                     SOAP_CT)
    assert status == 200 and EVIL in stored_uplinks(device.data)


# --------------------------------------------------------------------------- stored state is bounded and private


def test_sec1_user_level_list_is_bounded(tmp_path: Path) -> None:
    """SEC-1 (CFG-3 shape): a UserLevel of thousands of entries, or repeated entries, is refused, not stored;
    the fault does not repeat the list."""
    seed_device(tmp_path / "d")  # cert-1 exists, so UserLevel is what is checked
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        levels = " ".join(["Administrator"] * 50_000)  # about 700 KB: under the 1 MiB body limit
        request = DANGEROUS.replace("<tup:UserLevel>Administrator</tup:UserLevel>",
                                    f"<tup:UserLevel>{levels}</tup:UserLevel>")
        status, body = call(app, wrap(request).encode(), SOAP_CT, **{ENVIRON_UPLINK_LEVEL: ["Administrator"]})
        assert status == 400 and len(body) < 2_000
        assert fault_chain(etree.fromstring(body)) == ["env:Sender", "ter:InvalidArgVal"]
        assert store.list_uplinks() == []


def test_sec2_device_files_are_owner_only(tmp_path: Path) -> None:
    """SEC-2: the databases holding passwords, keys, configuration and resources are 0600 in a 0700 folder,
    whatever the umask, and an older, wider file is narrowed when opened."""
    import os

    from iec62676_2_33.domain.registry import REGISTRY_FILE, ResourceRegistry

    data = tmp_path / "d"
    old = os.umask(0o022)
    try:
        with DeviceStore(data):
            pass
        (data / REGISTRY_FILE).touch(mode=0o644)
        os.chmod(data / REGISTRY_FILE, 0o644)
        with ResourceRegistry(data / REGISTRY_FILE):
            pass
    finally:
        os.umask(old)
    assert data.stat().st_mode & 0o777 == 0o700
    for item in data.iterdir():
        assert item.stat().st_mode & 0o777 == 0o600, item


# --------------------------------------------------------------------------- found by the attack pass


def admin_header(now: float | None = None) -> str:
    from datetime import datetime

    from iec62676_2_33.security.wsse import build_username_token

    token = build_username_token(ADMIN[0], ADMIN[1], datetime.now(UTC))
    return f"<env:Header>{etree.tostring(token).decode()}</env:Header>"


def test_sec2_a_nonce_is_spent_on_every_route(tmp_path: Path) -> None:
    """SEC-2: a UsernameToken used on the device service is a replay on the uplink and event services too
    (one nonce cache for the whole device, not one per route)."""
    from iec62676_2_33.services.events import EventServiceContext  # noqa: F401  (the event route exists)

    seed_device(tmp_path / "d")
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        header = admin_header()
        status, _ = call(app, wrap("<tds:GetDeviceInformation xmlns:tds='http://www.onvif.org/ver10/device/wsdl'/>",
                                   header).encode(), SOAP_CT, PATH_INFO="/onvif/device_service")
        assert status == 200
        status, body = call(app, wrap(DANGEROUS, header).encode(), SOAP_CT)
        assert status == 400 and fault_chain(etree.fromstring(body))[-1] == "ter:NotAuthorized"
        assert store.list_uplinks() == []


def test_sec3_thousands_of_namespace_declarations_refused(tmp_path: Path) -> None:
    """SEC-3: 60,000 namespace declarations (under 1 MiB) around a PRE_AUTH operation are refused at once
    (copying them for validation cost seconds of CPU a request)."""
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        declarations = " ".join(f'xmlns:n{i}="u"' for i in range(60_000))  # under the 1 MiB limit
        text = wrap(HARMLESS).replace("<env:Envelope ", f"<env:Envelope {declarations} ", 1)
        status, body = call(app, text.encode(), SOAP_CT)
        assert status == 400 and b"namespaces" in body


def test_sec1_extension_element_cannot_shadow_a_field(tmp_path: Path) -> None:
    """SEC-1: an xs:any extension element with a modelled field's local name (which Spyne would read
    instead of the field the XSD checked) is refused; nothing is stored."""
    seed_device(tmp_path / "d")
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        shadowed = DANGEROUS.replace(
            "<tup:UserLevel>Administrator</tup:UserLevel>",
            '<tup:UserLevel>User</tup:UserLevel><o:UserLevel xmlns:o="urn:x">Administrator</o:UserLevel>')
        status, body = call(app, wrap(shadowed, admin_header()).encode(), SOAP_CT)
        assert status == 400 and b"two namespaces" in body
        assert store.list_uplinks() == []


def test_sec3_attribute_named_like_a_field_is_not_read(tmp_path: Path) -> None:
    """SEC-3: attributes named like the fields of tup:Configuration (its ``xs:anyAttribute`` admits them) are
    never read in place of the elements the XSD checked: what is stored is what the elements say."""
    seed_device(tmp_path / "d")
    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        odd = DANGEROUS.replace("<tup:Configuration>", '<tup:Configuration Configuration="zzz" '
                                'RemoteAddress="https://other.example/" UserLevel="User">')
        status, _ = call(app, wrap(odd, admin_header()).encode(), SOAP_CT)
        assert status == 200
        assert [(cfg.remote_address, cfg.user_level) for cfg in store.list_uplinks()] == [(EVIL, ("Administrator",))]


def test_sec3_mandatory_unknown_header_gets_must_understand() -> None:
    """SEC-3: a header block marked mustUnderstand that no one here processes is env:MustUnderstand
    (SOAP 1.2 §5.2.3); WS-Addressing and WS-Security blocks are understood."""
    from iec62676_2_33.soap.fault import SoapFault

    signed = wrap(HARMLESS, '<env:Header><x:Signature xmlns:x="urn:sig" env:mustUnderstand="true"/></env:Header>')
    with pytest.raises(SoapFault) as info:
        parse_request(SOAP_CT, signed.encode())
    assert info.value.code == "MustUnderstand"
    addressed = wrap(HARMLESS, f'<env:Header><wsa:Action env:mustUnderstand="1">{TUP}/x</wsa:Action></env:Header>')
    assert parse_request(SOAP_CT, addressed.encode()).operation_name == (TUP, "GetServiceCapabilities")
