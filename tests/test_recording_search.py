"""ANX-B-3, ANX-B-5, SEC-1, SEC-3: Recording Search over the sample store — recordings indexed from
folders of MP4/MKV files made by ffmpeg with known start times, edge-storage style sources (the Media2
profile that recorded), GetRecordingSummary/GetRecordingInformation, FindRecordings and FindEvents
with paging, EndSearch, bounded sessions with KeepAliveTime expiry, faults and access classes.

The search sessions are tested sans-IO with a fake clock; the services run in a real device
application on loopback (the fake clock injected), every answer validated against the authored
``xsd/search.xsd``; a strict zeep client built from ``wsdl/search.wsdl`` drives them too.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zeep
import zeep.exceptions
from conftest import ADMIN, USER, seed_device
from helpers import fault_chain, run
from lxml import etree
from recording_env import T0, make_video, needs_ffmpeg, stamp
from schema_check import XS, assert_model_matches, binding_actions, token_types
from served_app import body_of, serve_app, soap_call

from iec62676_2_33 import schemas
from iec62676_2_33.domain.recordings import (
    IndexedRecordingStore,
    RecordingConfig,
    RecordingFile,
    SearchError,
    SearchSessions,
    recording_events,
    start_from_name,
)
from iec62676_2_33.domain.subscriptions import format_datetime, parse_datetime
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.namespaces import SOAP_ENV, TDS, TT, WSNT
from iec62676_2_33.runtime.recording_files import FolderRecordingStore, load_recording_configs
from iec62676_2_33.services import recording as recording_module
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.recording import OPERATION_ACCESS, SEARCH_PATH, TRP, TSE
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore

NS = {"env": SOAP_ENV, "tse": TSE, "tt": TT, "tds": TDS, "wsnt": WSNT}
@dataclass
class Library:
    data: Path
    folders: dict[str, Path]


def make_library(root: Path) -> Library:
    """Two recordings: ``rec-a`` (profile ``main``) = two MP4 files 12:00:00+4 s and 12:00:10+3 s;
    ``rec-b`` (profile ``sub``) = one MKV file 12:00:02+5 s; plus files the index must skip."""
    a, b = root / "a", root / "b"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    make_video(a / f"cam_{stamp(T0)}.mp4", 4)
    make_video(a / f"cam_{stamp(T0 + 10)}.mp4", 3)
    make_video(b / f"{stamp(T0 + 2)}.mkv", 5)
    (a / "notes.txt").write_text("not a video")
    (a / "no-stamp.mp4").write_bytes(b"")
    (b / f"{stamp(T0 + 30)}.mp4").write_bytes(b"broken")
    return Library(data=root / "device", folders={"a": a, "b": b})


# -- domain, sans-IO ------------------------------------------------------------------------------

def test_start_from_name_anx_b_3() -> None:
    """ANX-B-3: the start of a segment is the UTC stamp in its name (fractions allowed); none: skipped."""
    assert start_from_name("cam_20260101T120000Z.mp4") == T0
    assert start_from_name("20260101T120000.250Z_x.mkv") == T0 + 0.25
    assert start_from_name("cam.mp4") is None
    assert start_from_name("20261399T120000Z.mp4") is None


def _store() -> IndexedRecordingStore:
    a = RecordingConfig(token="rec-a", source_token="main", folder="/a")
    b = RecordingConfig(token="rec-b", source_token="sub", folder="/b")
    return IndexedRecordingStore([
        (a, [RecordingFile(path="/a/2", start=T0 + 10, duration=3), RecordingFile(path="/a/1", start=T0, duration=4)]),
        (b, [RecordingFile(path="/b/1", start=T0 + 2, duration=5)]),
    ])


def test_replay_offsets_and_events_anx_b_3() -> None:
    """ANX-B-3: the media timeline plays the files back to back (an instant in a gap maps to the next
    file); the track-state events come in time order, backwards when EndPoint < StartPoint, with the
    start states first when asked."""
    rec = _store().recording("rec-a")
    assert rec is not None
    assert (rec.earliest, rec.latest) == (T0, T0 + 13)
    assert [rec.offset_of(T0 + s) for s in (-5, 0, 2.5, 6, 10, 11.5, 13)] == [0.0, 0.0, 2.5, 4.0, 4.0, 5.5, None]
    recordings = _store().recordings()
    forward = recording_events(recordings, T0 + 1, T0 + 10, include_start_state=True)
    assert [(e.recording_token, e.time - T0, e.data_present, e.start_state) for e in forward] == [
        ("rec-a", 1, True, True), ("rec-b", 1, False, True),
        ("rec-b", 2, True, False), ("rec-a", 4, False, False), ("rec-b", 7, False, False), ("rec-a", 10, True, False)]
    backward = recording_events(recordings, T0 + 20, T0 + 5, include_start_state=False)
    assert [(e.recording_token, e.time - T0) for e in backward] == [("rec-a", 13), ("rec-a", 10), ("rec-b", 7)]


def test_search_sessions_bounded_and_expiring_anx_b_3() -> None:
    """ANX-B-3: sessions page their results, end with the end point (or now), expire KeepAliveTime after
    the last Find/Get, and at most max_sessions are open (ResourceProblem beyond)."""
    sessions = SearchSessions(max_sessions=2)
    first = sessions.open(0.0, "recordings", lambda: [1, 2, 3], keep_alive=10.0, max_matches=None)
    assert sessions.results(5.0, first, "recordings", 2) == ([1, 2], False)
    assert sessions.results(14.0, first, "recordings", 2) == ([3], True)  # kept alive at 5 s: expires 15 s
    second = sessions.open(14.0, "events", lambda: list(range(50)), keep_alive=1.0, max_matches=20, end_point=99.0)
    with pytest.raises(SearchError) as info:
        sessions.open(14.0, "events", list, keep_alive=1.0, max_matches=None)
    assert (info.value.code, info.value.subcodes) == ("Receiver", ("Action", "ResourceProblem"))
    with pytest.raises(SearchError):  # a recordings token is not an events search
        sessions.results(14.0, first, "events", None)
    assert sessions.end(14.5, second) == 99.0
    assert sessions.results(23.9, first, "recordings", None) == ([], True)  # kept alive at 14 s: until 24 s
    with pytest.raises(SearchError) as info:
        sessions.results(35.0, first, "recordings", None)  # expired at 33.9
    assert info.value.subcodes == ("InvalidArgVal", "InvalidToken")
    assert len(sessions) == 0
    third = sessions.open(40.0, "events", lambda: list(range(50)), keep_alive=5.0, max_matches=20)
    assert len(sessions.results(40.0, third, "events", None)[0]) == 20  # MaxMatches bounds the result
    assert sessions.end(41.0, third) == 41.0
    for bad in ({"keep_alive": 0.0, "max_matches": None}, {"keep_alive": 1e6, "max_matches": None},
                {"keep_alive": 1.0, "max_matches": 0}):
        with pytest.raises(SearchError):
            sessions.open(50.0, "events", list, **bad)  # type: ignore[arg-type]


def test_recording_config_is_validated_anx_b_5() -> None:
    """ANX-B-5: a recording names its source profile and a folder; bad tokens are refused clearly."""
    for kwargs in ({"token": ""}, {"token": "a/b"}, {"token": ".."}, {"source_token": "x" * 65}, {"folder": ""}):
        with pytest.raises(ConfigurationError):
            RecordingConfig(**{"token": "r", "source_token": "s", "folder": "/f", **kwargs})  # type: ignore[arg-type]


# -- the CLI and the folder index -----------------------------------------------------------------

@needs_ffmpeg
def test_cli_configures_recordings_durably_anx_b_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ANX-B-5: ``iec62676 recordings add|list|remove`` keeps the recordings in the data folder; the folder
    store indexes the stamped MP4/MKV files with their ffprobe durations and skips the rest."""
    lib = make_library(tmp_path)
    data = str(lib.data)
    assert run(capsys, "recordings", "add", "--data", data, "--token", "rec-a", "--source-token", "main",
               "--folder", str(lib.folders["a"]), "--name", "Entrance")[0] == 0
    assert run(capsys, "recordings", "add", "--data", data, "--token", "rec-b", "--source-token", "sub",
               "--folder", str(lib.folders["b"]))[0] == 0
    code, out, _ = run(capsys, "recordings", "list", "--data", data)
    assert code == 0 and "rec-a" in out and "main" in out and "rec-b" in out
    code, _, err = run(capsys, "recordings", "add", "--data", data, "--token", "bad/token", "--source-token", "x",
                       "--folder", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "bad/token" in err
    store = FolderRecordingStore(data)
    files = {r.token: [(Path(f.path).name, f.start - T0, round(f.duration, 1)) for f in r.files]
             for r in store.recordings()}
    assert files == {"rec-a": [(f"cam_{stamp(T0)}.mp4", 0, 4.0), (f"cam_{stamp(T0 + 10)}.mp4", 10, 3.0)],
                     "rec-b": [(f"{stamp(T0 + 2)}.mkv", 2, 5.0)]}
    assert run(capsys, "recordings", "remove", "--data", data, "--token", "rec-b")[0] == 0
    assert [c.token for c in load_recording_configs(data)] == ["rec-a"]
    assert [r.token for r in store.recordings()] == ["rec-a"]


# -- the service on a real device application ------------------------------------------------------

class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe are not installed (Debian package ffmpeg, .ci/run)")
    return make_library(tmp_path_factory.mktemp("recordings"))


@pytest.fixture
def clock() -> FakeClock:
    """Starts at the real time (WS-Security checks Created against it); tests advance it by < 300 s."""
    return FakeClock(time.time())


@pytest.fixture
def search(library: Library, tmp_path: Path, clock: FakeClock) -> Iterator[str]:
    data = tmp_path / "device"
    seed_device(data)
    from iec62676_2_33.runtime.recording_files import save_recording_configs

    save_recording_configs(data, [
        RecordingConfig(token="rec-a", source_token="main", folder=str(library.folders["a"]), name="Entrance",
                        description="door camera"),
        RecordingConfig(token="rec-b", source_token="sub", folder=str(library.folders["b"]))])
    with DeviceStore(data) as store:
        app = build_device_app(UplinkServiceContext(store=store), clock=clock,
                               recordings=FolderRecordingStore(data))
        with serve_app(app) as base:
            yield base + SEARCH_PATH


def ok(url: str, body: str, user: tuple[str, str] | None = USER) -> etree._Element:
    status, root = soap_call(url, body, NS, user=user)
    assert status == 200, etree.tostring(root)
    response = body_of(root)
    schemas.validate(response, "search")
    return response


def fault(url: str, body: str, user: tuple[str, str] | None = USER) -> tuple[int, list[str]]:
    status, root = soap_call(url, body, NS, user=user)
    return status, fault_chain(root)


def find_recordings(url: str, scope: str = "", extra: str = "", keep_alive: str = "PT10S") -> str:
    return str(ok(url, f"<tse:FindRecordings><tse:Scope>{scope}</tse:Scope>{extra}<tse:KeepAliveTime>{keep_alive}"
                       "</tse:KeepAliveTime></tse:FindRecordings>").findtext("tse:SearchToken", namespaces=NS))


def recording_results(url: str, token: str, max_results: int | None = None) -> tuple[str, list[etree._Element]]:
    limit = f"<tse:MaxResults>{max_results}</tse:MaxResults>" if max_results else ""
    result = ok(url, f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}</tse:SearchToken>{limit}"
                     "</tse:GetRecordingSearchResults>").find("tse:ResultList", NS)
    return result.findtext("tt:SearchState", namespaces=NS), result.findall("tt:RecordingInformation", NS)


