"""ANX-B-2, ANX-B-3, ANX-B-5, GEN-1, GEN-2, ADR-2, ADR-4, ADR-6, SEC-1: PTZ, Recording Search and Replay of
lower devices through VSSs that have no heads or recordings of their own — the forwarding mounts, the
token adaption of profile, node, recording, track and search tokens (tt:JobToken routes a search back to
the system that opened it), the merged GetNodes/GetConfigurations/GetRecordingSummary, GetReplayUri
relayed by the VSS's RTSP front (ffprobe and ffmpeg read the replay through it, also from a device on an
uplink), and the forensic example of clause 7.8.2 at the top of a regional → site → device hierarchy.

Real parts on loopback: two device applications with a simulated PTZ head, recordings made by ffmpeg and
GStreamer's replay RTSP server; a site VSS and a regional VSS (``run_vss``); a ``run_device`` dialing a
VSS's uplink listener over TLS with certificates made here; every wait bounded."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ADMIN, OPERATOR, USER
from conftest import seed_device as seed_lower
from helpers import fault_chain
from lxml import etree
from recording_env import T0, make_video, replay_play, stamp
from rtsp_env import decode_frames, decoded_frames
from served_app import serve_app
from vss_env import FAR, HERE, NEAR, add_lower, seed, soap, start_vss

from iec62676_2_33 import schemas
from iec62676_2_33.domain.filters import LocationFilter
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.ptz import Axis, PtzNode, SimulatedPtz
from iec62676_2_33.domain.recordings import RecordingConfig
from iec62676_2_33.domain.registry import REGISTRY_FILE, ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.domain.subscriptions import format_datetime
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TT, WSNT
from iec62676_2_33.query import ResourceQueryClient
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud_server import CloudOptions
from iec62676_2_33.runtime.recording_files import FolderRecordingStore, save_recording_configs
from iec62676_2_33.runtime.replay_server import ReplayServer, replay_available
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.events import EventServiceContext
from iec62676_2_33.services.ptz import PTZ_PATH, TPTZ
from iec62676_2_33.services.recording import REPLAY_PATH, SEARCH_PATH, TRP, TSE
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.soap.fault import SoapFault
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, wait_until
from iec62676_2_33.testing.harness import seed_device as seed_uplink_device
from iec62676_2_33.vss.adaption import prefix_messages, token_index
from iec62676_2_33.vss.gateway import recorded_topics
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.runtime import VssOptions
from iec62676_2_33.vss.searches import JointSearches, joint_token

needs_replay = pytest.mark.skipif(not (replay_available() and shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                reason="GStreamer's RTSP server or ffmpeg/ffprobe is not installed (.ci/run)")

NS = {"env": SOAP_ENV, "tptz": TPTZ, "tse": TSE, "trp": TRP, "tt": TT, "tds": TDS, "wsnt": WSNT}
DECLARED = f'xmlns:tptz="{TPTZ}" xmlns:tse="{TSE}" xmlns:trp="{TRP}" xmlns:tds="{TDS}"'
NODE = PtzNode(token="head-1", name="Dome", profile_token="main", pan=Axis(min=-0.5, max=0.5), max_speed=0.25)
#: The VideoSource resources of the two devices (each names its resources with its own prefix).
GATE = Resource("cam:main", "VideoSource", name="Gate camera", location=NEAR)
YARD = Resource("yard:main", "VideoSource", name="Yard camera", location=FAR)
PROBE_TIMEOUT = 30.0


@dataclass
class Hierarchy:
    site: str
    regional: str
    cam_replay: str
    recordings: Path


def _op(body: str) -> str:
    """``body`` inside an element that declares the service prefixes (vss_env.soap declares tr2/tt only)."""
    return re.sub(r"^<([\w:]+)", rf"<\1 {DECLARED}", body, count=1)


def call(base: str, path: str, body: str, user: tuple[str, str] = ADMIN) -> etree._Element:
    status, root = soap(base, path, _op(body), user=user)
    assert status == 200, etree.tostring(root)[:2000]
    response = root.find("env:Body", NS)[0]
    schemas.validate(response, {PTZ_PATH: "ptz", SEARCH_PATH: "search", REPLAY_PATH: "replay"}[path])
    return response


def refused(base: str, path: str, body: str, user: tuple[str, str] = ADMIN) -> tuple[int, list[str]]:
    status, chain, _ = refused_with_reason(base, path, body, user)
    return status, chain


def refused_with_reason(base: str, path: str, body: str,
                        user: tuple[str, str] = ADMIN) -> tuple[int, list[str], str]:
    status, root = soap(base, path, _op(body), user=user)
    return status, fault_chain(root), str(root.findtext("env:Body/env:Fault/env:Reason/env:Text", namespaces=NS))


@contextlib.contextmanager
def lower_device(data: Path, folder: Path, resource: Resource, *, replay: bool) -> Iterator[tuple[str, str | None]]:
    """A device application with a PTZ head on profile ``main``, recording ``rec-a`` of ``main`` (the
    files in ``folder``), a replay server if ``replay`` and ``resource`` in its registry; (base URL,
    replay base)."""
    seed_lower(data)
    save_recording_configs(data, [RecordingConfig(token="rec-a", source_token="main", folder=str(folder))])
    recordings = FolderRecordingStore(data)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ReplayServer(recordings)) if replay else None
        store = stack.enter_context(DeviceStore(data))
        store.put_media_source(MediaSource(token="main", name=resource.name or "", rtsp_url="rtsp://127.0.0.1:9/main"))
        registry = stack.enter_context(ResourceRegistry(data / REGISTRY_FILE))
        registry.upsert_many([resource])
        events = EventServiceContext.create(registry)
        stack.callback(events.close)
        app = build_device_app(UplinkServiceContext(store=store), events=events,
                               ptz=SimulatedPtz([NODE], time.time()), recordings=recordings,
                               replay_base=None if server is None else server.base)
        yield stack.enter_context(serve_app(app)), None if server is None else server.base


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    """Devices ``cam`` (replay served) and ``yard`` behind a site VSS, the site VSS behind a regional VSS."""
    root = tmp_path_factory.mktemp("vssfwd")
    for name in ("cam", "yard"):
        (root / f"{name}-rec").mkdir()
        make_video(root / f"{name}-rec" / f"{name}_{stamp(T0)}.mp4", 4)
    services: list[BackgroundService] = []
    with lower_device(root / "cam", root / "cam-rec", GATE, replay=True) as (cam, cam_replay), \
            lower_device(root / "yard", root / "yard-rec", YARD, replay=False) as (yard, _):
        try:
            for vss in ("site", "regional"):
                seed(root / vss)
                with DeviceStore(root / vss) as store:
                    store.put_user(*OPERATOR, "Operator")
                    store.put_user(*USER, "User")
            for prefix, base in (("cam", cam), ("yard", yard)):
                add_lower(root / "site", LowerSystem(prefix=prefix, url=f"{base}/onvif/device_service",
                                                     username=ADMIN[0], password=ADMIN[1]))
            site_service, site = start_vss(root / "site", VssOptions(rtsp="127.0.0.1:0", rtsp_open=True, timeout=10,
                                                                     mirror_retry=0.3))
            services.append(site_service)
            add_lower(root / "regional", LowerSystem(prefix="site", url=f"{site}/onvif/device_service",
                                                     username=ADMIN[0], password=ADMIN[1]))
            regional_service, regional = start_vss(root / "regional", VssOptions(rtsp="127.0.0.1:0", rtsp_open=True, timeout=15,
                                                                                 mirror_retry=0.3))
            services.append(regional_service)
            assert cam_replay is not None
            yield Hierarchy(site, regional, cam_replay, root / "cam-rec")
        finally:
            for service in reversed(services):
                service.stop()


def test_recording_and_search_tokens_are_found_in_the_schema_anx_b_3() -> None:
    """ANX-B-3, ADR-2: the token index finds recording, track, source and search (tt:JobToken) tokens of the
    Recording Search and Replay messages in the authored XSD — no list of operations."""
    index = token_index()

    def sites(xml: str) -> set[str]:
        element = etree.fromstring(xml)
        return {f"{etree.QName(e).localname}{'@' + a if a else ''}" for e, a in index.sites(element)}

    tse, tt = f'xmlns:tse="{TSE}"', f'xmlns:tt="{TT}"'
    assert sites(f"<tse:FindRecordingsResponse {tse}><tse:SearchToken>s</tse:SearchToken>"
                 "</tse:FindRecordingsResponse>") == {"SearchToken"}
    for operation in ("GetRecordingSearchResults", "GetEventSearchResults", "EndSearch"):
        assert sites(f"<tse:{operation} {tse}><tse:SearchToken>s</tse:SearchToken></tse:{operation}>") \
            == {"SearchToken"}, operation
    assert sites(f"<tse:FindRecordings {tse} {tt}><tse:Scope><tt:IncludedSources><tt:Token>p</tt:Token>"
                 "</tt:IncludedSources><tt:IncludedRecordings>r</tt:IncludedRecordings></tse:Scope>"
                 "<tse:KeepAliveTime>PT1S</tse:KeepAliveTime></tse:FindRecordings>") == {"Token", "IncludedRecordings"}
    found = sites(f"<tse:GetRecordingSearchResultsResponse {tse} {tt}><tse:ResultList>"
                  "<tt:SearchState>Completed</tt:SearchState><tt:RecordingInformation>"
                  "<tt:RecordingToken>r</tt:RecordingToken><tt:Source><tt:SourceId>x</tt:SourceId><tt:Name>n</tt:Name>"
                  "<tt:Location/><tt:Description/><tt:Address>a</tt:Address><tt:VideoSourceToken>p</tt:VideoSourceToken>"
                  "</tt:Source><tt:Content/><tt:Track><tt:TrackToken>t</tt:TrackToken></tt:Track>"
                  "</tt:RecordingInformation></tse:ResultList></tse:GetRecordingSearchResultsResponse>")
    assert found == {"RecordingToken", "VideoSourceToken", "TrackToken"}
    assert sites(f'<trp:GetReplayUri xmlns:trp="{TRP}" {tt}><trp:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>'
                 "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trp:StreamSetup>"
                 "<trp:RecordingToken>r</trp:RecordingToken></trp:GetReplayUri>") == {"RecordingToken"}


def test_recorded_event_messages_are_adapted_anx_b_4() -> None:
    """ANX-B-4, ADR-2: in the recorded events of a FindEvents result the Source items the topic describes as
    tokens get the lower system's prefix (a remote token keeps its own and is learnt); the Data item and a
    message of a topic without a known description stay as they are."""
    def holder(topic: str, source: str) -> str:
        return (f'<tt:Result><tt:Event><wsnt:Topic Dialect="d">tns1:{topic}</wsnt:Topic><wsnt:Message><tt:Message '
                f'UtcTime="2026-01-01T12:00:00Z"><tt:Source>{source}</tt:Source><tt:Data><tt:SimpleItem '
                'Name="IsDataPresent" Value="true"/></tt:Data></tt:Message></wsnt:Message></tt:Event></tt:Result>')

    answer = etree.fromstring(
        f'<tse:GetEventSearchResultsResponse xmlns:tse="{TSE}" xmlns:tt="{TT}" xmlns:wsnt="{WSNT}"><tse:ResultList>'
        + holder("RecordingHistory/Track/State", '<tt:SimpleItem Name="RecordingToken" Value="rec-a"/>'
                 '<tt:SimpleItem Name="Track" Value="deep:VIDEO"/>')
        + holder("Vendor/Other", '<tt:SimpleItem Name="RecordingToken" Value="rec-a"/>')
        + "</tse:ResultList></tse:GetEventSearchResultsResponse>")
    assert prefix_messages(answer, "cam", recorded_topics()) == {"deep"}
    values = [(i.get("Name"), i.get("Value")) for i in answer.iter(f"{{{TT}}}SimpleItem")]
    assert values == [("RecordingToken", "cam:rec-a"), ("Track", "deep:VIDEO"), ("IsDataPresent", "true"),
                      ("RecordingToken", "rec-a"), ("IsDataPresent", "true")]


class FakeSearchSystem:
    """A Recording Search service in memory for :class:`JointSearches`: FindEvents answers ``search-1``, each
    GetEventSearchResults one of ``times`` (Searching until the last), EndSearch is recorded."""

    def __init__(self, times: list[float], *, fail: bool = False) -> None:
        self.times, self.fail, self.ended = list(times), fail, False

    def __call__(self, operation: etree._Element) -> etree._Element:
        name = etree.QName(operation).localname
        if self.fail:
            raise SoapFault(code="Receiver", subcodes=("Action",), reason="down")
        if name == "FindEvents":
            return etree.fromstring(f'<tse:FindEventsResponse xmlns:tse="{TSE}"><tse:SearchToken>search-1'
                                    "</tse:SearchToken></tse:FindEventsResponse>")
        if name == "EndSearch":
            self.ended = True
            return etree.fromstring(f'<tse:EndSearchResponse xmlns:tse="{TSE}"><tse:Endpoint>x</tse:Endpoint>'
                                    "</tse:EndSearchResponse>")
        at = self.times.pop(0)
        state = "Searching" if self.times else "Completed"
        return etree.fromstring(
            f'<tse:GetEventSearchResultsResponse xmlns:tse="{TSE}" xmlns:tt="{TT}"><tse:ResultList><tt:SearchState>'
            f"{state}</tt:SearchState><tt:Result><tt:Time>{format_datetime(at)}</tt:Time></tt:Result>"
            "</tse:ResultList></tse:GetEventSearchResultsResponse>")


def test_joint_search_keeps_the_first_events_of_all_systems_anx_b_3() -> None:
    """ANX-B-3: a joint FindEvents with MaxMatches 3 over three systems (one down) keeps the three earliest
    events of all (paged by Get…: Searching, then Completed), ends every search it opened, and a system
    that faults is left out."""
    own, first, second, down = (FakeSearchSystem([T0 + 5]), FakeSearchSystem([T0 + 1, T0 + 9]),
                                FakeSearchSystem([T0 + 2, T0 + 3, T0 + 4]), FakeSearchSystem([], fail=True))
    searches = JointSearches(timeout=10.0)
    find = etree.fromstring(f'<tse:FindEvents xmlns:tse="{TSE}"><tse:StartPoint>{format_datetime(T0)}'
                            "</tse:StartPoint><tse:Scope/><tse:SearchFilter/><tse:IncludeStartState>false"
                            "</tse:IncludeStartState><tse:MaxMatches>3</tse:MaxMatches><tse:KeepAliveTime>PT10S"
                            "</tse:KeepAliveTime></tse:FindEvents>")
    token = searches.find(find, own, [("a", first), ("down", down), ("b", second)]).findtext(f"{{{TSE}}}SearchToken")
    assert token is not None and own.ended and first.ended and second.ended

    def page() -> tuple[str | None, list[str | None]]:
        get = etree.fromstring(f'<tse:GetEventSearchResults xmlns:tse="{TSE}"><tse:SearchToken>{token}'
                               "</tse:SearchToken><tse:MaxResults>2</tse:MaxResults></tse:GetEventSearchResults>")
        answer = searches.results(get, str(joint_token(get)))
        return (answer.findtext(f"{{{TSE}}}ResultList/{{{TT}}}SearchState"),
                [r.findtext(f"{{{TT}}}Time") for r in answer.iter(f"{{{TT}}}Result")])

    assert page() == ("Searching", [format_datetime(T0 + 1), format_datetime(T0 + 2)])
    assert page() == ("Completed", [format_datetime(T0 + 3)])


@needs_replay
def test_services_listed_and_ptz_forwarded_anx_b_2(hierarchy: Hierarchy) -> None:
    """ANX-B-2, GEN-2, ADR-2, ADR-4: the site VSS lists PTZ, Recording Search and Replay in GetServices; GetNodes
    and GetConfigurations list the lower head as ``cam:head-1``; ContinuousMove, GetStatus and Stop with the
    profile token ``cam:main`` reach the device's head (MOVING, then IDLE)."""
    status, root = soap(hierarchy.site, "/onvif/device_service",
                        _op("<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>"))
    assert status == 200
    listed = {s.findtext("tds:Namespace", namespaces=NS): s.findtext("tds:XAddr", namespaces=NS)
              for s in root.iterfind(".//tds:Service", NS)}
    assert listed[TPTZ] == f"{hierarchy.site}{PTZ_PATH}"
    assert listed[TSE] == f"{hierarchy.site}{SEARCH_PATH}" and listed[TRP] == f"{hierarchy.site}{REPLAY_PATH}"

    nodes = call(hierarchy.site, PTZ_PATH, "<tptz:GetNodes/>").findall("tptz:PTZNode", NS)
    assert sorted(n.get("token") for n in nodes) == ["cam:head-1", "yard:head-1"]
    configurations = call(hierarchy.site, PTZ_PATH, "<tptz:GetConfigurations/>").findall("tptz:PTZConfiguration", NS)
    assert sorted((c.get("token"), c.findtext("tt:NodeToken", namespaces=NS)) for c in configurations) == [
        ("cam:head-1", "cam:head-1"), ("yard:head-1", "yard:head-1")]

    def move_status(token: str) -> str:
        found = call(hierarchy.site, PTZ_PATH, f"<tptz:GetStatus><tptz:ProfileToken>{token}</tptz:ProfileToken>"
                                               "</tptz:GetStatus>", user=USER)
        return str(found.findtext("tptz:PTZStatus/tt:MoveStatus/tt:PanTilt", namespaces=NS))

    call(hierarchy.site, PTZ_PATH, '<tptz:ContinuousMove><tptz:ProfileToken>cam:main</tptz:ProfileToken><tptz:Velocity>'
                                   '<tt:PanTilt x="0.1" y="0"/></tptz:Velocity></tptz:ContinuousMove>', user=OPERATOR)
    assert (move_status("cam:main"), move_status("yard:main")) == ("MOVING", "IDLE")
    call(hierarchy.site, PTZ_PATH, "<tptz:Stop><tptz:ProfileToken>cam:main</tptz:ProfileToken></tptz:Stop>",
         user=OPERATOR)
    assert move_status("cam:main") == "IDLE"


