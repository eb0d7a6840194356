"""Attacks on Recording Search and the replay RTSP server, on real loopback.

* ANX-B-3: a PLAY whose range ends where it starts (``npt=1-1``, ``smpte=…``, ``clock=A-A``, or a clock window
  that lies in the gap between two files) is 457 Invalid Range, and the replay server goes on serving other
  players; GStreamer itself aborts the whole process on such a range.
* ANX-B-3: a ``clock=`` time that is no time of day (``23:59:99``) or a window that runs backwards is 457, not
  played from some other instant; a Range that is not UTF-8 is 400, not a response with status 0.
* ANX-B-3: the replay server reads no request body beyond a few KiB (413, connection closed: GStreamer's
  default buffers up to 4 GiB per request), serves a bounded number of player connections (one more is
  closed at once: each DESCRIBE prepares a pipeline) and of sessions per connection and in all (503 beyond);
  the sessions of a player whose connection closed free their places within seconds, and so do connections
  that never set up a session.
* ANX-B-3, SEC-1: a search token is not guessable: a User who searches too cannot page through or end an
  Administrator's search by counting from the token he got.
* ANX-B-3: a StartPoint or EndPoint that a zone offset moves outside the years 1 … 9999 is
  ``env:Sender/ter:InvalidArgVal`` at FindEvents, not a search whose results or end fail with 500.
* ANX-B-3: FindEvents over a large archive holds no more than its MaxMatches events (it built every event of
  every file first), and still answers them in time order; its scan holds up no other user's search.
* ANX-B-1, SEC-1: a snapshot the camera sends as an SVG document with a script is relayed with a sandboxing
  Content-Security-Policy and ``nosniff``: it cannot run on the device's origin with the user's credentials.

Real parts: the replay server (GStreamer's RTSP server in its subprocess) on MP4 files made by ffmpeg, raw RTSP
players over TCP with read timeouts; a device application with the Search service served on loopback and raw
SOAP 1.2 envelopes with WS-Security users; a running device (``device`` fixture) and a camera HTTP server
started here for the snapshot relay, fetched with HTTP Digest; every wait bounded.
"""

from __future__ import annotations

import http.server
import re
import shutil
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN, USER, RunningDevice, seed_device
from helpers import fault_chain, http_serving
from lxml import etree
from recording_env import T0, make_video, stamp
from rtsp_env import RawPlayer
from served_app import body_of, serve_app, soap_call

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.recordings import IndexedRecordingStore, RecordingConfig, RecordingFile
from iec62676_2_33.namespaces import SOAP_ENV, TT, WSNT
from iec62676_2_33.runtime import replay_rtsp
from iec62676_2_33.runtime.replay_server import ReplayServer, replay_available
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.recording import SEARCH_PATH, TSE
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import wait_until

NS = {"env": SOAP_ENV, "tse": TSE, "tt": TT, "wsnt": WSNT}
READ_TIMEOUT = 10.0


def clock(delta: float) -> str:
    return stamp(T0 + delta)


# -- the replay RTSP server --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rec-a``: two MP4 files, 12:00:00 + 4 s and 12:00:10 + 4 s (a gap from 12:00:04 to 12:00:10)."""
    if not (replay_available() and shutil.which("ffmpeg")):
        pytest.skip("GStreamer's RTSP server or ffmpeg is not installed (.ci/run installs them)")
    folder = tmp_path_factory.mktemp("attack-replay")
    make_video(folder / f"cam_{stamp(T0)}.mp4", 4)
    make_video(folder / f"cam_{stamp(T0 + 10)}.mp4", 4, pattern="testsrc2")
    return folder


@pytest.fixture
def replay(footage: Path) -> Iterator[str]:
    """A replay server of ``rec-a``; yields the recording's replay URI."""
    files = sorted(footage.glob("*.mp4"))
    store = IndexedRecordingStore([(RecordingConfig(token="rec-a", source_token="main", folder=str(footage)),
                                    [RecordingFile(path=str(f), start=T0 + 10 * n, duration=4.0)
                                     for n, f in enumerate(files)])])
    with ReplayServer(store) as server:
        yield server.base + "/rec-a"


