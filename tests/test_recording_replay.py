"""ANX-B-3, SEC-1: Replay — GetReplayUri over the sample store and the replay RTSP server, which maps the
ONVIF ``Range: clock=`` of a PLAY to the recording's files: the decoded frames are those of the
requested window.

Recordings are MP4/MKV files made by ffmpeg from a test pattern (a frame counter that changes every
frame) with known start times; a raw RTSP client sends the ONVIF replay PLAY (``Require: onvif-replay``,
``Range: clock=…``), the H.264 it receives is decoded by ffmpeg, and the first decoded picture is
compared with the source file's picture at the expected offset and at others.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zeep
from conftest import USER, seed_device
from helpers import fault_chain
from lxml import etree
from recording_env import T0, make_video, replay_play, stamp
from rtsp_env import RawPlayer
from served_app import body_of, serve_app, soap_call

from iec62676_2_33 import schemas
from iec62676_2_33.domain.recordings import IndexedRecordingStore, RecordingConfig, RecordingFile
from iec62676_2_33.namespaces import SOAP_ENV, TT
from iec62676_2_33.runtime import replay_rtsp
from iec62676_2_33.runtime.recording_files import FolderRecordingStore, save_recording_configs
from iec62676_2_33.runtime.replay_server import ReplayServer, replay_available
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.recording import OPERATION_ACCESS, REPLAY_PATH, TRP
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import wait_until

NS = {"env": SOAP_ENV, "trp": TRP, "tt": TT}
WIDTH, HEIGHT = 320, 240
needs_replay = pytest.mark.skipif(not (replay_available() and shutil.which("ffmpeg")),
                                  reason="GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0) or "
                                         "ffmpeg is not installed (.ci/run installs them)")


def test_clock_range_mapping_matches_the_domain_anx_b_3() -> None:
    """ANX-B-3: the replay process's clock→npt rewrite uses the same timeline as Recording.offset_of
    (files back to back, a gap plays from the next file, after the end: refused)."""
    files = [RecordingFile(path="a", start=T0, duration=4.0), RecordingFile(path="b", start=T0 + 10, duration=3.0)]
    rec = IndexedRecordingStore([(RecordingConfig(token="r", source_token="s", folder="/f"), files)]).recording("r")
    assert rec is not None
    segments = [{"start": f.start, "duration": f.duration} for f in files]
    for delta in (-3.0, 0.0, 1.5, 3.9, 6.0, 10.0, 12.25, 13.0, 20.0):
        clock = time.strftime("%Y%m%dT%H%M%S", time.gmtime(T0 + delta)) + f"{delta % 1:.2f}"[1:] + "Z"
        expected = rec.offset_of(T0 + delta)
        assert replay_rtsp._npt_range(f"clock={clock}-", segments) == (
            None if expected is None else f"npt={expected:.3f}-"), delta
    window = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(T0 + 1))
    end = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(T0 + 11))
    assert replay_rtsp._npt_range(f"clock={window}-{end}", segments) == "npt=1.000-5.000"
    assert replay_rtsp._npt_range("clock=garbage-", segments) is None


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rec-a``: two MP4 files, 12:00:00 + 4 s and 12:00:10 + 4 s; ``rec-k``: one MKV file 12:00:00 + 4 s."""
    if not (replay_available() and shutil.which("ffmpeg")):
        pytest.skip("GStreamer's RTSP server or ffmpeg is not installed (.ci/run installs them)")
    root = tmp_path_factory.mktemp("replay")
    (root / "a").mkdir()
    (root / "k").mkdir()
    make_video(root / "a" / f"cam_{stamp(T0)}.mp4", 4)
    make_video(root / "a" / f"cam_{stamp(T0 + 10)}.mp4", 4, pattern="testsrc2")
    make_video(root / "k" / f"cam_{stamp(T0)}.mkv", 4, pattern="testsrc2")
    return root