@needs_replay
def test_ptz_access_and_refusals_sec_1(hierarchy: Hierarchy) -> None:
    """SEC-1, ADR-6: the VSS applies the PTZ access classes itself (a User may read the status but not move,
    though the VSS's account at the device could); an unknown prefix is Sender/InvalidArgVal; a token of
    the VSS's own is answered by the VSS (no profile there); the lower device's fault is relayed; an
    operation the PTZ access table does not classify (SendAuxiliaryCommand) is not forwarded."""
    move = ('<tptz:ContinuousMove><tptz:ProfileToken>{}</tptz:ProfileToken><tptz:Velocity><tt:PanTilt x="0.1" y="0"/>'
            "</tptz:Velocity></tptz:ContinuousMove>")
    assert refused(hierarchy.site, PTZ_PATH, move.format("cam:main"), user=USER)[1] == ["env:Sender",
                                                                                       "ter:NotAuthorized"]
    assert refused(hierarchy.site, PTZ_PATH, move.format("gone:main"))[1] == ["env:Sender", "ter:InvalidArgVal"]
    assert refused(hierarchy.site, PTZ_PATH, move.format("main"))[1] == ["env:Sender", "ter:InvalidArgVal",
                                                                         "ter:NoProfile"]
    status, chain, reason = refused_with_reason(hierarchy.site, PTZ_PATH, move.format("cam:nope"))
    assert (status, chain) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:NoProfile"])
    assert reason.startswith("lower system cam: ")
    aux = ("<tptz:SendAuxiliaryCommand><tptz:ProfileToken>cam:main</tptz:ProfileToken><tptz:AuxiliaryData>tt:Wiper|On"
           "</tptz:AuxiliaryData></tptz:SendAuxiliaryCommand>")
    status, chain, reason = refused_with_reason(hierarchy.site, PTZ_PATH, aux)
    assert chain[:2] == ["env:Receiver", "ter:ActionNotSupported"] and "lower system" not in reason