def describe(uri: str) -> tuple[RawPlayer, str, str]:
    """A player that has DESCRIBEd ``uri``: the player, the Content-Base and the track's control URL."""
    player = RawPlayer(uri, timeout=READ_TIMEOUT)
    try:
        status, head, sdp = player.request("DESCRIBE", uri, "Accept: application/sdp")
        assert status == 200, (status, head)
    except BaseException:
        player.close()
        raise
    base = head.get("content-base", uri + "/")
    control = next(line[len("a=control:"):] for line in sdp.decode().splitlines()
                   if line.startswith("a=control:") and line != "a=control:*")
    return player, base, control if control.startswith("rtsp://") else base.rstrip("/") + "/" + control


def setup(player: RawPlayer, track: str) -> tuple[int, str]:
    """A SETUP of ``track`` (RTP over the RTSP connection) in a new session: the status and the session id."""
    status, head, _ = player.request("SETUP", track, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
    return status, head.get("session", "").split(";")[0]


def play_status(uri: str, *headers: str, raw_range: bytes | None = None) -> int:
    """The status of a PLAY with ``headers`` (or a raw ``Range`` line) in a fresh session of ``uri`` (the
    SETUP's when that fails)."""
    player, base, track = describe(uri)
    try:
        status, session = setup(player, track)
        if status != 200:
            return status
        if raw_range is None:
            return player.request("PLAY", base, f"Session: {session}", *headers)[0]
        player.cseq += 1
        player.send(f"PLAY {base} RTSP/1.0\r\nCSeq: {player.cseq}\r\nSession: {session}\r\n".encode()
                    + b"Range: " + raw_range + b"\r\n\r\n")
        return player.read_response()[0]
    finally:
        player.close()


def serves(uri: str) -> bool:
    """A new player gets a DESCRIBE answered and a PLAY from the start (``False``: refused or closed)."""
    try:
        return play_status(uri, f"Range: clock={clock(1)}-") == 200
    except (EOFError, OSError):
        return False


def test_a_range_with_nothing_to_play_is_457_and_the_server_lives_anx_b_3(replay: str) -> None:
    """ANX-B-3: every spelling of an empty window is refused before GStreamer sees it (it would abort)."""
    for value in ("npt=1-1", "npt=0.0-0.0", "smpte=0:00:01-0:00:01", f"clock={clock(1)}-{clock(1)}",
                  f"clock={clock(5)}-{clock(8)}",  # in the gap: both ends map to 4.000
                  f"clock={clock(13)[:-1]}.9996Z-{clock(20)}"):  # 0.4 ms before the end: 8.000-8.000
        assert play_status(replay, f"Range: {value}") == 457, value
        assert serves(replay), value


def test_clock_times_are_read_strictly_anx_b_3(replay: str) -> None:
    """ANX-B-3: ``23:59:99`` is no time (not 00:00:39 of the next day); a backward window is no window; a
    Range that is not UTF-8 is a bad request."""
    assert play_status(replay, "Range: clock=20251231T235999Z-") == 457
    assert play_status(replay, f"Range: clock={clock(3)}-{clock(1)}") == 457
    assert play_status(replay, f"Range: clock={clock(1)}-garbage") == 457
    assert play_status(replay, raw_range=b"clock=\xff\xfe" + clock(1).encode() + b"-") == 400
    assert serves(replay)


def test_request_bodies_are_bounded_anx_b_3(replay: str) -> None:
    """ANX-B-3: a request announcing a 3 GB body is answered 413 at once and its connection closed."""
    host, port = replay.removeprefix("rtsp://").split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=READ_TIMEOUT) as sock:
        sock.sendall(f"OPTIONS {replay} RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 3000000000\r\n\r\n".encode())
        answer = sock.recv(4096)
        assert answer.startswith(b"RTSP/1.0 413 "), answer[:100]
        with pytest.raises(OSError):  # closed: the body is never read
            for _ in range(4096):
                sock.sendall(b"x" * 65536)
    assert serves(replay)


