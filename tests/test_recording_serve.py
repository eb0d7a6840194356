"""ANX-B-3, ANX-B-5, SEC-1, STR-1, STR-4, STR-5: recordings served by ``iec62676 device serve``.

``iec62676 recordings add`` configures a folder of MP4 files made by ffmpeg, then ``iec62676 device
serve`` runs in a subprocess, as an operator runs them: strict zeep clients built from the authored
``wsdl/search.wsdl`` and ``wsdl/replay.wsdl`` read the recording summary, find the recording (its source
the Media2 profile that made it, ANX-B-5) and ask for its replay URI with a User's credentials
(READ_MEDIA, SEC-1); ffprobe plays that URI. Stopping the device stops its replay server. Where the host
cannot run the replay server (no GStreamer RTSP server: the interpreter is missing), the device says so
in one log line, still serves Recording Search and faults GetReplayUri ``Receiver/ActionNotSupported``;
a replay port in use is a one-line error. Through a real cloud (uplink, HTTP proxy, RTSP front), the
replay URI points at the cloud's RTSP front and plays over the uplink (STR-1) with the uplink's
UserLevel (STR-4). Every wait is bounded.
"""
from __future__ import annotations

import asyncio
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zeep
import zeep.exceptions
from camera import HEIGHT, WIDTH
from conftest import USER, seed_device
from helpers import one_line_error
from recording_env import T0, make_video, replay_play, stamp
from rtsp_env import DEVICE, video_env
from rtsp_env import TOKEN as TOKEN_LIVE
from zeep.wsse.username import UsernameToken

from iec62676_2_33 import schemas
from iec62676_2_33.api import serve_device
from iec62676_2_33.client import UplinkClient
from iec62676_2_33.domain.media import REPLAY_TOKEN, MediaSource, validate_media_source
from iec62676_2_33.domain.subscriptions import parse_datetime
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime import replay_server
from iec62676_2_33.runtime.recording_files import FolderRecordingStore
from iec62676_2_33.runtime.replay_server import replay_available, start_replay_server
from iec62676_2_33.services.app import UPLINK_PATH
from iec62676_2_33.services.recording import REPLAY_PATH, SEARCH_PATH, TRP, TSE

CLI = [sys.executable, "-m", "iec62676_2_33"]
WAIT = 60.0
TOKEN = "rec-cli"
SETUP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}

needs_replay = pytest.mark.skipif(not (replay_available() and shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                  reason="GStreamer's RTSP server or ffmpeg is not installed (.ci/run installs them)")


@dataclass
class Served:
    data: Path
    base: str  # http://127.0.0.1:<port>
    proc: subprocess.Popen[str]
    stderr: list[str]


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=WAIT, check=False)


def wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two MP4 files of 3 s each, 12:00:00 and 12:00:05 UTC."""
    if not (replay_available() and shutil.which("ffmpeg")):
        pytest.skip("GStreamer's RTSP server or ffmpeg is not installed (.ci/run installs them)")
    folder = tmp_path_factory.mktemp("footage")
    make_video(folder / f"cam_{stamp(T0)}.mp4", 3)
    make_video(folder / f"cam_{stamp(T0 + 5)}.mp4", 3, pattern="testsrc2")
    return folder


def add_recording(data: Path, folder: Path) -> None:
    seed_device(data)
    added = cli("recordings", "add", "--data", str(data), "--token", TOKEN, "--source-token", "main",
                "--folder", str(folder), "--name", "Entrance")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"recording {TOKEN} added")


@pytest.fixture
def served(tmp_path: Path, footage: Path) -> Iterator[Served]:
    """``recordings add`` then ``device serve`` in a subprocess; waits for its ``device serving`` line."""
    data = tmp_path / "device"
    add_recording(data, footage)
    proc = subprocess.Popen([*CLI, "device", "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    try:
        wait_for(lambda: out or proc.poll() is not None, "the device serving line")
        match = re.match(r"device serving (http://127\.0\.0\.1:\d+)/", out[0] if out else "")
        assert match, "".join(err)
        yield Served(data, match.group(1), proc, err)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT)


def client(wsdl: str, binding: str, address: str, *, signed: bool) -> zeep.proxy.ServiceProxy:
    """A strict zeep client on our WSDL; ``signed``: as the User (direct access), else unsigned (through
    the cloud the uplink's UserLevel applies)."""
    built = zeep.Client(str(schemas.wsdl_path(wsdl)),
                        settings=zeep.Settings(strict=True, forbid_dtd=True, forbid_external=True),
                        wsse=UsernameToken(*USER, use_digest=True) if signed else None)
    return built.create_service(binding, address)


def search_client(base: str, *, signed: bool = True) -> zeep.proxy.ServiceProxy:
    return client("search", f"{{{TSE}}}SearchBinding", base + SEARCH_PATH, signed=signed)


def replay_client(base: str, *, signed: bool = True) -> zeep.proxy.ServiceProxy:
    return client("replay", f"{{{TRP}}}ReplayBinding", base + REPLAY_PATH, signed=signed)


def ffprobe(uri: str) -> subprocess.CompletedProcess[str]:
    """Codec and size of the first video stream, as ``h264,320,240``."""
    return subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0",
                           "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", uri],
                          capture_output=True, text=True, timeout=WAIT, check=False)