@needs_replay
def test_recording_search_routed_and_summary_merged_anx_b_3(hierarchy: Hierarchy) -> None:
    """ANX-B-3, ANX-B-5, ADR-4: GetRecordingSummary counts the recordings of both devices; FindRecordings scoped
    by a device's profile or recording token goes to that device and answers a search token with its
    prefix, so GetRecordingSearchResults and EndSearch reach the device that opened the search (both devices
    name their recording ``rec-a`` and issue the same local search tokens); results carry prefixed
    recording, track and source tokens; a search token the device never issued is the device's fault,
    relayed; an ended search is unknown at its device while the other device's stays open."""
    summary = call(hierarchy.site, SEARCH_PATH, "<tse:GetRecordingSummary/>").find("tse:Summary", NS)
    assert summary.findtext("tt:NumberRecordings", namespaces=NS) == "2"
    assert summary.findtext("tt:DataFrom", namespaces=NS) == format_datetime(T0)
    assert summary.findtext("tt:DataUntil", namespaces=NS) == format_datetime(T0 + 4)

    searches = {}
    for prefix, scope in (("cam", "<tt:IncludedSources><tt:Token>cam:main</tt:Token></tt:IncludedSources>"),
                          ("yard", "<tt:IncludedRecordings>yard:rec-a</tt:IncludedRecordings>")):
        token = call(hierarchy.site, SEARCH_PATH, f"<tse:FindRecordings><tse:Scope>{scope}</tse:Scope>"
                     "<tse:KeepAliveTime>PT30S</tse:KeepAliveTime></tse:FindRecordings>",
                     user=USER).findtext("tse:SearchToken", namespaces=NS)
        assert token is not None and token.startswith(f"{prefix}:")
        searches[prefix] = token
    for prefix, token in searches.items():
        result = call(hierarchy.site, SEARCH_PATH, f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}"
                      "</tse:SearchToken></tse:GetRecordingSearchResults>").find("tse:ResultList", NS)
        assert result.findtext("tt:SearchState", namespaces=NS) == "Completed"
        [info] = result.findall("tt:RecordingInformation", NS)
        assert (info.findtext("tt:RecordingToken", namespaces=NS),
                info.findtext("tt:Source/tt:VideoSourceToken", namespaces=NS),
                info.findtext("tt:Track/tt:TrackToken", namespaces=NS)) == (f"{prefix}:rec-a", f"{prefix}:main",
                                                                         f"{prefix}:VIDEO")
    info = call(hierarchy.site, SEARCH_PATH, "<tse:GetRecordingInformation><tse:RecordingToken>yard:rec-a"
                "</tse:RecordingToken></tse:GetRecordingInformation>").find("tse:RecordingInformation", NS)
    assert info.findtext("tt:RecordingToken", namespaces=NS) == "yard:rec-a"

    status, chain, reason = refused_with_reason(hierarchy.site, SEARCH_PATH, "<tse:GetRecordingSearchResults>"
                                                "<tse:SearchToken>cam:search-999</tse:SearchToken>"
                                                "</tse:GetRecordingSearchResults>")
    assert (status, chain) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidToken"])
    assert reason.startswith("lower system cam: ")
    call(hierarchy.site, SEARCH_PATH, f"<tse:EndSearch><tse:SearchToken>{searches['cam']}</tse:SearchToken>"
                                      "</tse:EndSearch>")
    status, chain = refused(hierarchy.site, SEARCH_PATH, f"<tse:GetRecordingSearchResults><tse:SearchToken>"
                            f"{searches['cam']}</tse:SearchToken></tse:GetRecordingSearchResults>")
    assert (status, chain) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidToken"])
    call(hierarchy.site, SEARCH_PATH, f"<tse:GetRecordingSearchResults><tse:SearchToken>{searches['yard']}"
                                      "</tse:SearchToken></tse:GetRecordingSearchResults>")  # still open there