def test_summary_and_information_edge_storage_anx_b_3_anx_b_5(search: str) -> None:
    """ANX-B-3, ANX-B-5: the summary spans every file; a recording's information names the Media2
    profile that made it (VideoSourceToken, SourceId), its times and its video track; an unknown
    recording is ter:InvalidToken."""
    summary = ok(search, "<tse:GetRecordingSummary/>").find("tse:Summary", NS)
    assert (summary.findtext("tt:DataFrom", namespaces=NS), summary.findtext("tt:DataUntil", namespaces=NS),
            summary.findtext("tt:NumberRecordings", namespaces=NS)) == (
        format_datetime(T0), format_datetime(T0 + 13), "2")
    info = ok(search, "<tse:GetRecordingInformation><tse:RecordingToken>rec-a</tse:RecordingToken>"
                      "</tse:GetRecordingInformation>").find("tse:RecordingInformation", NS)
    source = info.find("tt:Source", NS)
    assert (source.findtext("tt:VideoSourceToken", namespaces=NS), source.findtext("tt:SourceId", namespaces=NS),
            source.findtext("tt:Name", namespaces=NS), source.findtext("tt:Address", namespaces=NS)) == (
        "main", "main", "Entrance", search.rsplit("/onvif/", 1)[0])
    assert (info.findtext("tt:EarliestRecording", namespaces=NS), info.findtext("tt:LatestRecording", namespaces=NS),
            info.findtext("tt:Content", namespaces=NS)) == (format_datetime(T0), format_datetime(T0 + 13),
                                                             "door camera")
    track = info.find("tt:Track", NS)
    assert (track.findtext("tt:TrackToken", namespaces=NS), track.findtext("tt:TrackType", namespaces=NS),
            track.findtext("tt:DataTo", namespaces=NS)) == ("VIDEO", "Video", format_datetime(T0 + 13))
    assert fault(search, "<tse:GetRecordingInformation><tse:RecordingToken>nope</tse:RecordingToken>"
                         "</tse:GetRecordingInformation>") == (400, ["env:Sender", "ter:InvalidArgVal",
                                                                     "ter:InvalidToken"])


