"""STR-1, STR-3, STR-5, SEC-1, SEC-3, SEC-4, UPL-12, ANX-B-1: the Media2 service — profiles of the
configured media sources, stream URIs that point back the way the request came (the camera directly, or
the cloud), faults, access classes and the StreamingOverUplink capability.

Raw SOAP 1.2 envelopes against a running device (every answer validated against the authored
``xsd/media2.xsd``), the service in process for what a runtime sets (RTSPWebSocketUri, uplink levels),
and zeep clients: plain zeep on our WSDL, and onvif-zeep-async's own ``ONVIFService`` directly and
through a real cloud proxy over a real uplink. The onvif-zeep-async release installed here (4.3.0)
defines no Media2 service (no ``create_media2_service``, no ``ver20/media`` WSDL in its wheel), so its
``ONVIFCamera`` is used for the bootstrap (GetServices lists Media2 at the right address) and its
``ONVIFService`` class, unmodified, is pointed at our Media2 WSDL.
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import zeep
import zeep.exceptions
from conftest import ADMIN, USER, RunningDevice
from helpers import call_wsgi, fault_chain, soap_environ
from lxml import etree

from iec62676_2_33 import schemas
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TT, TUP
from iec62676_2_33.security.middleware import ENVIRON_UPLINK_LEVEL
from iec62676_2_33.security.wsse import build_username_token
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.media2 import MEDIA2_PATH, OPERATION_ACCESS, TR2
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore

NS = {"env": SOAP_ENV, "tr2": TR2, "tt": TT, "tds": TDS, "tup": TUP}
MAIN = MediaSource(token="main", name="Main stream", rtsp_url="rtsp://127.0.0.1:8554/cam/main",
                   snapshot_url="http://127.0.0.1:8080/snap/main.jpg", encoding="H264", width=1280, height=720,
                   username="cam-admin", password="cam-secret")
SUB = MediaSource(token="sub#2", name="Sub stream", rtsp_url="rtsp://127.0.0.1:8554/cam/sub", encoding="H265")
PROXY = {"X-Forwarded-Host": "cloud.example:8080", "X-Forwarded-Proto": "http",
         "X-Forwarded-Prefix": "/devices/cam-7"}
RTSP_FRONT = "rtsp://127.0.0.1:8554/devices/cam-7"
CALL_TIMEOUT = 30.0


def envelope(body: str, *, user: tuple[str, str] | None = None) -> bytes:
    header = ""
    if user is not None:
        token = build_username_token(user[0], user[1], datetime.now(UTC))
        header = f"<env:Header>{etree.tostring(token).decode()}</env:Header>"
    return (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tr2="{TR2}" '
            f'xmlns:tds="{TDS}" xmlns:tup="{TUP}">{header}<env:Body>{body}</env:Body></env:Envelope>').encode()


def post(url: str, body: str, *, user: tuple[str, str] | None = USER,
         headers: dict[str, str] | None = None) -> tuple[int, etree._Element]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", parts.path, envelope(body, user=user),
                     {"Content-Type": "application/soap+xml; charset=utf-8", **(headers or {})})
        response = conn.getresponse()
        return response.status, etree.fromstring(response.read())
    finally:
        conn.close()


def ok(url: str, body: str, **kwargs: Any) -> etree._Element:
    """POST, expect 200, validate the answer against the authored media2 XSD and return it."""
    status, root = post(url, body, **kwargs)
    assert status == 200, etree.tostring(root)
    response = root.find("env:Body", NS)[0]
    schemas.validate(response, "media2")
    return response


def fault(url: str, body: str, **kwargs: Any) -> tuple[int, list[str], str]:
    status, root = post(url, body, **kwargs)
    return status, fault_chain(root), root.findtext(".//env:Reason/env:Text", namespaces=NS)


def stream_uri(url: str, protocol: str, token: str = "main", **kwargs: Any) -> str:
    response = ok(url, f"<tr2:GetStreamUri><tr2:Protocol>{protocol}</tr2:Protocol>"
                       f"<tr2:ProfileToken>{token}</tr2:ProfileToken></tr2:GetStreamUri>", **kwargs)
    return str(response.findtext("tr2:Uri", namespaces=NS))


@pytest.fixture
def media(device: RunningDevice) -> Iterator[str]:
    """The running device with two media sources; yields the Media2 address."""
    with DeviceStore(device.data) as store:
        store.put_media_source(MAIN)
        store.put_media_source(SUB)
    yield device.base + MEDIA2_PATH


# -- capabilities and GetServices ---------------------------------------------------------------

def test_service_capabilities_anonymous_str_3_sec_1(media: str) -> None:
    """STR-3, SEC-1: GetServiceCapabilities is PRE_AUTH and reports RTSP streaming, the profile count and
    snapshots; no RTSPWebSocketUri while the device serves no RTSP over WebSocket."""
    caps = ok(media, "<tr2:GetServiceCapabilities/>", user=None).find("tr2:Capabilities", NS)
    assert caps.get("SnapshotUri") == "true"
    profile = caps.find("tr2:ProfileCapabilities", NS)
    assert (profile.get("MaximumNumberOfProfiles"), profile.get("ConfigurationsSupported")) == (
        "2", "VideoSource VideoEncoder")
    streaming = caps.find("tr2:StreamingCapabilities", NS)
    assert (streaming.get("RTSPStreaming"), streaming.get("RTP_RTSP_TCP"), streaming.get("RTPMulticast")) == (
        "true", "true", "false")
    assert streaming.get("RTSPWebSocketUri") is None


def test_get_services_lists_media2_and_streaming_over_uplink_follows_sources_str_5(device: RunningDevice) -> None:
    """STR-5, ANX-B-1: GetServices lists Media2 with its capabilities; the uplink's StreamingOverUplink is
    false without media sources and true as soon as one exists (and false again when none is left)."""
    device_url = device.base + "/onvif/device_service"
    uplink_url = device.base + "/onvif/uplink_service"

    def streaming() -> tuple[str | None, str | None]:
        status, root = post(uplink_url, "<tup:GetServiceCapabilities/>", user=None)
        assert status == 200
        own = root.find("env:Body/tup:GetServiceCapabilitiesResponse/tup:Capabilities", NS)
        status, root = post(device_url, "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability>"
                                        "</tds:GetServices>", user=None)
        assert status == 200
        listed = root.find(f"env:Body/tds:GetServicesResponse/tds:Service[tds:Namespace='{TUP}']"
                           "/tds:Capabilities/tup:Capabilities", NS)
        return own.get("StreamingOverUplink"), listed.get("StreamingOverUplink")

    assert streaming() == ("false", "false")
    with DeviceStore(device.data) as store:
        store.put_media_source(MAIN)
        assert streaming() == ("true", "true")
        _, root = post(device_url, "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability>"
                                   "</tds:GetServices>", user=None)
        [entry] = root.findall(f"env:Body/tds:GetServicesResponse/tds:Service[tds:Namespace='{TR2}']", NS)
        assert entry.findtext("tds:XAddr", namespaces=NS) == device.base + MEDIA2_PATH
        caps = entry.find("tds:Capabilities/tr2:Capabilities", NS)
        schemas.validate(caps, "media2")
        assert caps.find("tr2:StreamingCapabilities", NS).get("RTSPStreaming") == "true"
        store.delete_media_source("main")
        assert streaming() == ("false", "false")


# -- profiles -----------------------------------------------------------------------------------

def _profiles(response: etree._Element) -> list[etree._Element]:
    return response.findall("tr2:Profiles", NS)


def test_get_profiles_types_and_token_filter_anx_b_1(media: str) -> None:
    """ANX-B-1: every source is a fixed profile; without Type no configurations, Type=All gives the video
    source and encoder configuration (tokens, name, encoding, resolution); Token selects one profile."""
    bare = _profiles(ok(media, "<tr2:GetProfiles/>"))
    assert [(p.get("token"), p.get("fixed"), p.findtext("tr2:Name", namespaces=NS)) for p in bare] == [
        ("main", "true", "Main stream"), ("sub#2", "true", "Sub stream")]
    assert all(p.find("tr2:Configurations", NS) is None for p in bare)

    full = _profiles(ok(media, "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>"))
    main = full[0].find("tr2:Configurations", NS)
    source = main.find("tr2:VideoSource", NS)
    assert (source.get("token"), source.findtext("tt:Name", namespaces=NS), source.findtext("tt:UseCount",
            namespaces=NS), source.findtext("tt:SourceToken", namespaces=NS)) == ("main", "Main stream", "1", "main")
    assert dict(source.find("tt:Bounds", NS).attrib) == {"x": "0", "y": "0", "width": "1280", "height": "720"}
    encoder = main.find("tr2:VideoEncoder", NS)
    assert (encoder.get("token"), encoder.findtext("tt:Encoding", namespaces=NS),
            encoder.findtext("tt:Resolution/tt:Width", namespaces=NS),
            encoder.findtext("tt:Resolution/tt:Height", namespaces=NS)) == ("main", "H264", "1280", "720")
    sub = full[1].find("tr2:Configurations/tr2:VideoEncoder", NS)
    assert (sub.findtext("tt:Encoding", namespaces=NS), sub.findtext("tt:Resolution/tt:Width", namespaces=NS)) == (
        "H265", "0")  # resolution not configured: reported as unknown (0 x 0)

    [only] = _profiles(ok(media, "<tr2:GetProfiles><tr2:Token>sub#2</tr2:Token>"
                                 "<tr2:Type>VideoEncoder</tr2:Type></tr2:GetProfiles>"))
    configurations = only.find("tr2:Configurations", NS)
    assert [etree.QName(c).localname for c in configurations] == ["VideoEncoder"]
    [other] = _profiles(ok(media, "<tr2:GetProfiles><tr2:Token>main</tr2:Token>"
                                  "<tr2:Type>Metadata</tr2:Type></tr2:GetProfiles>"))
    assert other.find("tr2:Configurations", NS) is None  # this device has no metadata configuration


def test_unknown_profile_faults_no_profile_anx_b_1(media: str) -> None:
    """ANX-B-1: an unknown profile token faults env:Sender/ter:InvalidArgVal/ter:NoProfile everywhere."""
    for body in ("<tr2:GetProfiles><tr2:Token>nope</tr2:Token></tr2:GetProfiles>",
                 ("<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>nope</tr2:ProfileToken>"
                  "</tr2:GetStreamUri>"),
                 "<tr2:GetSnapshotUri><tr2:ProfileToken>nope</tr2:ProfileToken></tr2:GetSnapshotUri>"):
        status, chain, _ = fault(media, body)
        assert (status, chain) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:NoProfile"])


def test_no_sources_no_profiles_str_1(device: RunningDevice) -> None:
    """STR-1: a device without media sources answers an empty profile list, never a fault."""
    assert _profiles(ok(device.base + MEDIA2_PATH, "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>")) == []


# -- stream and snapshot URIs ------------------------------------------------------------------

def test_direct_stream_uri_is_the_cameras_own_str_1(media: str) -> None:
    """STR-1: on direct access RTSP and RtspUnicast give the camera's RTSP URL (never its credentials);
    RtspOverHttp, multicast and RTSPS are refused with InvalidStreamSetup."""
    assert stream_uri(media, "RTSP") == MAIN.rtsp_url
    assert stream_uri(media, "RtspUnicast", "sub#2") == SUB.rtsp_url
    for protocol in ("RtspOverHttp", "RtspsUnicast", "RtspMulticast", "Bogus"):
        status, chain, reason = fault(media, f"<tr2:GetStreamUri><tr2:Protocol>{protocol}</tr2:Protocol>"
                                             "<tr2:ProfileToken>main</tr2:ProfileToken></tr2:GetStreamUri>")
        assert (status, chain) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidStreamSetup"]), protocol
        assert protocol in reason and "cam-secret" not in reason


def test_stream_uri_through_the_cloud_proxy_str_1_str_2_anx_b_1(media: str) -> None:
    """STR-1, STR-2, ANX-B-1: a request the cloud proxy forwarded gets URIs that point back through the
    cloud: its RTSP front (x-iec62676-rtsp-base) or the device's RTSP-over-HTTP path under the
    forwarded base; a malformed front header is ignored, never copied."""
    front = {**PROXY, "x-iec62676-rtsp-base": RTSP_FRONT}
    assert stream_uri(media, "RTSP", headers=front) == RTSP_FRONT + "/main"
    assert stream_uri(media, "RtspUnicast", "sub#2", headers={**front, "x-iec62676-rtsp-base": RTSP_FRONT + "/"}) == (
        RTSP_FRONT + "/sub%232")
    assert stream_uri(media, "RtspOverHttp", headers=front) == "http://cloud.example:8080/devices/cam-7/onvif/rtsp/main"
    assert stream_uri(media, "RtspOverHttp", "sub#2", headers={**PROXY, "X-Forwarded-Proto": "https"}) == (
        "https://cloud.example:8080/devices/cam-7/onvif/rtsp/sub%232")
    for bad in ("http://127.0.0.1:8554/devices/cam-7", "rtsp://user:pw@evil.example/x", "rtsp://", "garbage",
                "rtsp://h/x?y=1"):
        status, chain, _ = fault(media, "<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol>"
                                        "<tr2:ProfileToken>main</tr2:ProfileToken></tr2:GetStreamUri>",
                                 headers={**PROXY, "x-iec62676-rtsp-base": bad})
        assert (status, chain) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidStreamSetup"]), bad


def test_snapshot_uri_points_at_the_device_relay_anx_b_1(media: str) -> None:
    """ANX-B-1: GetSnapshotUri answers the device's own snapshot relay under the request's address (the
    camera's snapshot URL never leaves the device), also through the cloud; a source without a snapshot
    faults env:Receiver/ter:ActionNotSupported."""
    body = "<tr2:GetSnapshotUri><tr2:ProfileToken>{}</tr2:ProfileToken></tr2:GetSnapshotUri>"
    base = media.rsplit(MEDIA2_PATH, 1)[0]
    assert ok(media, body.format("main")).findtext("tr2:Uri", namespaces=NS) == base + "/onvif/snapshot/main"
    assert ok(media, body.format("main"), headers=PROXY).findtext("tr2:Uri", namespaces=NS) == (
        "http://cloud.example:8080/devices/cam-7/onvif/snapshot/main")
    status, chain, _ = fault(media, body.format("sub#2"))
    assert (status, chain) == (500, ["env:Receiver", "ter:ActionNotSupported"])


# -- access classes -------------------------------------------------------------------------------

def test_access_classes_anonymous_user_sec_1_sec_3(media: str) -> None:
    """SEC-1, SEC-3: GetProfiles, GetStreamUri and GetSnapshotUri are READ_MEDIA: refused to an
    anonymous caller with ter:NotAuthorized, allowed to a User; the table is ONVIF's."""
    assert OPERATION_ACCESS == {(TR2, "GetServiceCapabilities"): "PRE_AUTH", (TR2, "GetProfiles"): "READ_MEDIA",
                                (TR2, "GetStreamUri"): "READ_MEDIA", (TR2, "GetSnapshotUri"): "READ_MEDIA"}
    bodies = ["<tr2:GetProfiles/>",
              ("<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>main</tr2:ProfileToken>"
               "</tr2:GetStreamUri>"),
              "<tr2:GetSnapshotUri><tr2:ProfileToken>main</tr2:ProfileToken></tr2:GetSnapshotUri>"]
    for body in bodies:
        status, chain, _ = fault(media, body, user=None)
        assert status in (400, 401) and chain == ["env:Sender", "ter:NotAuthorized"], body
        ok(media, body, user=USER)
        ok(media, body, user=ADMIN)
    status, chain, _ = fault(media, bodies[0], user=(USER[0], "wrong"))
    assert chain == ["env:Sender", "ter:NotAuthorized"]


def wsgi_call(app: Any, body: str, **environ: Any) -> tuple[str, etree._Element]:
    return call_wsgi(app, soap_environ(envelope(body), MEDIA2_PATH, **environ))


def test_uplink_level_decides_without_credentials_sec_4_upl_12(tmp_path: Path) -> None:
    """SEC-4, UPL-12: a request tunnelled over a User-level uplink may read media with no credentials;
    one whose uplink level grants no READ_MEDIA (an unknown level) is refused."""
    with DeviceStore(tmp_path / "d") as store:
        store.put_media_source(MAIN)
        app = build_device_app(UplinkServiceContext(store=store))
        body = ("<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>main</tr2:ProfileToken>"
                "</tr2:GetStreamUri>")
        status, root = wsgi_call(app, body, **{ENVIRON_UPLINK_LEVEL: "User"})
        assert status == "200 OK"
        assert root.findtext("env:Body/tr2:GetStreamUriResponse/tr2:Uri", namespaces=NS) == MAIN.rtsp_url
        status, root = wsgi_call(app, body, **{ENVIRON_UPLINK_LEVEL: "Guest"})
        assert fault_chain(root) == ["env:Sender", "ter:NotAuthorized"]


def test_rtsp_websocket_uri_where_the_uplink_serves_it_str_3(tmp_path: Path) -> None:
    """STR-3: RTSPWebSocketUri is announced to a request that came over an uplink (marked with its UserLevel)
    straight from the cloud: rtsp_websocket_path under the request's base, wss for https; not on the direct
    port, not through the cloud's HTTP proxy (no WebSocket there), not when the path is unset."""
    with DeviceStore(tmp_path / "d") as store:
        store.put_media_source(MAIN)
        app = build_device_app(UplinkServiceContext(store=store))
        assert app.media2 is not None and app.media2.rtsp_websocket_path == "/onvif/rtsp/"

        def ws_uri(**environ: Any) -> str | None:
            status, root = wsgi_call(app, "<tr2:GetServiceCapabilities/>", **environ)
            assert status == "200 OK"
            response = root.find("env:Body", NS)[0]
            schemas.validate(response, "media2")
            return response.find("tr2:Capabilities/tr2:StreamingCapabilities", NS).get("RTSPWebSocketUri")

        uplink = {ENVIRON_UPLINK_LEVEL: ["User"], "wsgi.url_scheme": "https", "HTTP_HOST": "cam-7"}
        assert ws_uri() is None
        assert ws_uri(**uplink) == "wss://cam-7/onvif/rtsp/"
        assert ws_uri(**uplink, HTTP_X_FORWARDED_HOST="cloud.example", HTTP_X_FORWARDED_PROTO="https",
                      HTTP_X_FORWARDED_PREFIX="/devices/cam-7") is None
        app.media2.rtsp_websocket_path = None
        assert ws_uri(**uplink) is None


# -- the WSDL and clients (every answer against the XSD: test_media2_dispatch.py) --------------------

def test_wsdl_binding_and_soap_actions_anx_b_1() -> None:
    """ANX-B-1: Media2Binding on port type Media2, SOAP 1.2 document/literal, soapAction = namespace +
    operation, one operation per served method."""
    wsdl_ns = "http://schemas.xmlsoap.org/wsdl/"
    soap12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
    doc = etree.parse(str(schemas.wsdl_path("media2")))
    binding = doc.find(f"{{{wsdl_ns}}}binding")
    assert (binding.get("name"), binding.get("type")) == ("Media2Binding", "tr2:Media2")
    actions = {op.get("name"): op.find(f"{{{soap12}}}operation").get("soapAction")
               for op in binding.findall(f"{{{wsdl_ns}}}operation")}
    assert actions == {name: f"{TR2}/{name}" for _, name in OPERATION_ACCESS}


def test_zeep_client_on_our_wsdl_direct_anx_b_1(media: str) -> None:
    """ANX-B-1: plain zeep (strict) built from wsdl/media2.wsdl drives every operation and reads the
    fault subcodes."""
    from zeep.wsse.username import UsernameToken

    settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_external=True)
    client = zeep.Client(str(schemas.wsdl_path("media2")), settings=settings,
                         wsse=UsernameToken(*USER, use_digest=True))
    service = client.create_service(f"{{{TR2}}}Media2Binding", media)
    caps = service.GetServiceCapabilities()
    assert (caps.ProfileCapabilities.MaximumNumberOfProfiles, caps.StreamingCapabilities.RTSPStreaming) == (2, True)
    profiles = service.GetProfiles(Type=["All"])
    assert [(p.token, p.Name, p.Configurations.VideoEncoder.Encoding) for p in profiles] == [
        ("main", "Main stream", "H264"), ("sub#2", "Sub stream", "H265")]
    assert service.GetStreamUri(Protocol="RTSP", ProfileToken="main") == MAIN.rtsp_url
    assert service.GetSnapshotUri(ProfileToken="main") == media.rsplit(MEDIA2_PATH, 1)[0] + "/onvif/snapshot/main"
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.GetStreamUri(Protocol="RtspsUnicast", ProfileToken="main")
    assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "InvalidStreamSetup"]


