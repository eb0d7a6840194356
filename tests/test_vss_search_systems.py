"""ANX-B-3, ANX-B-5, GEN-1, ADR-2, ADR-4, ADR-6: Recording Search through a VSS whose search scope names several
systems — FindRecordings and FindEvents naming tokens of two lower systems (and of the VSS itself) run as one joint
search on exactly those systems, each asked with its own scope entries only (prefix stripped), the results prefixed
and events in time order; the RecordingInformation's SourceId and Address adapted so that SourceId names the source
by the token the VSS exposes (the camera's resource there) and Address is the VSS's own.

Real parts on loopback: three devices (``run_device``) with recordings made by ffmpeg and a lower system that is
down, a site VSS with a recording of its own and a regional VSS above it (``run_vss``), raw SOAP 1.2 with
WS-Security, a resource query, every wait bounded."""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from helpers import fault_chain
from lxml import etree
from recording_env import T0, make_video, needs_ffmpeg, stamp
from vss_env import ADMIN, NEAR, add_lower, seed, soap, start_device, start_vss

from iec62676_2_33 import schemas
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.recordings import RecordingConfig
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.domain.subscriptions import format_datetime
from iec62676_2_33.namespaces import SOAP_ENV, TT
from iec62676_2_33.query import ResourceQueryClient
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.recording_files import save_recording_configs
from iec62676_2_33.services.media2 import TR2
from iec62676_2_33.services.recording import SEARCH_PATH, TSE
from iec62676_2_33.testing.harness import wait_until
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.runtime import VssOptions

pytestmark = needs_ffmpeg

NS = {"env": SOAP_ENV, "tse": TSE, "tt": TT}
#: Each device's recordings: token -> (source profile, start offset from T0 in seconds).
DEVICES = {
    "cam": {"rec-a": ("main", 0), "rec-b": ("side", 30)},
    "yard": {"rec-a": ("main", 10), "rec-b": ("side", 40)},
    "spare": {"rec-a": ("main", 50)},
}
#: The site VSS's own recording.
OWN = {"lobby-rec": ("lobby", 20)}
#: cam's profile ``main`` and its VideoSource resource (the device names its resources with its own prefix).
CAMERA = MediaSource(token="main", name="Gate camera", rtsp_url="rtsp://127.0.0.1:9/main")
GATE = Resource("cam:main", "VideoSource", name="Gate camera", location=NEAR)
SECONDS = 4


@dataclass
class Sites:
    site: str
    regional: str
    devices: dict[str, str]


def _recordings(data: Path, video: Path, recordings: dict[str, tuple[str, int]]) -> None:
    configs = []
    for token, (source, offset) in recordings.items():
        folder = data.parent / f"{data.name}-{token}"
        folder.mkdir()
        shutil.copyfile(video, folder / f"{token}_{stamp(T0 + offset)}.mp4")  # the name carries the start
        configs.append(RecordingConfig(token=token, source_token=source, folder=str(folder)))
    save_recording_configs(data, configs)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    """Devices cam, yard and spare behind a site VSS (with a recording of its own), the site behind a regional VSS."""
    root = tmp_path_factory.mktemp("vss-search")
    video = root / "video.mp4"
    make_video(video, SECONDS)
    services: list[BackgroundService] = []
    try:
        devices = {}
        for name, recordings in DEVICES.items():
            seed(root / name, **({"sources": (CAMERA,), "resources": (GATE,)} if name == "cam" else {}))
            _recordings(root / name, video, recordings)
            service, devices[name] = start_device(root / name)
            services.append(service)
        seed(root / "site")
        _recordings(root / "site", video, OWN)
        for name, base in devices.items():
            add_lower(root / "site", LowerSystem(prefix=name, url=f"{base}/onvif/device_service",
                                                 username=ADMIN[0], password=ADMIN[1]))
        with socket.socket() as unused:  # a lower system that is down: nothing listens at its address
            unused.bind(("127.0.0.1", 0))
            add_lower(root / "site", LowerSystem(prefix="down", url=f"http://127.0.0.1:{unused.getsockname()[1]}"
                                                 "/onvif/device_service", username=ADMIN[0], password=ADMIN[1]))
        service, site = start_vss(root / "site", VssOptions(timeout=10, mirror_retry=0.3))
        services.append(service)
        seed(root / "regional")
        add_lower(root / "regional", LowerSystem(prefix="site", url=f"{site}/onvif/device_service",
                                                 username=ADMIN[0], password=ADMIN[1]))
        service, regional = start_vss(root / "regional", VssOptions(timeout=15, mirror_retry=0.3))
        services.append(service)
        yield Sites(site, regional, devices)
    finally:
        for service in reversed(services):
            service.stop()