@pytest.fixture
def replay(recordings: Path, tmp_path: Path) -> Iterator[tuple[str, ReplayServer]]:
    """A device application with Replay (and its RTSP server) on loopback; yields the Replay address."""
    data = tmp_path / "device"
    seed_device(data)
    save_recording_configs(data, [RecordingConfig(token="rec-a", source_token="main", folder=str(recordings / "a")),
                                  RecordingConfig(token="rec-k", source_token="sub", folder=str(recordings / "k"))])
    store = FolderRecordingStore(data)
    with ReplayServer(store) as server, DeviceStore(data) as device_store:
        app = build_device_app(UplinkServiceContext(store=device_store), recordings=store, replay_base=server.base)
        with serve_app(app) as base:
            yield base + REPLAY_PATH, server


def replay_uri(url: str, token: str, stream: str = "RTP-Unicast", protocol: str = "RTSP") -> tuple[int, etree._Element]:
    status, root = soap_call(url, f"<trp:GetReplayUri><trp:StreamSetup><tt:Stream>{stream}</tt:Stream><tt:Transport>"
                                  f"<tt:Protocol>{protocol}</tt:Protocol></tt:Transport></trp:StreamSetup>"
                                  f"<trp:RecordingToken>{token}</trp:RecordingToken></trp:GetReplayUri>", NS,
                             user=USER)
    return status, root


def h264_of(player: RawPlayer, frames: int) -> bytes:
    """Annex B H.264 from the RTP packets of interleaved channel 0 until ``frames`` access units ended
    (RTP marker bit); single NAL units, STAP-A and FU-A (RFC 6184)."""
    out, ended = bytearray(), 0
    start = b"\x00\x00\x00\x01"
    while ended < frames:
        while not (player.buf.startswith(b"$") and len(player.buf) >= 4
                   and len(player.buf) >= 4 + int.from_bytes(player.buf[2:4], "big")):
            chunk = player.sock.recv(65536)
            if not chunk:
                raise EOFError("the replay server closed the connection")
            player.buf += chunk
        size = int.from_bytes(player.buf[2:4], "big")
        channel, packet, player.buf = player.buf[1], player.buf[4:4 + size], player.buf[4 + size:]
        if channel != 0:
            continue
        offset = 12 + 4 * (packet[0] & 0x0F)
        if packet[0] & 0x10:  # header extension
            offset += 4 + 4 * int.from_bytes(packet[offset + 2:offset + 4], "big")
        payload, kind = packet[offset:], packet[offset] & 0x1F
        if kind == 24:  # STAP-A
            at = 1
            while at + 2 <= len(payload):
                length = int.from_bytes(payload[at:at + 2], "big")
                out += start + payload[at + 2:at + 2 + length]
                at += 2 + length
        elif kind == 28:  # FU-A
            if payload[1] & 0x80:
                out += start + bytes([(payload[0] & 0xE0) | (payload[1] & 0x1F)])
            out += payload[2:]
        else:
            out += start + payload
        ended += packet[1] >> 7
    return bytes(out)


def gray_frames(args: list[str], count: int) -> list[bytes]:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", *args, "-frames:v", str(count),
                           "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, timeout=60, check=True)
    size = WIDTH * HEIGHT
    return [done.stdout[i:i + size] for i in range(0, len(done.stdout) - size + 1, size)]


def distance(a: bytes, b: bytes) -> float:
    return sum(abs(x - y) for x, y in zip(a[::7], b[::7], strict=True)) / len(a[::7])


def play_window(uri: str, clock_range: str, frames: int = 5) -> tuple[dict[str, str], list[bytes]]:
    """The ONVIF replay PLAY on ``uri``; the PLAY response headers and the first decoded pictures."""
    player, status, head = replay_play(uri, clock_range)
    try:
        assert status == 200, (status, head)
        stream = h264_of(player, frames + 3)
    finally:
        player.close()
    return head, _decode(stream, frames)


def _decode(stream: bytes, frames: int) -> list[bytes]:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "h264", "-i", "pipe:0",
                           "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                          input=stream, capture_output=True, timeout=60, check=True)
    size = WIDTH * HEIGHT
    return [done.stdout[i:i + size] for i in range(0, len(done.stdout) - size + 1, size)]


def source_frame(path: Path, offset: float) -> bytes:
    return gray_frames(["-ss", f"{offset:.3f}", "-i", str(path)], 1)[0]


def closest(frame: bytes, candidates: dict[str, bytes]) -> str:
    return min(candidates, key=lambda name: distance(frame, candidates[name]))