@needs_replay
def test_unscoped_searches_run_on_every_system_anx_b_3(hierarchy: Hierarchy) -> None:
    """ANX-B-3, GEN-1: a FindRecordings whose scope names no lower system searches the VSS and both devices
    together (a joint search token), paged by MaxResults; FindEvents at the regional VSS does so two levels
    down (the site VSS's joint search is one of its systems), the events of both devices in time order,
    backward when the EndPoint lies before the StartPoint; EndSearch ends the joint search; a Find the VSS's own
    search service refuses is refused; a joint search token is read only behind the search service's
    access control (not anonymously, not at another service's address)."""
    token = call(hierarchy.site, SEARCH_PATH, "<tse:FindRecordings><tse:Scope/><tse:KeepAliveTime>PT30S"
                 "</tse:KeepAliveTime></tse:FindRecordings>", user=USER).findtext("tse:SearchToken", namespaces=NS)
    assert token is not None and ":" not in token
    pages = []
    for _ in range(2):
        result = call(hierarchy.site, SEARCH_PATH, f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}"
                      "</tse:SearchToken><tse:MaxResults>1</tse:MaxResults></tse:GetRecordingSearchResults>"
                      ).find("tse:ResultList", NS)
        pages.append((result.findtext("tt:SearchState", namespaces=NS),
                      [r.findtext("tt:RecordingToken", namespaces=NS) for r in result.findall(
                          "tt:RecordingInformation", NS)]))
    assert [state for state, _ in pages] == ["Searching", "Completed"]
    assert sorted(t for _, tokens in pages for t in tokens) == ["cam:rec-a", "yard:rec-a"]
    get = f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}</tse:SearchToken></tse:GetRecordingSearchResults>"
    status, root = soap(hierarchy.site, SEARCH_PATH, _op(get), user=None)
    assert (status, fault_chain(root)) in ((400, ["env:Sender", "ter:NotAuthorized"]),
                                           (401, ["env:Sender", "ter:NotAuthorized"]))  # behind access control
    assert refused(hierarchy.site, "/onvif/media2_service", get)[1][:2] == ["env:Receiver", "ter:ActionNotSupported"]
    call(hierarchy.site, SEARCH_PATH, f"<tse:EndSearch><tse:SearchToken>{token}</tse:SearchToken></tse:EndSearch>")
    assert refused(hierarchy.site, SEARCH_PATH, f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}"
                   "</tse:SearchToken></tse:GetRecordingSearchResults>")[1] == ["env:Sender", "ter:InvalidArgVal",
                                                                                "ter:InvalidToken"]

    assert refused(hierarchy.site, SEARCH_PATH, "<tse:FindRecordings><tse:Scope/><tse:MaxMatches>0</tse:MaxMatches>"
                   "<tse:KeepAliveTime>PT30S</tse:KeepAliveTime></tse:FindRecordings>")[1] == [
        "env:Sender", "ter:InvalidArgVal"]  # the VSS's own search refuses it: no lower system is asked

    for start, end in ((T0 - 60, T0 + 60), (T0 + 60, T0 - 60)):
        token = call(hierarchy.regional, SEARCH_PATH, f"<tse:FindEvents><tse:StartPoint>{format_datetime(start)}"
                     f"</tse:StartPoint><tse:EndPoint>{format_datetime(end)}</tse:EndPoint><tse:Scope/>"
                     "<tse:SearchFilter/><tse:IncludeStartState>false</tse:IncludeStartState>"
                     "<tse:KeepAliveTime>PT30S</tse:KeepAliveTime></tse:FindEvents>").findtext("tse:SearchToken",
                                                                                              namespaces=NS)
        assert token is not None and ":" not in token
        result = call(hierarchy.regional, SEARCH_PATH, f"<tse:GetEventSearchResults><tse:SearchToken>{token}"
                      "</tse:SearchToken></tse:GetEventSearchResults>").find("tse:ResultList", NS)
        assert result.findtext("tt:SearchState", namespaces=NS) == "Completed"
        events = [(r.findtext("tt:Time", namespaces=NS), r.findtext("tt:RecordingToken", namespaces=NS))
                  for r in result.findall("tt:Result", NS)]
        times = [format_datetime(T0), format_datetime(T0)] + [format_datetime(T0 + 4)] * 2
        assert [t for t, _ in events] == (times if start < end else times[::-1])
        assert sorted(r for _, r in events) == ["cam:rec-a", "cam:rec-a", "yard:rec-a", "yard:rec-a"]