def _op(body: str) -> str:
    return re.sub(r"^<([\w:]+)", rf'<\1 xmlns:tse="{TSE}"', body, count=1)


def call(base: str, body: str) -> etree._Element:
    status, root = soap(base, SEARCH_PATH, _op(body))
    assert status == 200, etree.tostring(root)[:2000]
    response = root.find("env:Body", NS)[0]
    schemas.validate(response, "search")
    return response


def refused(base: str, body: str) -> list[str]:
    status, root = soap(base, SEARCH_PATH, _op(body))
    assert status in (400, 500)
    return fault_chain(root)


def scope(*sources: str, recordings: tuple[str, ...] = ()) -> str:
    return ("<tse:Scope>" + "".join(f"<tt:IncludedSources><tt:Token>{s}</tt:Token></tt:IncludedSources>"
                                    for s in sources)
            + "".join(f"<tt:IncludedRecordings>{r}</tt:IncludedRecordings>" for r in recordings) + "</tse:Scope>")


def find_recordings(base: str, scope_xml: str) -> str:
    token = call(base, f"<tse:FindRecordings>{scope_xml}<tse:KeepAliveTime>PT30S</tse:KeepAliveTime>"
                       "</tse:FindRecordings>").findtext("tse:SearchToken", namespaces=NS)
    assert token is not None
    return token


def recording_results(base: str, token: str) -> list[etree._Element]:
    result = call(base, f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}</tse:SearchToken>"
                        "</tse:GetRecordingSearchResults>").find("tse:ResultList", NS)
    assert result.findtext("tt:SearchState", namespaces=NS) == "Completed"
    return result.findall("tt:RecordingInformation", NS)


def end(base: str, token: str) -> None:
    call(base, f"<tse:EndSearch><tse:SearchToken>{token}</tse:SearchToken></tse:EndSearch>")


def test_find_recordings_over_two_lower_systems_anx_b_3(sites: Sites) -> None:
    """ANX-B-3, ADR-2, GEN-1: a FindRecordings naming a source of cam and a recording of yard is one joint search
    over those two: cam is asked for its source ``main`` only and yard for its recording ``rec-b`` only (each
    device has ``rec-a`` of ``main`` and ``rec-b`` of ``side``: a system that saw the other's entry would add
    one), spare and the VSS's own recording are not searched; EndSearch ends the joint search."""
    token = find_recordings(sites.site, scope("cam:main", recordings=("yard:rec-b",)))
    assert token.startswith("joint-")
    found = sorted(str(r.findtext("tt:RecordingToken", namespaces=NS)) for r in recording_results(sites.site, token))
    assert found == ["cam:rec-a", "yard:rec-b"]
    end(sites.site, token)
    assert refused(sites.site, f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}</tse:SearchToken>"
                               "</tse:GetRecordingSearchResults>") == ["env:Sender", "ter:InvalidArgVal",
                                                                       "ter:InvalidToken"]


def test_a_named_system_that_is_down_is_left_out_anx_b_3(sites: Sites) -> None:
    """ANX-B-3, GEN-1: a scope naming cam and a lower system that cannot be reached answers cam's recording (the
    one that is down is left out, within the deadline), and the joint search ends as any other."""
    token = find_recordings(sites.site, scope("cam:main", "down:main"))
    assert token.startswith("joint-")
    assert [r.findtext("tt:RecordingToken", namespaces=NS) for r in recording_results(sites.site, token)] == [
        "cam:rec-a"]
    end(sites.site, token)