def test_find_recordings_scope_paging_and_end_anx_b_3(search: str, clock: FakeClock) -> None:
    """ANX-B-3: FindRecordings selects by source (profile) and recording token, pages with MaxResults
    (Searching, then Completed), EndSearch answers the end time and forgets the token."""
    token = find_recordings(search)
    state, first = recording_results(search, token, 1)
    assert (state, [r.findtext("tt:RecordingToken", namespaces=NS) for r in first]) == ("Searching", ["rec-a"])
    state, rest = recording_results(search, token)
    assert (state, [r.findtext("tt:RecordingToken", namespaces=NS) for r in rest]) == ("Completed", ["rec-b"])
    assert recording_results(search, token) == ("Completed", [])
    clock.now += 1.0
    end = ok(search, f"<tse:EndSearch><tse:SearchToken>{token}</tse:SearchToken></tse:EndSearch>")
    assert end.findtext("tse:Endpoint", namespaces=NS) == format_datetime(clock.now)
    assert fault(search, f"<tse:EndSearch><tse:SearchToken>{token}</tse:SearchToken></tse:EndSearch>") == (
        400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidToken"])
    by_source = find_recordings(search, "<tt:IncludedSources><tt:Token>sub</tt:Token></tt:IncludedSources>")
    assert [r.findtext("tt:RecordingToken", namespaces=NS) for r in recording_results(search, by_source)[1]] == [
        "rec-b"]
    by_token = find_recordings(search, "<tt:IncludedRecordings>rec-a</tt:IncludedRecordings>"
                                       "<tt:IncludedRecordings>rec-b</tt:IncludedRecordings>",
                               "<tse:MaxMatches>1</tse:MaxMatches>")
    assert recording_results(search, by_token)[1][0].findtext("tt:RecordingToken", namespaces=NS) == "rec-a"
    assert len(recording_results(search, by_token)[1]) == 0  # MaxMatches 1: one result in all
    none = find_recordings(search, "<tt:IncludedSources><tt:Token>other</tt:Token></tt:IncludedSources>")
    assert recording_results(search, none) == ("Completed", [])
    assert fault(search, "<tse:FindRecordings><tse:Scope><tt:RecordingInformationFilter>boolean(//Track)"
                         "</tt:RecordingInformationFilter></tse:Scope><tse:KeepAliveTime>PT10S</tse:KeepAliveTime>"
                         "</tse:FindRecordings>") == (400, ["env:Sender", "ter:InvalidArgVal",
                                                            "ter:InvalidFilterFault"])


def test_sessions_expire_and_are_bounded_anx_b_3(search: str, clock: FakeClock) -> None:
    """ANX-B-3: a search not kept alive within its KeepAliveTime is gone (ter:InvalidToken); at most 16
    are open at once (env:Receiver/ter:Action/ter:ResourceProblem), and an expired one frees its slot."""
    token = find_recordings(search, keep_alive="PT5S")
    clock.now += 4.0
    assert recording_results(search, token)[0] == "Completed"  # kept alive: now expires 5 s later
    clock.now += 6.0
    assert fault(search, f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}</tse:SearchToken>"
                         "</tse:GetRecordingSearchResults>") == (400, ["env:Sender", "ter:InvalidArgVal",
                                                                       "ter:InvalidToken"])
    for _ in range(16):
        find_recordings(search, keep_alive="PT30S")
    assert fault(search, "<tse:FindRecordings><tse:Scope/><tse:KeepAliveTime>PT30S</tse:KeepAliveTime>"
                         "</tse:FindRecordings>") == (500, ["env:Receiver", "ter:Action", "ter:ResourceProblem"])
    clock.now += 31.0
    find_recordings(search)