def clock_play(uri: str, clock: str) -> int:
    """Status of an ONVIF replay PLAY (``Range: clock=…``, ``Require: onvif-replay``) after DESCRIBE and SETUP."""
    player, status, _ = replay_play(uri, f"clock={clock}-")
    player.close()
    return status


def refused(uri: str) -> bool:
    host, port = uri.removeprefix("rtsp://").split("/", 1)[0].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@needs_replay
def test_cli_configured_recording_is_searched_and_replayed_anx_b_3_anx_b_5(served: Served) -> None:
    """ANX-B-3, ANX-B-5, SEC-1: what ``recordings add`` configured, ``device serve`` finds (summary, search
    results with the recording's source profile) and replays: ffprobe plays the GetReplayUri answer. After
    SIGTERM the device exits 0 and its replay server no longer accepts connections. STR-5: the device
    (no live source) says StreamingOverUplink, as its uplinks relay the replay."""
    search = search_client(served.base)
    summary = search.GetRecordingSummary()
    assert summary.NumberRecordings == 1
    assert (parse_datetime(summary.DataFrom.isoformat()), parse_datetime(summary.DataUntil.isoformat())) == (
        T0, T0 + 8)
    token = search.FindRecordings(Scope={"IncludedSources": [{"Token": "main"}]}, KeepAliveTime="PT10S")
    results = search.GetRecordingSearchResults(SearchToken=token)
    [info] = results.RecordingInformation
    assert (results.SearchState, info.RecordingToken, info.Source.VideoSourceToken, info.Source.Name) == (
        "Completed", TOKEN, "main", "Entrance")
    search.EndSearch(SearchToken=token)

    uri = replay_client(served.base).GetReplayUri(StreamSetup=SETUP, RecordingToken=TOKEN)
    assert re.fullmatch(rf"rtsp://127\.0\.0\.1:\d+/replay/{TOKEN}", uri), uri
    probe = ffprobe(uri)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["h264,320,240"]
    assert any(f"replay serving {uri.rsplit('/', 1)[0]}" in line for line in served.stderr), served.stderr
    # STR-5: with no live source, the replay relayed over an uplink makes the device a streaming one
    assert UplinkClient(served.base + UPLINK_PATH).get_service_capabilities().streaming_over_uplink is True

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(WAIT) == 0
    assert refused(uri)
    assert "Traceback" not in "".join(served.stderr)


@needs_replay
def test_replay_port_in_use_is_one_line_error_anx_b_3(tmp_path: Path, footage: Path) -> None:
    """ANX-B-3: ``--replay-listen`` on a port in use stops ``device serve`` with one line (exit 2)."""
    data = tmp_path / "device"
    add_recording(data, footage)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = cli("device", "serve", "--data", str(data), "--listen", "127.0.0.1:0",
                   "--replay-listen", f"127.0.0.1:{port}")
    assert proc.returncode == 2, proc.stderr
    assert one_line_error(proc.stderr) == (f"iec62676: error: the replay server cannot listen on 127.0.0.1:{port} "
                                           "(in use or not an address of this host)")
    assert "Traceback" not in proc.stderr