def test_find_events_over_lower_systems_and_the_vss_in_time_order_anx_b_3(sites: Sites) -> None:
    """ANX-B-3, GEN-1: FindEvents naming sources of yard, cam and the VSS itself finds the recording-history events
    of exactly those three recordings, merged in time order (backward for a backward search), their recording
    tokens prefixed (the VSS's own unprefixed)."""
    expected = sorted([(T0, "cam:rec-a"), (T0 + SECONDS, "cam:rec-a"), (T0 + 10, "yard:rec-a"),
                       (T0 + 10 + SECONDS, "yard:rec-a"), (T0 + 20, "lobby-rec"), (T0 + 20 + SECONDS, "lobby-rec")])
    for start, finish in ((T0 - 60, T0 + 120), (T0 + 120, T0 - 60)):
        token = call(sites.site, f"<tse:FindEvents><tse:StartPoint>{format_datetime(start)}</tse:StartPoint>"
                                 f"<tse:EndPoint>{format_datetime(finish)}</tse:EndPoint>"
                                 f"{scope('yard:main', 'lobby', 'cam:main')}<tse:SearchFilter/>"
                                 "<tse:IncludeStartState>false</tse:IncludeStartState>"
                                 "<tse:KeepAliveTime>PT30S</tse:KeepAliveTime></tse:FindEvents>"
                     ).findtext("tse:SearchToken", namespaces=NS)
        result = call(sites.site, f"<tse:GetEventSearchResults><tse:SearchToken>{token}</tse:SearchToken>"
                                  "</tse:GetEventSearchResults>").find("tse:ResultList", NS)
        assert result.findtext("tt:SearchState", namespaces=NS) == "Completed"
        events = [(r.findtext("tt:Time", namespaces=NS), r.findtext("tt:RecordingToken", namespaces=NS))
                  for r in result.findall("tt:Result", NS)]
        want = [(format_datetime(t), rec) for t, rec in expected]
        assert [t for t, _ in events] == [t for t, _ in (want if start < finish else want[::-1])]
        assert sorted(events) == sorted(want)
        end(sites.site, str(token))


def test_a_scope_of_several_systems_two_levels_up_gen_1(sites: Sites) -> None:
    """GEN-1, ADR-4, ADR-6: at the regional VSS the devices' tokens keep their prefixes (the client receives them
    from an unscoped search there first) and are routed to the site VSS, which splits the scope among the
    devices — the same two recordings, one level further up."""
    token = find_recordings(sites.regional, "<tse:Scope/>")
    received = {str(r.findtext("tt:RecordingToken", namespaces=NS)) for r in recording_results(sites.regional, token)}
    assert received == {"cam:rec-a", "cam:rec-b", "yard:rec-a", "yard:rec-b", "spare:rec-a", "site:lobby-rec"}
    end(sites.regional, token)
    token = find_recordings(sites.regional, scope("cam:main", recordings=("yard:rec-b",)))
    found = sorted(str(r.findtext("tt:RecordingToken", namespaces=NS))
                   for r in recording_results(sites.regional, token))
    assert found == ["cam:rec-a", "yard:rec-b"]
    end(sites.regional, token)


def test_scope_refusals_adr_6(sites: Sites) -> None:
    """ADR-6, ADR-3: a scope naming a known and an unknown prefix, or a token over 64 characters, is refused
    before any system is asked; a scope of the VSS's own tokens only is the VSS's own search."""
    find = "<tse:FindRecordings>{}<tse:KeepAliveTime>PT30S</tse:KeepAliveTime></tse:FindRecordings>"
    assert refused(sites.site, find.format(scope("cam:main", "gone:main"))) == ["env:Sender", "ter:InvalidArgVal"]
    assert refused(sites.site, find.format(scope("cam:main", "cam:" + "x" * 61))) == ["env:Sender",
                                                                                      "ter:InvalidArgVal"]
    token = find_recordings(sites.site, scope("lobby"))
    assert not token.startswith("joint-")
    assert [r.findtext("tt:RecordingToken", namespaces=NS) for r in recording_results(sites.site, token)] == [
        "lobby-rec"]
    end(sites.site, token)