def find_events(url: str, start: float, end: float | None, extra: str = "", start_state: bool = False) -> str:
    end_point = "" if end is None else f"<tse:EndPoint>{format_datetime(end)}</tse:EndPoint>"
    return str(ok(url, f"<tse:FindEvents><tse:StartPoint>{format_datetime(start)}</tse:StartPoint>{end_point}"
                       f"<tse:Scope/><tse:SearchFilter>{extra}</tse:SearchFilter><tse:IncludeStartState>"
                       f"{'true' if start_state else 'false'}</tse:IncludeStartState>"
                       "<tse:KeepAliveTime>PT10S</tse:KeepAliveTime></tse:FindEvents>").findtext(
        "tse:SearchToken", namespaces=NS))


def event_results(url: str, token: str) -> list[tuple[str, float, str, str, str]]:
    result = ok(url, f"<tse:GetEventSearchResults><tse:SearchToken>{token}</tse:SearchToken>"
                     "</tse:GetEventSearchResults>").find("tse:ResultList", NS)
    assert result.findtext("tt:SearchState", namespaces=NS) == "Completed"
    out = []
    for item in result.findall("tt:Result", NS):
        message = item.find("tt:Event/wsnt:Message/tt:Message", NS)
        assert item.findtext("tt:Event/wsnt:Topic", namespaces=NS) == "tns1:RecordingHistory/Track/State"
        assert message.find("tt:Source/tt:SimpleItem[@Name='RecordingToken']", NS).get("Value") == item.findtext(
            "tt:RecordingToken", namespaces=NS)
        out.append((item.findtext("tt:RecordingToken", namespaces=NS),
                    parse_datetime(item.findtext("tt:Time", namespaces=NS)) - T0,
                    message.find("tt:Data/tt:SimpleItem[@Name='IsDataPresent']", NS).get("Value"),
                    item.findtext("tt:StartStateEvent", namespaces=NS), message.get("PropertyOperation")))
    return out