def test_player_connections_are_bounded_anx_b_3(replay: str) -> None:
    """ANX-B-3: MAX_CLIENTS players are served at once; one more is closed before it is answered, and a
    place freed by a player that left is taken again."""
    players = []
    try:
        for _ in range(replay_rtsp.MAX_CLIENTS):
            players.append(describe(replay)[0])
        extra = RawPlayer(replay, timeout=READ_TIMEOUT)
        try:
            with pytest.raises((EOFError, OSError)):
                extra.request("DESCRIBE", replay, "Accept: application/sdp")
        finally:
            extra.close()
        players.pop().close()
        assert wait_until(lambda: serves(replay), what="a place for a new player")
    finally:
        for player in players:
            player.close()


def test_idle_connections_do_not_hold_the_places_anx_b_3(replay: str) -> None:
    """ANX-B-3: connections that never set up a session are closed after SESSIONLESS_TIMEOUT, so MAX_CLIENTS
    sockets that say nothing shut players out only for a while."""
    host, port = replay.removeprefix("rtsp://").split("/", 1)[0].split(":")
    idle = [socket.create_connection((host, int(port)), timeout=READ_TIMEOUT)
            for _ in range(replay_rtsp.MAX_CLIENTS)]
    try:
        assert wait_until(lambda: not serves(replay), what="the places taken")
        assert wait_until(lambda: serves(replay), timeout=replay_rtsp.SESSIONLESS_TIMEOUT + 15.0,
                          interval=1.0, what="the idle connections closed")
        for sock in idle:
            assert sock.recv(1) == b""  # closed by the server
    finally:
        for sock in idle:
            sock.close()


def test_sessions_are_bounded_per_connection_and_in_all_anx_b_3(replay: str) -> None:
    """ANX-B-3: a connection holds at most MAX_SESSIONS_PER_CLIENT sessions, all players at most MAX_SESSIONS
    (503 beyond, as GStreamer answers a full session pool); the sessions of players that left are freed."""
    per_client, total = replay_rtsp.MAX_SESSIONS_PER_CLIENT, replay_rtsp.MAX_SESSIONS
    players: list[RawPlayer] = []
    try:
        player, _, track = describe(replay)
        players.append(player)
        assert [setup(player, track)[0] for _ in range(per_client + 1)] == [200] * per_client + [503]
        while len(players) * per_client < total:
            player, _, track = describe(replay)
            players.append(player)
            assert [setup(player, track)[0] for _ in range(per_client)] == [200] * per_client
        player, _, track = describe(replay)
        players.append(player)
        assert setup(player, track)[0] == 503
        for player in players:
            player.close()
        players.clear()
        assert wait_until(lambda: serves(replay), what="the sessions of closed players freed")
    finally:
        for player in players:
            player.close()


# -- Recording Search ---------------------------------------------------------------------------------

@pytest.fixture
def search(tmp_path: Path) -> Iterator[str]:
    """A device application serving Recording Search over two recordings held in memory."""
    data = tmp_path / "device"
    seed_device(data)
    recordings = IndexedRecordingStore([
        (RecordingConfig(token=token, source_token="main", folder="/recordings"),
         [RecordingFile(path=f"/recordings/{token}.mp4", start=T0 + 10 * n, duration=4.0)])
        for n, token in enumerate(("rec-a", "rec-b"))])
    with DeviceStore(data) as store, \
            serve_app(build_device_app(UplinkServiceContext(store=store), recordings=recordings)) as base:
        yield base + SEARCH_PATH


def call(url: str, body: str, user: tuple[str, str]) -> tuple[int, etree._Element]:
    status, root = soap_call(url, body, NS, user=user)
    return status, root


def find_recordings(url: str, user: tuple[str, str]) -> str:
    status, root = call(url, "<tse:FindRecordings><tse:Scope/><tse:KeepAliveTime>PT60S</tse:KeepAliveTime>"
                             "</tse:FindRecordings>", user)
    assert status == 200, etree.tostring(root)
    return str(body_of(root).findtext("tse:SearchToken", namespaces=NS))


def neighbours(token: str) -> list[str]:
    """The tokens a counter would have given just before and after ``token``."""
    match = re.fullmatch(r"(.*?)(\d+)", token)
    if match is None:
        return []
    prefix, number = match.group(1), int(match.group(2))
    return [f"{prefix}{n}" for n in range(max(0, number - 3), number + 4) if n != number]