def _sources(infos: list[etree._Element]) -> dict[str, tuple[str | None, str | None, str | None]]:
    """Recording token -> (SourceId, Address, VideoSourceToken)."""
    return {str(i.findtext("tt:RecordingToken", namespaces=NS)): (
        i.findtext("tt:Source/tt:SourceId", namespaces=NS), i.findtext("tt:Source/tt:Address", namespaces=NS),
        i.findtext("tt:Source/tt:VideoSourceToken", namespaces=NS)) for i in infos}


def test_recording_sources_adapted_anx_b_5(sites: Sites) -> None:
    """ANX-B-5, ANX-B-3, ADR-2, ADR-6: through the site VSS (a search routed to one device, a joint search over
    two, GetRecordingInformation) a recording's SourceId is the token the VSS exposes for its source,
    percent-encoded, and its Address the VSS's own instead of the device's; the VSS's own recording keeps its
    own."""
    token = find_recordings(sites.site, scope("cam:main"))
    assert token.startswith("cam:")
    assert _sources(recording_results(sites.site, token)) == {"cam:rec-a": ("cam%3Amain", sites.site, "cam:main")}
    end(sites.site, token)
    token = find_recordings(sites.site, scope("lobby", recordings=("cam:rec-b", "yard:rec-a")))
    assert _sources(recording_results(sites.site, token)) == {
        "cam:rec-b": ("cam%3Aside", sites.site, "cam:side"), "yard:rec-a": ("yard%3Amain", sites.site, "yard:main"),
        "lobby-rec": ("lobby", sites.site, "lobby")}
    end(sites.site, token)
    info = call(sites.site, "<tse:GetRecordingInformation><tse:RecordingToken>spare:rec-a</tse:RecordingToken>"
                            "</tse:GetRecordingInformation>").find("tse:RecordingInformation", NS)
    assert _sources([info]) == {"spare:rec-a": ("spare%3Amain", sites.site, "spare:main")}
    assert all(sites.devices[name] not in etree.tostring(info).decode() for name in sites.devices)


def test_source_id_finds_the_camera_at_the_top_anx_b_5(sites: Sites) -> None:
    """ANX-B-5, GEN-1, ADR-4: two levels up, the regional VSS answers the same SourceId (the device's prefix
    is kept) with its own Address, the site's own recording under the site's prefix; the token SourceId names is
    the camera's VideoSource resource in a resource query at the regional VSS and its Media2 profile there."""
    token = find_recordings(sites.regional, "<tse:Scope/>")
    found = _sources(recording_results(sites.regional, token))
    end(sites.regional, token)
    assert found["cam:rec-a"] == ("cam%3Amain", sites.regional, "cam:main")
    assert found["site:lobby-rec"] == ("site%3Alobby", sites.regional, "site:lobby")
    assert {address for _, address, _ in found.values()} == {sites.regional}
    source = unquote(str(found["cam:rec-a"][0]))
    client = ResourceQueryClient(f"{sites.regional}/onvif/event_service", username=ADMIN[0], password=ADMIN[1],
                                 pull_timeout=1.0)

    def video_sources() -> dict[str, str | None] | None:
        with client.subscribe(["VideoSource"]) as subscription:
            return {r.token: r.name for r in subscription.resources()} or None

    assert wait_until(video_sources, 30, interval=0.3, what="the video sources at the regional VSS") == {
        source: GATE.name}
    status, root = soap(sites.regional, "/onvif/media2_service", "<tr2:GetProfiles><tr2:Type>All</tr2:Type>"
                                                                 "</tr2:GetProfiles>")
    assert status == 200
    assert [p.get("token") for p in root.iterfind(f".//{{{TR2}}}Profiles")] == [source]