@needs_replay
def test_without_gstreamer_search_serves_and_replay_faults_anx_b_3(tmp_path: Path, footage: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """ANX-B-3: a host without GStreamer's RTSP server (its interpreter missing) logs one warning, serves
    Recording Search, and answers GetReplayUri ``Receiver/ActionNotSupported`` with a reason that says why."""
    data = tmp_path / "device"
    add_recording(data, footage)
    monkeypatch.setattr(replay_server, "SYSTEM_PYTHON", str(tmp_path / "no-such-python3"))

    async def scenario() -> tuple[int, zeep.exceptions.Fault]:
        async with serve_device(data) as device:
            assert device.url is not None
            base = device.url.split("/onvif/", 1)[0]

            def calls() -> tuple[int, zeep.exceptions.Fault]:
                count = search_client(base).GetRecordingSummary().NumberRecordings
                with pytest.raises(zeep.exceptions.Fault) as info:
                    replay_client(base).GetReplayUri(StreamSetup=SETUP, RecordingToken=TOKEN)
                return count, info.value

            return await asyncio.wait_for(asyncio.to_thread(calls), WAIT)

    with caplog.at_level(logging.WARNING, logger=replay_server.__name__):
        count, fault = asyncio.run(scenario())
    assert count == 1
    assert (fault.code, [q.localname for q in fault.subcodes]) == ("env:Receiver", ["ActionNotSupported"])
    assert fault.message == "the replay server of this device is not running"
    [warning] = [r.getMessage() for r in caplog.records if r.name == replay_server.__name__]
    assert warning.startswith("recordings are searchable but not replayed: cannot start the replay server (")
    assert "\n" not in warning


@needs_replay
def test_replay_through_the_cloud_rtsp_front_anx_b_3(tmp_path: Path, footage: Path) -> None:
    """ANX-B-3, STR-1, STR-4: a recording configured with ``recordings add`` on a device with an uplink:
    GetReplayUri through the cloud's HTTP proxy answers a URI on the cloud's RTSP front
    (``…/devices/<id>/replay/<recording token>``) and ffprobe plays it, over the uplink, with the uplink's
    UserLevel (User: READ_MEDIA); an ONVIF replay PLAY's ``Range: clock=`` reaches the replay server
    through the relay (a start after the recording: 457); UDP is refused there. Search answers through the proxy too; the live stream still plays, and
    no media source may take the relay's ``replay`` token."""
    data = tmp_path / "dev"  # the folder video_env's device runs on
    added = cli("recordings", "add", "--data", str(data), "--token", TOKEN, "--source-token", TOKEN_LIVE,
                "--folder", str(footage))
    assert added.returncode == 0, added.stderr
    with video_env(tmp_path) as env:
        base = f"{env.proxy_url}/devices/{DEVICE}"
        assert search_client(base, signed=False).GetRecordingSummary().NumberRecordings == 1
        uri = replay_client(base, signed=False).GetReplayUri(StreamSetup=SETUP, RecordingToken=TOKEN)
        assert uri == f"{env.rtsp_base}/devices/{DEVICE}/{REPLAY_TOKEN}/{TOKEN}"
        with pytest.raises(zeep.exceptions.Fault) as info:  # the front relays interleaved RTP only
            replay_client(base, signed=False).GetReplayUri(StreamSetup={**SETUP, "Transport": {"Protocol": "UDP"}},
                                                           RecordingToken=TOKEN)
        assert [q.localname for q in info.value.subcodes] == ["InvalidArgVal", "InvalidStreamSetup"]
        probe = ffprobe(uri)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.split() == ["h264,320,240"]
        # the ONVIF replay headers pass the relay: the replay server seeks on Range: clock= (457: after the end)
        assert (clock_play(uri, stamp(T0 + 6)), clock_play(uri, stamp(T0 + 60))) == (200, 457)
        live = ffprobe(env.url())
        assert live.returncode == 0, live.stderr
        assert live.stdout.split() == [f"h264,{WIDTH},{HEIGHT}"]
    with pytest.raises(ConfigurationError, match="'replay' is reserved"):
        validate_media_source(MediaSource(token=REPLAY_TOKEN, name="x", rtsp_url="rtsp://127.0.0.1:9/x"))


@needs_replay
@pytest.mark.parametrize(("listen", "warned"), [("127.0.0.1:0", False), ("0.0.0.0:0", True)])
def test_a_replay_server_beyond_loopback_is_warned_about_anx_b_3(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, listen: str, warned: bool) -> None:
    """ANX-B-3: the replay RTSP server has no authentication of its own; started on an address beyond loopback
    it says so in one warning line (loopback: no warning)."""
    seed_device(tmp_path / "device")
    with caplog.at_level(logging.WARNING, logger="iec62676_2_33.runtime.replay_server"):
        server = start_replay_server(FolderRecordingStore(tmp_path / "device"), listen)
    assert server is not None
    server.close()
    assert ("has no authentication of its own" in caplog.text) == warned