def test_search_tokens_are_not_guessable_anx_b_3_sec_1(search: str) -> None:
    """ANX-B-3, SEC-1: the User cannot reach the Administrator's search from the token he was given."""
    theirs = find_recordings(search, ADMIN)
    mine = find_recordings(search, USER)
    guesses = neighbours(mine) + ["search-1", "search-2", "1", "0"]
    assert theirs not in guesses
    for guess in guesses:
        status, root = call(search, f"<tse:EndSearch><tse:SearchToken>{guess}</tse:SearchToken></tse:EndSearch>",
                            USER)
        assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidToken"]), guess
    status, root = call(search, f"<tse:GetRecordingSearchResults><tse:SearchToken>{theirs}</tse:SearchToken>"
                                "</tse:GetRecordingSearchResults>", ADMIN)
    assert status == 200, etree.tostring(root)
    result = body_of(root).find("tse:ResultList", NS)
    assert result.findtext("tt:SearchState", namespaces=NS) == "Completed"
    assert [r.findtext("tt:RecordingToken", namespaces=NS) for r in result.findall("tt:RecordingInformation", NS)
            ] == ["rec-a", "rec-b"]


@pytest.mark.parametrize("start, end, what", [
    ("0001-01-01T00:00:00+01:00", None, "StartPoint"),
    ("2026-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "EndPoint"),
])
def test_find_events_refuses_instants_no_answer_can_name_anx_b_3(search: str, start: str, end: str | None,
                                                                   what: str) -> None:
    """ANX-B-3: the refusal names the point; the device still searches afterwards."""
    end_point = "" if end is None else f"<tse:EndPoint>{end}</tse:EndPoint>"
    status, root = call(search, f"<tse:FindEvents><tse:StartPoint>{start}</tse:StartPoint>{end_point}<tse:Scope/>"
                                "<tse:SearchFilter/><tse:IncludeStartState>true</tse:IncludeStartState>"
                                "<tse:KeepAliveTime>PT10S</tse:KeepAliveTime></tse:FindEvents>", USER)
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal"])
    reason = root.findtext(".//env:Reason/env:Text", namespaces=NS)
    assert reason.startswith(f"{what}: ") and "years 1 to 9999" in reason, reason
    assert find_recordings(search, USER)


def test_find_events_holds_no_more_than_max_matches_anx_b_3(tmp_path: Path) -> None:
    """ANX-B-3: FindEvents with MaxMatches 10 over 100,000 files (200,000 events) keeps its memory to what it
    answers (it held every event of the archive before cutting: ~40 MiB a request), and answers the first 10
    in time order."""
    data = tmp_path / "device"
    seed_device(data)
    count = 50_000
    recordings = IndexedRecordingStore([
        (RecordingConfig(token=token, source_token="main", folder="/recordings"),
         [RecordingFile(path=f"/recordings/{n}.mp4", start=T0 + 60 * n + offset, duration=50.0) for n in range(count)])
        for token, offset in (("rec-a", 0.0), ("rec-b", 5.0))])
    body = ("<tse:FindEvents><tse:StartPoint>2026-01-01T00:00:00Z</tse:StartPoint><tse:Scope/><tse:SearchFilter/>"
            "<tse:IncludeStartState>false</tse:IncludeStartState><tse:MaxMatches>10</tse:MaxMatches>"
            "<tse:KeepAliveTime>PT10S</tse:KeepAliveTime></tse:FindEvents>")
    with DeviceStore(data) as store, \
            serve_app(build_device_app(UplinkServiceContext(store=store), recordings=recordings)) as base:
        url = base + SEARCH_PATH
        tracemalloc.start()
        try:
            status, root = call(url, body, USER)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert status == 200, etree.tostring(root)
        token = body_of(root).findtext("tse:SearchToken", namespaces=NS)
        status, root = call(url, f"<tse:GetEventSearchResults><tse:SearchToken>{token}</tse:SearchToken>"
                                 "</tse:GetEventSearchResults>", USER)
        assert status == 200, etree.tostring(root)
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB"
    results = body_of(root).findall("tse:ResultList/tt:Result", NS)
    assert [(r.findtext("tt:RecordingToken", namespaces=NS), r.findtext("tt:Time", namespaces=NS)[11:19])
            for r in results] == [("rec-a", "12:00:00"), ("rec-b", "12:00:05"), ("rec-a", "12:00:50"),
                                  ("rec-b", "12:00:55"), ("rec-a", "12:01:00"), ("rec-b", "12:01:05"),
                                  ("rec-a", "12:01:50"), ("rec-b", "12:01:55"), ("rec-a", "12:02:00"),
                                  ("rec-b", "12:02:05")]


def test_a_long_find_events_holds_up_no_other_search_anx_b_3(tmp_path: Path) -> None:
    """ANX-B-3: while one user's FindEvents scans 200,000 events with a filter that keeps none of them,
    another user's FindRecordings and GetRecordingSearchResults are answered (the scan ran under the lock
    of all search sessions: every search of the device waited for it)."""
    data = tmp_path / "device"
    seed_device(data)
    count = 100_000
    recordings = IndexedRecordingStore([
        (RecordingConfig(token=token, source_token="main", folder="/recordings"),
         [RecordingFile(path=f"/recordings/{n}.mp4", start=T0 + 60 * n, duration=50.0) for n in range(count)])
        for token in ("rec-a", "rec-b")])
    nothing = ("<wsnt:MessageContent Dialect='http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter'>"
               "boolean(//tt:SimpleItem[@Name='RecordingToken' and @Value='none'])</wsnt:MessageContent>")
    slow = (f"<tse:FindEvents><tse:StartPoint>2026-01-01T00:00:00Z</tse:StartPoint><tse:Scope/><tse:SearchFilter>"
            f"{nothing}</tse:SearchFilter><tse:IncludeStartState>false</tse:IncludeStartState>"
            "<tse:KeepAliveTime>PT60S</tse:KeepAliveTime></tse:FindEvents>")
    with DeviceStore(data) as store, \
            serve_app(build_device_app(UplinkServiceContext(store=store), recordings=recordings)) as base:
        url = base + SEARCH_PATH
        answered: list[int] = []
        scan = threading.Thread(target=lambda: answered.append(soap_call(url, slow, NS, user=ADMIN)[0]), daemon=True)
        scan.start()
        time.sleep(1.0)  # the scan has begun (it runs for seconds)
        token = find_recordings(url, USER)
        status, root = call(url, f"<tse:GetRecordingSearchResults><tse:SearchToken>{token}</tse:SearchToken>"
                                 "</tse:GetRecordingSearchResults>", USER)
        still_scanning = scan.is_alive()
        scan.join(60.0)
    assert status == 200, etree.tostring(root)
    assert still_scanning, "the other searches waited for the scan"
    assert answered == [200]


# -- the snapshot relay -------------------------------------------------------------------------------

SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>'
       b"fetch('/onvif/device_service', {method: 'POST', body: 'SetUser ...'})</script></svg>")