def replay_uri(base: str, token: str) -> str:
    uri = call(base, REPLAY_PATH, "<trp:GetReplayUri><trp:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
                                  "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trp:StreamSetup>"
                                  f"<trp:RecordingToken>{token}</trp:RecordingToken></trp:GetReplayUri>",
               user=USER).findtext("trp:Uri", namespaces=NS)
    assert uri is not None
    return uri


def ffprobe(uri: str) -> subprocess.CompletedProcess[str]:
    """Codec and size of the first video stream, as ``h264,320,240`` (bounded)."""
    return subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0",
                           "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", uri],
                          capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)


def clock_range_play(uri: str, clock_range: str) -> tuple[int, str]:
    """An ONVIF replay session (DESCRIBE, SETUP, PLAY with ``Range: clock=…``): the PLAY's status and Range."""
    player, status, head = replay_play(uri, clock_range)
    player.close()
    return status, head.get("range", "")


@needs_replay
def test_replay_uri_relayed_by_the_vss_anx_b_3(hierarchy: Hierarchy) -> None:
    """ANX-B-3, ANX-B-1: GetReplayUri with ``cam:rec-a`` answers the site VSS's RTSP front, not the device's
    replay server; ffprobe reads the recording's H.264 stream through it; an ONVIF replay PLAY's
    ``Range: clock=`` passes the relay (2 s in: npt=2; after the recording: 457); a recording token of the
    VSS's own is NoRecording there."""
    uri = replay_uri(hierarchy.site, "cam:rec-a")
    assert "/relay/" in uri and not uri.startswith(hierarchy.cam_replay)
    probe = ffprobe(uri)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.split() == ["h264,320,240"]
    status, npt = clock_range_play(uri, f"clock={stamp(T0 + 2)}-")
    assert status == 200 and npt.startswith("npt=2")  # the replay server mapped the clock through the relay
    assert clock_range_play(uri, f"clock={stamp(T0 + 60)}-")[0] == 457  # after the recording
    status, chain = refused(hierarchy.site, REPLAY_PATH, "<trp:GetReplayUri><trp:StreamSetup><tt:Stream>RTP-Unicast"
                            "</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport>"
                            "</trp:StreamSetup><trp:RecordingToken>rec-a</trp:RecordingToken></trp:GetReplayUri>")
    assert (status, chain) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:NoRecording"])