async def check_onvif_zeep_async(host: str, port: int, device_base: str) -> dict[str, Any]:
    """onvif-zeep-async, unmodified: bootstrap with ONVIFCamera, then its ONVIFService on our Media2 WSDL
    at the address GetServices gave; returns what the Media2 calls answered."""
    import os

    import onvif
    from onvif import ONVIFCamera, ONVIFService

    cam = ONVIFCamera(host, port, *USER, os.path.join(os.path.dirname(onvif.__file__), "wsdl"), no_cache=True,
                      adjust_time=True)
    try:
        await asyncio.wait_for(cam.update_xaddrs(), CALL_TIMEOUT)
        xaddr = cam.xaddrs[TR2]
        assert xaddr == device_base + MEDIA2_PATH
        service = ONVIFService(xaddr, *USER, str(schemas.wsdl_path("media2")), no_cache=True, dt_diff=cam.dt_diff,
                               binding_name=f"{{{TR2}}}Media2Binding")
        await service.setup()
        try:
            request = service.create_type("GetProfiles")
            request.Type = ["All"]
            profiles = await asyncio.wait_for(service.GetProfiles(request), CALL_TIMEOUT)
            out: dict[str, Any] = {"profiles": [
                (p.token, p.Name, p.Configurations.VideoEncoder.Encoding,
                 p.Configurations.VideoEncoder.Resolution.Width) for p in profiles]}
            for protocol in ("RTSP", "RtspOverHttp"):
                request = service.create_type("GetStreamUri")
                request.Protocol, request.ProfileToken = protocol, "main"
                try:
                    out[protocol] = await asyncio.wait_for(service.GetStreamUri(request), CALL_TIMEOUT)
                except zeep.exceptions.Fault as exc:
                    out[protocol] = [q.localname for q in exc.subcodes]
            return out
        finally:
            await service.close()
    finally:
        await cam.close()