def test_find_events_track_state_and_filters_anx_b_3(search: str) -> None:
    """ANX-B-3: FindEvents answers the recording-history events of the files in the window (forward,
    backward, with start states), filtered by topic expression and MessageContent; an unsupported
    filter is ter:InvalidFilterFault."""
    assert event_results(search, find_events(search, T0 + 1, T0 + 10, start_state=True)) == [
        ("rec-a", 1, "true", "true", "Initialized"), ("rec-b", 1, "false", "true", "Initialized"),
        ("rec-b", 2, "true", "false", "Changed"), ("rec-a", 4, "false", "false", "Changed"),
        ("rec-b", 7, "false", "false", "Changed"), ("rec-a", 10, "true", "false", "Changed")]
    assert [e[:2] for e in event_results(search, find_events(search, T0 + 20, T0 + 5))] == [
        ("rec-a", 13), ("rec-a", 10), ("rec-b", 7)]
    topic = ('<wsnt:TopicExpression Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet" '
             'xmlns:tns1="http://www.onvif.org/ver10/topics">tns1:RecordingHistory//.</wsnt:TopicExpression>')
    content = ('<wsnt:MessageContent Dialect="http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter">'
               'boolean(//tt:SimpleItem[@Name="RecordingToken" and @Value="rec-b"])</wsnt:MessageContent>')
    assert [e[:3] for e in event_results(search, find_events(search, T0, None, topic + content))] == [
        ("rec-b", 2, "true"), ("rec-b", 7, "false")]
    status, chain = fault(search, "<tse:FindEvents><tse:StartPoint>2026-01-01T12:00:00Z</tse:StartPoint>"
                                  "<tse:Scope/><tse:SearchFilter><wsnt:TopicExpression Dialect='urn:bogus'>x"
                                  "</wsnt:TopicExpression></tse:SearchFilter><tse:IncludeStartState>false"
                                  "</tse:IncludeStartState><tse:KeepAliveTime>PT10S</tse:KeepAliveTime>"
                                  "</tse:FindEvents>")
    assert (status, chain) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidFilterFault"])