@needs_replay
def test_forensic_example_7_8_2(hierarchy: Hierarchy) -> None:
    """GEN-1, ADR-6, ANX-B-3, RQ-5: the forensic example at the regional VSS, two levels above the cameras —
    the video sources within 100 m of a point (a resource query), FindEvents over a time range scoped to
    the token received, GetEventSearchResults (the recorded events' Source items adapted too), GetReplayUri
    for the recording found, ffmpeg decodes the replay through the regional and the site VSS's RTSP
    fronts, and a replay PLAY for a time inside the window found starts there (``Range: clock=`` → npt)."""
    client = ResourceQueryClient(f"{hierarchy.regional}/onvif/event_service", username=ADMIN[0],
                                 password=ADMIN[1], pull_timeout=1.0)

    def nearby() -> set[str] | None:
        with client.subscribe(["VideoSource"], location=LocationFilter(HERE.lon, HERE.lat, 100.0)) as subscription:
            return {r.token for r in subscription.resources()} or None

    assert wait_until(nearby, 30, interval=0.3, what="the video sources at the regional VSS") == {GATE.token}
    token = call(hierarchy.regional, SEARCH_PATH, f"<tse:FindEvents><tse:StartPoint>{format_datetime(T0 - 60)}"
                 f"</tse:StartPoint><tse:EndPoint>{format_datetime(T0 + 60)}</tse:EndPoint><tse:Scope>"
                 f"<tt:IncludedSources><tt:Token>{GATE.token}</tt:Token></tt:IncludedSources></tse:Scope>"
                 "<tse:SearchFilter/><tse:IncludeStartState>false</tse:IncludeStartState>"
                 "<tse:KeepAliveTime>PT30S</tse:KeepAliveTime></tse:FindEvents>",
                 user=ADMIN).findtext("tse:SearchToken", namespaces=NS)
    assert token is not None and token.startswith("cam:")
    result = call(hierarchy.regional, SEARCH_PATH, f"<tse:GetEventSearchResults><tse:SearchToken>{token}"
                  "</tse:SearchToken></tse:GetEventSearchResults>").find("tse:ResultList", NS)
    assert result.findtext("tt:SearchState", namespaces=NS) == "Completed"
    found = [(r.findtext("tt:RecordingToken", namespaces=NS), r.findtext("tt:TrackToken", namespaces=NS),
              r.findtext("tt:Time", namespaces=NS)) for r in result.findall("tt:Result", NS)]
    assert found and {(rec, track) for rec, track, _ in found} == {("cam:rec-a", "cam:VIDEO")}
    assert found[0][2] == format_datetime(T0)  # data present from the first file's start
    sources = {(i.get("Name"), i.get("Value")) for i in result.iterfind(
        "tt:Result/tt:Event/wsnt:Message/tt:Message/tt:Source/tt:SimpleItem", NS)}
    assert sources == {("RecordingToken", "cam:rec-a"), ("Track", "cam:VIDEO")}  # the recorded events' tokens too
    call(hierarchy.regional, SEARCH_PATH, f"<tse:EndSearch><tse:SearchToken>{token}</tse:SearchToken></tse:EndSearch>")

    uri = replay_uri(hierarchy.regional, found[0][0])
    site_front = replay_uri(hierarchy.site, found[0][0])
    assert "/relay/" in uri and uri.split("/relay/")[0] != site_front.split("/relay/")[0]
    run = decode_frames(uri, 20)
    assert run.returncode == 0, run.stderr[-2000:]
    assert decoded_frames(run.stderr) >= 20
    status, npt = clock_range_play(uri, f"clock={stamp(T0 + 2)}-")  # the window the search found, 2 s into it
    assert status == 200 and npt.startswith("npt=2")  # mapped by the device's replay server, through both fronts