@needs_replay
def test_replay_plays_the_requested_window_anx_b_3(replay: tuple[str, ReplayServer], recordings: Path) -> None:
    """ANX-B-3: GetReplayUri gives the replay server's URI; a PLAY with Range: clock= starting 2 s into the
    first file, and one starting 1 s into the second file (across the 6 s gap), each deliver the
    pictures of that instant: the first decoded picture matches the source there and not elsewhere."""
    url, server = replay
    status, root = replay_uri(url, "rec-a")
    assert status == 200, etree.tostring(root)
    response = body_of(root)
    schemas.validate(response, "replay")
    uri = response.findtext("trp:Uri", namespaces=NS)
    assert uri == f"{server.base}/rec-a"
    first, second = recordings / "a" / f"cam_{stamp(T0)}.mp4", recordings / "a" / f"cam_{stamp(T0 + 10)}.mp4"
    candidates = {"a@0": source_frame(first, 0.0), "a@2": source_frame(first, 2.0), "a@3": source_frame(first, 3.0),
                  "b@0": source_frame(second, 0.0), "b@1": source_frame(second, 1.0),
                  "b@3": source_frame(second, 3.0)}

    head, frames = play_window(uri, f"clock={stamp(T0 + 2)}-")
    assert head.get("range", "").startswith("npt=2")
    assert frames and closest(frames[0], candidates) == "a@2"
    assert distance(frames[0], candidates["a@2"]) < 2.0  # the same picture, up to coding noise

    head, frames = play_window(uri, f"clock={stamp(T0 + 11)}-{stamp(T0 + 13)}")
    assert head.get("range", "").startswith("npt=5")  # 4 s of the first file, then 1 s into the second
    assert frames and closest(frames[0], candidates) == "b@1"


@needs_replay
def test_replay_of_a_single_mkv_and_refusals_anx_b_3(replay: tuple[str, ReplayServer], recordings: Path) -> None:
    """ANX-B-3: a one-file MKV recording replays from the requested instant; a clock range after the
    recording is refused (457 Invalid Range); GetReplayUri faults ter:NoRecording for an unknown token and
    ter:InvalidStreamSetup for multicast or HTTP tunnelling; READ_MEDIA is needed."""
    url, _ = replay
    status, root = replay_uri(url, "rec-k")
    uri = body_of(root).findtext("trp:Uri", namespaces=NS)
    source = recordings / "k" / f"cam_{stamp(T0)}.mkv"
    candidates = {f"k@{s}": source_frame(source, float(s)) for s in (0, 1, 2, 3)}
    _, frames = play_window(uri, f"clock={stamp(T0 + 2)}-")
    assert closest(frames[0], candidates) == "k@2"

    player, status, _ = replay_play(uri, f"clock={stamp(T0 + 60)}-", onvif=False)
    player.close()
    assert status == 457

    for token, stream, protocol, chain in (
            ("nope", "RTP-Unicast", "RTSP", ["env:Sender", "ter:InvalidArgVal", "ter:NoRecording"]),
            ("rec-a", "RTP-Multicast", "UDP", ["env:Sender", "ter:InvalidArgVal", "ter:InvalidStreamSetup"]),
            ("rec-a", "RTP-Unicast", "HTTP", ["env:Sender", "ter:InvalidArgVal", "ter:InvalidStreamSetup"])):
        status, root = replay_uri(url, token, stream, protocol)
        assert (status, fault_chain(root)) == (400, chain)
    assert OPERATION_ACCESS[(TRP, "GetReplayUri")] == "READ_MEDIA"
    status, root = soap_call(url, "<trp:GetReplayUri><trp:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
                                  "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trp:StreamSetup>"
                                  "<trp:RecordingToken>rec-a</trp:RecordingToken></trp:GetReplayUri>", NS)
    assert status in (400, 401) and fault_chain(root) == ["env:Sender", "ter:NotAuthorized"]