async def test_onvif_zeep_async_direct_anx_b_1(media: str, device: RunningDevice) -> None:
    """ANX-B-1: onvif-zeep-async finds Media2 through GetServices, lists the profiles with their encoder
    and gets the camera's own stream URI on direct access."""
    parts = urlsplit(device.base)
    got = await check_onvif_zeep_async(str(parts.hostname), int(parts.port or 80), device.base)
    assert got == {"profiles": [("main", "Main stream", "H264", 1280), ("sub#2", "Sub stream", "H265", 0)],
                   "RTSP": MAIN.rtsp_url, "RtspOverHttp": ["InvalidArgVal", "InvalidStreamSetup"]}


def test_onvif_zeep_async_through_cloud_proxy_str_1_anx_b_1(tmp_path: Path) -> None:
    """STR-1, ANX-B-1, UPL-12: the same client through the cloud's HTTP proxy to a device reached only over
    its User-level uplink: profiles listed, RtspOverHttp points back through the cloud, and RTSP is refused
    while this cloud runs no RTSP front (no x-iec62676-rtsp-base)."""
    from iec62676_2_33.testing.harness import RunningCloud, UplinkPki, seed_device
    from iec62676_2_33.testing.harness import RunningDevice as Device

    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    try:
        seed_device(tmp_path / "dev", certs, "cam-m", [(cloud.uplink_url(), ("User",))])
        with DeviceStore(tmp_path / "dev") as store:
            store.put_user(*USER, "User")
            store.put_media_source(MAIN)
            store.put_media_source(SUB)
        device = Device(tmp_path / "dev", listen=False)
        try:
            cloud.wait_for("cam-m")
            assert cloud.proxy_url is not None
            base = f"{cloud.proxy_url}/devices/cam-m"
            port = int(urlsplit(cloud.proxy_url).port or 80)
            # onvif-zeep-async appends ":<port>/onvif/device_service" itself (test_interop_onvif_clients.py)
            got = asyncio.run(check_onvif_zeep_async(f"{base}/onvif/device_service#", port, base))
            assert got == {"profiles": [("main", "Main stream", "H264", 1280), ("sub#2", "Sub stream", "H265", 0)],
                           "RTSP": ["InvalidArgVal", "InvalidStreamSetup"],
                           "RtspOverHttp": f"{base}/onvif/rtsp/main"}
        finally:
            device.stop()
    finally:
        cloud.stop()