@needs_replay
def test_replay_of_a_lower_device_on_an_uplink_anx_b_3(tmp_path: Path) -> None:
    """ANX-B-3, GEN-3: a lower device that dials the VSS (its embedded cloud listener) and serves a recording:
    GetReplayUri through the VSS answers a URI on the VSS's RTSP front (the device was told the front), and
    ffprobe plays it through the front, the uplink and the device's replay server."""
    certs = UplinkPki(tmp_path / "pki")
    (tmp_path / "rec").mkdir()
    make_video(tmp_path / "rec" / f"cam_{stamp(T0)}.mp4", 4)
    seed(tmp_path / "vss")
    add_lower(tmp_path / "vss", LowerSystem(prefix="cam-device", uplink="cam-device"))
    uplink = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file])
    vss, url = start_vss(tmp_path / "vss", VssOptions(rtsp="127.0.0.1:0", rtsp_open=True, uplink=uplink, timeout=5))
    try:
        listening = wait_until(lambda: next((m for m in vss.messages if "cloud listening" in m), None), 15,
                               what="the VSS's uplink listener")
        port = re.search(r"https://127\.0\.0\.1:(\d+)/", listening).group(1)  # type: ignore[union-attr]
        seed_uplink_device(tmp_path / "dev", certs, "cam-device", [(f"https://localhost:{port}/uplink", ("User",))])
        seed(tmp_path / "dev", sources=(MediaSource(token="main", name="Gate", rtsp_url="rtsp://127.0.0.1:9/main"),))
        save_recording_configs(tmp_path / "dev", [RecordingConfig(token="rec-a", source_token="main",
                                                                  folder=str(tmp_path / "rec"))])
        device = RunningDevice(tmp_path / "dev")
        try:
            body = _op("<trp:GetReplayUri><trp:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport>"
                       "<tt:Protocol>RTSP</tt:Protocol></tt:Transport></trp:StreamSetup>"
                       "<trp:RecordingToken>cam-device:rec-a</trp:RecordingToken></trp:GetReplayUri>")

            def replay_uri_once_connected() -> str | None:
                status, root = soap(url, REPLAY_PATH, body)
                return root.findtext(".//trp:Uri", namespaces=NS) if status == 200 else None

            uri = wait_until(replay_uri_once_connected, 20, interval=0.3, what="the device's uplink")
            front = re.match(r"rtsp://[^/]+", uri)
            assert front is not None and uri == f"{front.group(0)}/devices/cam-device/replay/rec-a"
            probe = ffprobe(uri)
            assert probe.returncode == 0, probe.stderr[-2000:]
            assert probe.stdout.split() == ["h264,320,240"]
        finally:
            device.stop()
    finally:
        vss.stop()