def play_status(uri: str, clock_range: str) -> tuple[int, str]:
    """The status and Range header of an ONVIF replay PLAY (no media read)."""
    player = RawPlayer(uri)
    try:
        status, head, sdp = player.request("DESCRIBE", uri, "Accept: application/sdp")
        if status != 200:
            return status, ""
        base = head.get("content-base", uri + "/")
        control = next(line[len("a=control:"):] for line in sdp.decode().splitlines()
                       if line.startswith("a=control:") and line != "a=control:*")
        track = control if control.startswith("rtsp://") else base.rstrip("/") + "/" + control
        status, head, _ = player.request("SETUP", track, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
        status, head, _ = player.request("PLAY", base, f"Session: {head['session'].split(';')[0]}",
                                         f"Range: {clock_range}")
        return status, head.get("range", "")
    finally:
        player.close()


@needs_replay
def test_a_growing_recording_is_replayed_anx_b_3(recordings: Path, tmp_path: Path) -> None:
    """ANX-B-3: a file added to a recording's folder while the server runs is searched and replayed: the
    replay server takes the new index within a bounded time, and a PLAY at the new file's time plays it."""
    folder = tmp_path / "grow"
    folder.mkdir()
    shutil.copy(recordings / "a" / f"cam_{stamp(T0 + 10)}.mp4", folder / f"cam_{stamp(T0)}.mp4")
    data = tmp_path / "device"
    save_recording_configs(data, [RecordingConfig(token="grow", source_token="main", folder=str(folder))])
    store = FolderRecordingStore(data)
    with ReplayServer(store) as server:
        uri = f"{server.base}/grow"
        assert play_status(uri, f"clock={stamp(T0 + 20)}-")[0] == 457  # not recorded (yet)
        shutil.copy(recordings / "a" / f"cam_{stamp(T0)}.mp4", folder / f"cam_{stamp(T0 + 20)}.mp4")

        def played() -> str | None:
            status, npt = play_status(uri, f"clock={stamp(T0 + 21)}-")
            return npt if status == 200 else None

        npt = wait_until(played, timeout=20.0, interval=0.5, what="the new file in the replay index")
        assert npt.startswith("npt=5")  # 4 s of the first file, then 1 s into the new one
    assert [len(r.files) for r in store.recordings()] == [2]


@needs_replay
def test_zeep_client_on_our_replay_wsdl_anx_b_3(replay: tuple[str, ReplayServer]) -> None:
    """ANX-B-3: strict zeep built from wsdl/replay.wsdl reads the capabilities and gets the replay URI."""
    from zeep.wsse.username import UsernameToken

    url, server = replay
    client = zeep.Client(str(schemas.wsdl_path("replay")),
                         settings=zeep.Settings(strict=True, forbid_dtd=True, forbid_external=True),
                         wsse=UsernameToken(*USER, use_digest=True))
    service = client.create_service(f"{{{TRP}}}ReplayBinding", url)
    caps = service.GetServiceCapabilities()
    assert (caps.ReversePlayback, caps.RTP_RTSP_TCP, caps.SessionTimeoutRange) == (False, True, [60.0, 60.0])
    assert service.GetReplayUri(StreamSetup={"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                                RecordingToken="rec-a") == f"{server.base}/rec-a"


@needs_replay
def test_file_names_cannot_add_pipeline_elements_anx_b_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ANX-B-3: a recording file whose name carries quotes and ``!`` (anyone who can drop a file into a
    recording folder can choose its name) does not add elements to the replay server's pipeline: no file is
    written by an injected ``filesink``, and the recording still replays as H.264."""
    monkeypatch.chdir(tmp_path)  # the replay server runs here: an injected relative filesink would write here
    folder = tmp_path / "evil"
    folder.mkdir()
    name = f'a.mp4" ! tee name=t t. ! queue ! filesink location=PWNED t. ! queue ! identity name="x{stamp(T0)}.mp4'
    make_video(folder / name, 2)
    data = tmp_path / "device"
    seed_device(data)
    save_recording_configs(data, [RecordingConfig(token="evil", source_token="main", folder=str(folder))])
    with ReplayServer(FolderRecordingStore(data)) as server:
        probe = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0",
                                "-show_entries", "stream=codec_name", "-of", "csv=p=0", f"{server.base}/evil"],
                               capture_output=True, text=True, timeout=60, check=False)
    assert probe.stdout.split() == ["h264"], probe.stderr[-2000:]
    assert not (tmp_path / "PWNED").exists()