@pytest.fixture
def svg_camera() -> Iterator[str]:
    """A camera HTTP server whose snapshot is an SVG document with a script; yields its snapshot URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/svg+xml")
            self.send_header("Content-Length", str(len(SVG)))
            self.end_headers()
            self.wfile.write(SVG)

    with http_serving(Handler) as port:
        yield f"http://127.0.0.1:{port}/snap.svg"


def test_a_snapshot_cannot_run_script_on_the_device_origin_anx_b_1_sec_1(device: RunningDevice,
                                                                         svg_camera: str) -> None:
    """ANX-B-1, SEC-1: the relayed image is served from the device's origin, where a browser holds the user's
    HTTP Digest credentials: whatever the camera sends (here an SVG document with a script) goes out with a
    sandboxing Content-Security-Policy and ``nosniff``, so it is shown, never run."""
    with DeviceStore(device.data) as store:
        store.put_media_source(MediaSource(token="svg", name="SVG", rtsp_url="rtsp://127.0.0.1:8554/cam",
                                           snapshot_url=svg_camera))
    got = httpx.get(device.base + "/onvif/snapshot/svg", auth=httpx.DigestAuth(*USER), timeout=READ_TIMEOUT)
    assert (got.status_code, got.content) == (200, SVG)
    assert got.headers["x-content-type-options"] == "nosniff"
    policy = [part.strip() for part in got.headers["content-security-policy"].split(";")]
    assert "sandbox" in policy and "default-src 'none'" in policy
