"""STR-1, STR-2, STR-3, ANX-B-1, ANX-B-2, SEC-1, SEC-3: every answer of the Media2 service, over a corpus of
requests, against the authored XSD.

The Media2 service writes its answers with lxml (no Spyne models to compare with the XSD), so the XSD
itself is the check: a corpus of requests -- every operation, with and without its optional arguments
(Token, each Type), forwarded headers with and without the cloud's RTSP front, a request over an uplink,
WS-Addressing headers, and the faults (bad arguments, unknown profiles, refused protocols, an unknown
operation, no credentials) -- runs through the device application (access control, then the operation
table); every 200 answer validates against ``xsd/media2.xsd`` and its key values are asserted; every
fault has its code chain and HTTP status. The answers carry no SOAP Header, a profile's PTZ configuration
is the PTZ service's own, and the operation that runs is the one access control parsed, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FAULT, call_wsgi, check_dispatched, count_parses, fault_chain, soap_environ
from lxml import etree

from iec62676_2_33 import schemas
from iec62676_2_33.domain.media import MediaSource, StoreMediaBackend
from iec62676_2_33.domain.ptz import PtzNode, SimulatedPtz
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TT
from iec62676_2_33.security.middleware import ENVIRON_UPLINK_LEVEL
from iec62676_2_33.services.app import DeviceApplication, build_device_app
from iec62676_2_33.services.media2 import MEDIA2_PATH, TR2, Media2ServiceContext, media2_endpoint
from iec62676_2_33.services.ptz import PTZ_PATH, TPTZ
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore

WSA = "http://www.w3.org/2005/08/addressing"
NS = {"env": SOAP_ENV, "tr2": TR2, "tt": TT, "tds": TDS, "tptz": TPTZ}
MAIN = MediaSource(token="main", name="Main stream", rtsp_url="rtsp://127.0.0.1:8554/cam/main",
                   snapshot_url="http://127.0.0.1:8080/snap/main.jpg", encoding="H264", width=1280, height=720,
                   username="cam-admin", password="cam-secret")
SUB = MediaSource(token="sub#2", name="Sub & <stream>", rtsp_url="rtsp://127.0.0.1:8554/cam/sub", encoding="H265")
HEAD = PtzNode(token="head-1", name="Head 1", profile_token="main", default_timeout=12.5)
USER = {ENVIRON_UPLINK_LEVEL: "User"}
PROXY = {"HTTP_X_FORWARDED_HOST": "cloud.example:8080", "HTTP_X_FORWARDED_PROTO": "https",
         "HTTP_X_FORWARDED_PREFIX": "/devices/cam-7", **USER}
RTSP_FRONT = "rtsp://127.0.0.1:8554/devices/cam-7"
FRONT = {**PROXY, "HTTP_X_IEC62676_RTSP_BASE": RTSP_FRONT}
UPLINK = {ENVIRON_UPLINK_LEVEL: ["User"], "wsgi.url_scheme": "https", "HTTP_HOST": "cam-7"}
THERE = "https://cloud.example:8080/devices/cam-7"


def envelope(body: str, header: str = "") -> bytes:
    head = f"<env:Header>{header}</env:Header>" if header else ""
    return (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tr2="{TR2}" '
            f'xmlns:tptz="{TPTZ}" xmlns:tds="{TDS}" xmlns:wsa="{WSA}">{head}<env:Body>{body}</env:Body></env:Envelope>').encode()


def wsgi_environ(body: str, header: str = "", **environ: Any) -> dict[str, Any]:
    return soap_environ(envelope(body, header), MEDIA2_PATH, **environ)


def call(app: Any, body: str, header: str = "", **environ: Any) -> tuple[int, etree._Element]:
    status, root = call_wsgi(app, wsgi_environ(body, header, **environ))
    return int(status.split()[0]), root


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceApplication]:
    """The device application (access control on every route) with two sources and a PTZ head on ``main``."""
    with DeviceStore(tmp_path / "d") as store:
        store.put_media_source(MAIN)
        store.put_media_source(SUB)
        yield build_device_app(UplinkServiceContext(store=store), ptz=SimulatedPtz([HEAD], 0.0))


def children(element: etree._Element) -> list[tuple[str, str | None]]:
    return [(etree.QName(c).localname, c.text) for c in element]


# -- the checks of the answers ------------------------------------------------------------------

def capabilities(ws_uri: str | None = None) -> Callable[[etree._Element], None]:
    def check(response: etree._Element) -> None:
        caps = response.find("tr2:Capabilities", NS)
        assert [etree.QName(c).localname for c in caps] == ["ProfileCapabilities", "StreamingCapabilities"]
        assert dict(caps.attrib) == {"SnapshotUri": "true"}
        assert dict(caps.find("tr2:ProfileCapabilities", NS).attrib) == {
            "MaximumNumberOfProfiles": "2", "ConfigurationsSupported": "VideoSource VideoEncoder PTZ"}
        streaming = {"RTSPStreaming": "true", "RTPMulticast": "false", "RTP_RTSP_TCP": "true",
                     "NonAggregateControl": "false"}
        if ws_uri is not None:
            streaming["RTSPWebSocketUri"] = ws_uri
        assert dict(caps.find("tr2:StreamingCapabilities", NS).attrib) == streaming
    return check


def video_source(config: etree._Element, token: str, name: str, width: int, height: int) -> None:
    assert config.get("token") == token
    assert children(config)[:3] == [("Name", name), ("UseCount", "1"), ("SourceToken", token)]
    assert dict(config.find("tt:Bounds", NS).attrib) == {"x": "0", "y": "0", "width": str(width),
                                                          "height": str(height)}


def video_encoder(config: etree._Element, token: str, name: str, encoding: str, width: int, height: int) -> None:
    assert config.get("token") == token
    assert [etree.QName(c).localname for c in config] == ["Name", "UseCount", "Encoding", "Resolution", "Quality"]
    assert children(config)[:3] == [("Name", name), ("UseCount", "1"), ("Encoding", encoding)]
    assert children(config.find("tt:Resolution", NS)) == [("Width", str(width)), ("Height", str(height))]
    assert config.findtext("tt:Quality", namespaces=NS) == "0.0"


def ptz(config: etree._Element) -> None:
    assert config.get("token") == HEAD.token
    assert children(config)[:3] == [("Name", HEAD.name), ("UseCount", "1"), ("NodeToken", HEAD.token)]
    assert config.findtext("tt:DefaultPTZTimeout", namespaces=NS) == "PT12.5S"


#: The configurations each source has, by kind (``main`` also has the head's PTZ configuration).
KINDS: dict[str, dict[str, Callable[[etree._Element], None]]] = {
    "main": {"VideoSource": lambda c: video_source(c, "main", MAIN.name, 1280, 720),
             "VideoEncoder": lambda c: video_encoder(c, "main", MAIN.name, "H264", 1280, 720), "PTZ": ptz},
    "sub#2": {"VideoSource": lambda c: video_source(c, "sub#2", SUB.name, 0, 0),
              "VideoEncoder": lambda c: video_encoder(c, "sub#2", SUB.name, "H265", 0, 0)},
}
NAMES = {"main": MAIN.name, "sub#2": SUB.name}


def profiles(*expected: tuple[str, tuple[str, ...]]) -> Callable[[etree._Element], None]:
    """``expected``: (profile token, the kinds of configuration it carries, in the XSD's order)."""
    def check(response: etree._Element) -> None:
        listed = response.findall("tr2:Profiles", NS)
        assert len(listed) == len(response)
        assert [p.get("token") for p in listed] == [token for token, _ in expected]
        for profile, (token, kinds) in zip(listed, expected, strict=True):
            assert profile.get("fixed") == "true"
            assert profile.findtext("tr2:Name", namespaces=NS) == NAMES[token]
            configurations = profile.find("tr2:Configurations", NS)
            if not kinds:
                assert configurations is None
                continue
            assert [etree.QName(c).localname for c in configurations] == list(kinds)
            for config in configurations:
                KINDS[token][etree.QName(config).localname](config)
    return check


def uri(expected: str) -> Callable[[etree._Element], None]:
    def check(response: etree._Element) -> None:
        assert children(response) == [("Uri", expected)]
    return check


def get_profiles(*parts: str) -> str:
    return "<tr2:GetProfiles>" + "".join(parts) + "</tr2:GetProfiles>"


def token(value: str) -> str:
    return f"<tr2:Token>{value}</tr2:Token>"


def kind(value: str) -> str:
    return f"<tr2:Type>{value}</tr2:Type>"


def stream(protocol: str, profile: str = "main") -> str:
    return (f"<tr2:GetStreamUri><tr2:Protocol>{protocol}</tr2:Protocol><tr2:ProfileToken>{profile}"
            "</tr2:ProfileToken></tr2:GetStreamUri>")


def snapshot(profile: str) -> str:
    return f"<tr2:GetSnapshotUri><tr2:ProfileToken>{profile}</tr2:ProfileToken></tr2:GetSnapshotUri>"


VIDEO = ("VideoSource", "VideoEncoder")
NO_PROFILE = ["env:Sender", "ter:InvalidArgVal", "ter:NoProfile"]
STREAM_SETUP = ["env:Sender", "ter:InvalidArgVal", "ter:InvalidStreamSetup"]
INVALID_ARGS = ["env:Sender", "ter:InvalidArgs"]

#: (request body, header, environ, expected status, answer tag or FAULT, check of the answer or fault chain)
CORPUS: list[tuple[str, str, dict[str, Any], int, str, Any]] = [
    ("<tr2:GetServiceCapabilities/>", "", {}, 200, "GetServiceCapabilitiesResponse", capabilities()),
    ("<tr2:GetServiceCapabilities/>", "", PROXY, 200, "GetServiceCapabilitiesResponse", capabilities()),
    ("<tr2:GetServiceCapabilities/>", "", UPLINK, 200, "GetServiceCapabilitiesResponse",
     capabilities("wss://cam-7/onvif/rtsp/")),
    ("<tr2:GetServiceCapabilities/>", "", {**UPLINK, "wsgi.url_scheme": "http"}, 200,
     "GetServiceCapabilitiesResponse", capabilities("ws://cam-7/onvif/rtsp/")),
    ("<tr2:GetServiceCapabilities/>", "", {**UPLINK, "HTTP_X_FORWARDED_HOST": "cloud.example"}, 200,
     "GetServiceCapabilitiesResponse", capabilities()),
    ("<tr2:GetServiceCapabilities/>", "<wsa:MessageID>urn:uuid:1</wsa:MessageID>", {}, 200,
     "GetServiceCapabilitiesResponse", capabilities()),
    # WS-Addressing is not compared with the Body here: the Body decides what runs
    (get_profiles(), f"<wsa:Action>{TR2}/GetStreamUri</wsa:Action>", USER, 200, "GetProfilesResponse",
     profiles(("main", ()), ("sub#2", ()))),
    (get_profiles(), "", USER, 200, "GetProfilesResponse", profiles(("main", ()), ("sub#2", ()))),
    (get_profiles(kind("All")), "", USER, 200, "GetProfilesResponse",
     profiles(("main", (*VIDEO, "PTZ")), ("sub#2", VIDEO))),
    (get_profiles(kind("VideoSource")), "", USER, 200, "GetProfilesResponse",
     profiles(("main", ("VideoSource",)), ("sub#2", ("VideoSource",)))),
    (get_profiles(kind("VideoEncoder")), "", PROXY, 200, "GetProfilesResponse",
     profiles(("main", ("VideoEncoder",)), ("sub#2", ("VideoEncoder",)))),
    (get_profiles(kind("PTZ")), "", USER, 200, "GetProfilesResponse", profiles(("main", ("PTZ",)), ("sub#2", ()))),
    (get_profiles(kind("PTZ"), kind("VideoEncoder"), kind("VideoSource")), "", USER, 200, "GetProfilesResponse",
     profiles(("main", (*VIDEO, "PTZ")), ("sub#2", VIDEO))),
    (get_profiles(kind("Metadata")), "", USER, 200, "GetProfilesResponse", profiles(("main", ()), ("sub#2", ()))),
    # Type values are xs:string, compared as they are
    (get_profiles(kind(" All ")), "", USER, 200, "GetProfilesResponse", profiles(("main", ()), ("sub#2", ()))),
    (get_profiles(token("sub#2")), "", USER, 200, "GetProfilesResponse", profiles(("sub#2", ()))),
    (get_profiles(token("sub#2"), kind("All")), "", USER, 200, "GetProfilesResponse", profiles(("sub#2", VIDEO))),
    (get_profiles(token("main"), kind("PTZ")), "", USER, 200, "GetProfilesResponse", profiles(("main", ("PTZ",)))),
    (stream("RTSP"), "", USER, 200, "GetStreamUriResponse", uri(MAIN.rtsp_url)),
    (stream("RtspUnicast", "sub#2"), "", USER, 200, "GetStreamUriResponse", uri(SUB.rtsp_url)),
    (stream("RTSP"), "", FRONT, 200, "GetStreamUriResponse", uri(RTSP_FRONT + "/main")),
    (stream("RtspUnicast", "sub#2"), "", {**FRONT, "HTTP_X_IEC62676_RTSP_BASE": RTSP_FRONT + "/"}, 200,
     "GetStreamUriResponse", uri(RTSP_FRONT + "/sub%232")),
    (stream("RtspOverHttp"), "", PROXY, 200, "GetStreamUriResponse", uri(THERE + "/onvif/rtsp/main")),
    (stream("RtspOverHttp", "sub#2"), "", FRONT, 200, "GetStreamUriResponse", uri(THERE + "/onvif/rtsp/sub%232")),
    (snapshot("main"), "", USER, 200, "GetSnapshotUriResponse", uri("http://cam.local/onvif/snapshot/main")),
    (snapshot("main"), "", PROXY, 200, "GetSnapshotUriResponse", uri(THERE + "/onvif/snapshot/main")),
    # faults
    ("<tr2:GetServiceCapabilities>x</tr2:GetServiceCapabilities>", "", {}, 400, FAULT, INVALID_ARGS),
    (get_profiles(token("nope")), "", USER, 400, FAULT, NO_PROFILE),
    (get_profiles("<tr2:Token/>"), "", USER, 400, FAULT, NO_PROFILE),
    (get_profiles(token(" main ")), "", USER, 400, FAULT, NO_PROFILE),
    (get_profiles(token("x" * 65)), "", USER, 400, FAULT, INVALID_ARGS),
    (get_profiles(kind("All"), token("main")), "", USER, 400, FAULT, INVALID_ARGS),
    (get_profiles('<x:Type xmlns:x="urn:x">All</x:Type>'), "", USER, 400, FAULT, INVALID_ARGS),
    (get_profiles(), "", {}, 401, FAULT, ["env:Sender", "ter:NotAuthorized"]),
    (stream("RTSP", "nope"), "", USER, 400, FAULT, NO_PROFILE),
    # over an uplink (USER marks the request with its UserLevel): the uplink relays RTSP over HTTP
    (stream("RtspOverHttp"), "", USER, 200, "GetStreamUriResponse", uri("http://cam.local/onvif/rtsp/main")),
    (stream("RtspsUnicast"), "", USER, 400, FAULT, STREAM_SETUP),
    (stream("RtspMulticast"), "", FRONT, 400, FAULT, STREAM_SETUP),
    (stream(""), "", USER, 400, FAULT, STREAM_SETUP),
    (stream("RTSP"), "", PROXY, 400, FAULT, STREAM_SETUP),  # through the proxy, but the cloud has no RTSP front
    (stream("RTSP"), "", {**FRONT, "HTTP_X_IEC62676_RTSP_BASE": "rtsp://user:pw@evil.example/x"}, 400, FAULT,
     STREAM_SETUP),
    (("<tr2:GetStreamUri><tr2:ProfileToken>main</tr2:ProfileToken><tr2:Protocol>RTSP</tr2:Protocol>"
      "</tr2:GetStreamUri>"), "", USER, 400, FAULT, INVALID_ARGS),
    ("<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol></tr2:GetStreamUri>", "", USER, 400, FAULT, INVALID_ARGS),
    (stream("RTSP"), "", {}, 401, FAULT, ["env:Sender", "ter:NotAuthorized"]),
    (snapshot("sub#2"), "", USER, 500, FAULT, ["env:Receiver", "ter:ActionNotSupported"]),
    (snapshot("nope"), "", USER, 400, FAULT, NO_PROFILE),
    ("<tr2:GetSnapshotUri/>", "", USER, 400, FAULT, INVALID_ARGS),
    ("<tr2:GetVideoSources/>", "", USER, 500, FAULT, ["env:Receiver", "ter:ActionNotSupported"]),
    ('<x:GetProfiles xmlns:x="urn:x"/>', "", USER, 500, FAULT, ["env:Receiver", "ter:ActionNotSupported"]),
]


def test_every_answer_validates_and_carries_the_values_str_1_str_3_anx_b_1_sec_1(device: DeviceApplication) -> None:
    """STR-1, STR-2, STR-3, ANX-B-1, ANX-B-2, SEC-1, SEC-3: each request of the corpus gets its status; every
    answer validates against the authored XSD and carries the expected values; every fault its chain and
    status, and no fault echoes the camera's credentials; no answer carries a SOAP Header."""
    for body, header, environ, status, tag, check in CORPUS:
        got, root = call(device, body, header, **environ)
        assert b"cam-secret" not in etree.tostring(root)
        check_dispatched(got, root, status, TR2, tag, check, lambda answer: schemas.validate(answer, "media2"))


def test_the_ptz_configuration_is_the_ptz_services_own_anx_b_2(device: DeviceApplication) -> None:
    """ANX-B-2: the PTZ configuration in a profile is, element for element, what the PTZ service answers to
    GetConfiguration for the head (also for a second call, which reuses the serialised configuration)."""
    status, root = call(device, "<tptz:GetConfiguration><tptz:PTZConfigurationToken>head-1"
                                "</tptz:PTZConfigurationToken></tptz:GetConfiguration>", PATH_INFO=PTZ_PATH, **USER)
    assert status == 200
    own = root.find("env:Body/tptz:GetConfigurationResponse/tptz:PTZConfiguration", NS)

    def shape(element: etree._Element) -> object:
        return (dict(element.attrib), element.text, [(c.tag, shape(c)) for c in element])

    for _ in range(2):
        status, root = call(device, get_profiles(token("main"), kind("PTZ")), **USER)
        assert status == 200
        carried = root.find("env:Body/tr2:GetProfilesResponse/tr2:Profiles/tr2:Configurations/tr2:PTZ", NS)
        assert shape(carried) == shape(own)
        ptz(carried)


def test_get_services_embeds_the_capabilities_anx_b_1(device: DeviceApplication) -> None:
    """ANX-B-1: GetServices embeds tr2:Capabilities, valid against the XSD, without RTSPWebSocketUri (it is
    built from a request) even for a request that came over an uplink."""
    for environ in ({}, UPLINK):
        status, root = call(device, "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability>"
                                    "</tds:GetServices>", PATH_INFO="/onvif/device_service", **environ)
        assert status == 200
        [caps] = root.findall(f"env:Body/tds:GetServicesResponse/tds:Service[tds:Namespace='{TR2}']"
                              "/tds:Capabilities/tr2:Capabilities", NS)
        schemas.validate(caps, "media2")
        capabilities()(caps.getparent())


def test_no_sources_and_failing_firmware_str_1(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """STR-1: without sources the capabilities count none and report no snapshot, GetProfiles answers an empty
    list; a media backend that fails is env:Receiver/ter:Action and one log line, never a traceback."""
    from iec62676_2_33.security.access import operation_access_from
    from iec62676_2_33.security.middleware import AccessControlMiddleware
    from iec62676_2_33.services.media2 import OPERATION_ACCESS

    class Failing:
        def media_sources(self) -> list[MediaSource]:
            raise RuntimeError("firmware down")

        def media_source(self, token: str) -> MediaSource | None:
            raise RuntimeError("firmware down")

    with DeviceStore(tmp_path / "d") as store:
        app = build_device_app(UplinkServiceContext(store=store))
        status, root = call(app, "<tr2:GetServiceCapabilities/>")
        caps = root.find("env:Body/tr2:GetServiceCapabilitiesResponse/tr2:Capabilities", NS)
        schemas.validate(caps.getparent(), "media2")
        assert (caps.get("SnapshotUri"), caps.find("tr2:ProfileCapabilities", NS).get("MaximumNumberOfProfiles"),
                caps.find("tr2:ProfileCapabilities", NS).get("ConfigurationsSupported")) == (
            "false", "0", "VideoSource VideoEncoder")
        status, root = call(app, get_profiles(kind("All")), **USER)
        assert status == 200 and len(root.find("env:Body/tr2:GetProfilesResponse", NS)) == 0

        failing = AccessControlMiddleware(media2_endpoint(Media2ServiceContext(media=Failing())),
                                          operation_access=operation_access_from(OPERATION_ACCESS),
                                          wsse=None, digest=None)
        for body in ("<tr2:GetServiceCapabilities/>", get_profiles(), stream("RTSP"), snapshot("main")):
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                status, root = call(failing, body, **USER)
            assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:Action"])
            assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.WARNING, None)]
            assert "firmware down" in caplog.records[0].getMessage()
        # without access control in front the endpoint fails closed; a GET is 405
        endpoint = media2_endpoint(Media2ServiceContext(media=StoreMediaBackend(store)))
        status, root = call(endpoint, "<tr2:GetServiceCapabilities/>")
        assert (status, fault_chain(root)) == (500, ["env:Receiver", "ter:Action"])
        statuses: list[str] = []
        endpoint({"REQUEST_METHOD": "GET"}, lambda status, headers, exc_info=None: statuses.append(status))
        assert statuses == ["405 Method Not Allowed"]