def test_access_classes_sec_1_sec_3(search: str) -> None:
    """SEC-1, SEC-3: GetServiceCapabilities is PRE_AUTH, every search operation READ_MEDIA (refused to
    an anonymous caller with ter:NotAuthorized, allowed to a User); the table is ONVIF's."""
    assert {op: cls for (ns, op), cls in OPERATION_ACCESS.items() if ns == TSE} == {
        "GetServiceCapabilities": "PRE_AUTH", "GetRecordingSummary": "READ_MEDIA",
        "GetRecordingInformation": "READ_MEDIA", "FindRecordings": "READ_MEDIA",
        "GetRecordingSearchResults": "READ_MEDIA", "FindEvents": "READ_MEDIA", "GetEventSearchResults": "READ_MEDIA",
        "EndSearch": "READ_MEDIA"}
    caps = ok(search, "<tse:GetServiceCapabilities/>", user=None).find("tse:Capabilities", NS)
    assert caps.get("MetadataSearch") == "false"
    status, chain = fault(search, "<tse:GetRecordingSummary/>", user=None)
    assert status in (400, 401) and chain == ["env:Sender", "ter:NotAuthorized"]
    ok(search, "<tse:GetRecordingSummary/>", user=ADMIN)


def test_get_services_lists_search_and_replay_anx_b_3(search: str) -> None:
    """ANX-B-3: GetServices lists Recording Search and Replay at their addresses with capabilities."""
    base = search.rsplit("/onvif/", 1)[0]
    status, root = soap_call(base + "/onvif/device_service", "<tds:GetServices><tds:IncludeCapability>true"
                                                             "</tds:IncludeCapability></tds:GetServices>", NS)
    assert status == 200
    addresses = {s.findtext("tds:Namespace", namespaces=NS): s.findtext("tds:XAddr", namespaces=NS)
                 for s in root.iter(f"{{{TDS}}}Service")}
    assert addresses[TSE] == search
    assert addresses["http://www.onvif.org/ver10/replay/wsdl"] == base + "/onvif/replay_service"