def test_the_operation_run_is_the_one_parsed_once_sec_1(device: DeviceApplication, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-1: a Media2 request is parsed once (by the inline decision or by access control) and the
    operation that answers is the one access control decided on; a firmware backend never runs inline."""

    class Firmware:  # a media backend that is not the store's: its requests go to the worker pool
        def media_sources(self) -> list[MediaSource]:
            return [MAIN]

        def media_source(self, token: str) -> MediaSource | None:
            return MAIN if token == MAIN.token else None

    parses = count_parses(monkeypatch)
    statuses: list[str] = []
    with DeviceStore(tmp_path / "firmware") as store:
        firmware = build_device_app(UplinkServiceContext(store=store), media=Firmware())
        for app, runs_inline in ((device, True), (firmware, False)):
            for body, name in ((get_profiles(kind("All")), "GetProfiles"), (stream("RTSP"), "GetStreamUri")):
                parses.clear()
                statuses.clear()
                env = wsgi_environ(body, **USER)
                assert app.runs_inline(env) is runs_inline
                out = b"".join(app(env, lambda status, headers, exc_info=None: statuses.append(status)))
                assert statuses == ["200 OK"] and len(parses) == 1
                assert etree.fromstring(out).find("env:Body", NS)[0].tag == f"{{{TR2}}}{name}Response"