def test_zeep_client_on_our_wsdl_anx_b_3(search: str) -> None:
    """ANX-B-3: strict zeep built from wsdl/search.wsdl finds recordings and events and reads faults."""
    from zeep.wsse.username import UsernameToken

    client = zeep.Client(str(schemas.wsdl_path("search")),
                         settings=zeep.Settings(strict=True, forbid_dtd=True, forbid_external=True),
                         wsse=UsernameToken(*USER, use_digest=True))
    service = client.create_service(f"{{{TSE}}}SearchBinding", search)
    assert service.GetRecordingSummary().NumberRecordings == 2
    token = service.FindRecordings(Scope={"IncludedSources": [{"Token": "main"}]}, KeepAliveTime="PT10S")
    result = service.GetRecordingSearchResults(SearchToken=token)
    assert (result.SearchState, [r.Source.VideoSourceToken for r in result.RecordingInformation]) == (
        "Completed", ["main"])
    service.EndSearch(SearchToken=token)
    token = service.FindEvents(StartPoint=format_datetime(T0), Scope={}, SearchFilter={}, IncludeStartState=False,
                               KeepAliveTime="PT10S")
    events = service.GetEventSearchResults(SearchToken=token, MaxResults=2)
    assert (events.SearchState, [r.RecordingToken for r in events.Result]) == ("Searching", ["rec-a", "rec-b"])
    with pytest.raises(zeep.exceptions.Fault) as info:
        service.GetRecordingInformation(RecordingToken="nope")
    assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "InvalidToken"]


# -- models and WSDL ------------------------------------------------------------------------------

COMMON = ("recording-common",)


@pytest.mark.parametrize(("model", "files", "type_name", "optional"), [
    (recording_module.SearchCapabilities, ("search",), "Capabilities", ()),
    (recording_module.ReplayCapabilities, ("replay",), "Capabilities", ("RTSPWebSocketUri",)),
    (recording_module.SourceReference, COMMON, "SourceReference", ()),
    (recording_module.SearchScope, COMMON, "SearchScope", ("Extension",)),
    (recording_module.RecordingSummary, COMMON, "RecordingSummary", ()),
    (recording_module.RecordingSourceInformation, COMMON, "RecordingSourceInformation", ()),
    (recording_module.TrackInformation, COMMON, "TrackInformation", ()),
    (recording_module.RecordingInformation, COMMON, "RecordingInformation", ()),
    (recording_module.FindRecordingResultList, COMMON, "FindRecordingResultList", ()),
    (recording_module.FindEventResult, COMMON, "FindEventResult", ()),
    (recording_module.FindEventResultList, COMMON, "FindEventResultList", ()),
    (recording_module.Transport, COMMON, "Transport", ("Tunnel",)),
    (recording_module.StreamSetup, COMMON, "StreamSetup", ()),
])
def test_spyne_models_match_authored_xsd_anx_b_3(model: type, files: tuple[str, ...], type_name: str,
                                                 optional: tuple[str, ...]) -> None:
    """ANX-B-3: the Spyne models carry the authored XSD's names, order and kinds (optional parts this
    device never sends or reads aside)."""
    assert_model_matches(model, files, type_name, optional)


def test_wsdl_bindings_and_token_types_anx_b_3() -> None:
    """ANX-B-3: SearchBinding/ReplayBinding with soapAction = namespace + operation, one operation per
    served method; every token is tt:ReferenceToken or one of the wire contract's restrictions of it
    (tt:RecordingReference, tt:TrackReference, tt:JobToken), as schema-driven adaption reads them."""
    for wsdl, namespace, binding in (("search", TSE, ("SearchBinding", "tse:SearchPort")),
                                     ("replay", TRP, ("ReplayBinding", "trp:ReplayPort"))):
        got, actions = binding_actions(wsdl)
        assert got == binding
        assert actions == {name: f"{namespace}/{name}" for ns, name in OPERATION_ACCESS if ns == namespace}
    common = etree.parse(str(schemas.xsd_path("recording-common")))
    restrictions = {t.getparent().get("name"): t.get("base")
                    for t in common.getroot().iterfind(f"{{{XS}}}simpleType/{{{XS}}}restriction")}
    assert {name: restrictions[name] for name in ("RecordingReference", "TrackReference", "JobToken")} == dict.fromkeys(
        ("RecordingReference", "TrackReference", "JobToken"), "tt:ReferenceToken")
    allowed = {"tt:ReferenceToken", "tt:RecordingReference", "tt:TrackReference", "tt:JobToken"}
    for xsd in ("search", "replay", "recording-common"):
        assert all(types <= allowed for types in token_types(xsd).values()), (xsd, token_types(xsd))
