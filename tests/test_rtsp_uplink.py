"""Live video through the uplink, end to end on loopback: a real camera-side RTSP server
(GStreamer, H.264), the device's relay, the uplink (native and wss), the cloud's RTSP front,
and stock players (ffmpeg/ffprobe, RTSP over TCP, interleaved)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import rtsp_request
from rtsp_env import (
    DEVICE,
    PLAYER_TIMEOUT,
    TOKEN,
    RawPlayer,
    decode_frames,
    decoded_frames,
    device_side_buffers,
    ffprobe,
    needs_camera,
    video_env,
)

from iec62676_2_33.http2.client import H2ClientRole
from iec62676_2_33.http2.limits import DEFAULT_LIMITS
from iec62676_2_33.runtime.h2conn import SEND_LOW_WATER
from iec62676_2_33.runtime.rtsp_relay import READ_CHUNK
from iec62676_2_33.sansio.rtsp_tunnel import MAX_HEAD
from iec62676_2_33.testing.harness import wait_until

pytestmark = needs_camera


def check_plays(url: str, width: int, height: int) -> None:
    probe = ffprobe(url)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == f"h264,{width},{height}"
    run = decode_frames(url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert decoded_frames(run.stderr) >= 100


def test_ffmpeg_plays_through_native_uplink(tmp_path: Path) -> None:
    """STR-1, STR-3: the device advertises RFC 8441 on its uplink; ffprobe sees the camera's
    codec and size and ffmpeg decodes 100 frames through `cloud serve --rtsp` over h2c-reverse."""
    with video_env(tmp_path) as env:
        assert env.listener.channel(DEVICE).role.peer_accepts_connect_protocol
        check_plays(env.url(), env.camera.width, env.camera.height)


def test_ffmpeg_plays_through_wss_uplink(tmp_path: Path) -> None:
    """STR-1, STR-3, UPL-4: the same through an uplink in WebSocket frames (wss)."""
    with video_env(tmp_path, scheme="wss") as env:
        check_plays(env.url(), env.camera.width, env.camera.height)


def test_rtsp_over_http_when_the_device_lacks_extended_connect(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """STR-2: without ENABLE_CONNECT_PROTOCOL the front tunnels RTSP over HTTP (a GET and a POST
    joined by x-sessioncookie, base64 on the POST, a content-length for the session's life)."""
    monkeypatch.setattr(H2ClientRole, "peer_accepts_connect_protocol", property(lambda _self: False))
    with video_env(tmp_path) as env:
        channel = env.listener.channel(DEVICE)
        opened: list[tuple[str, dict[str, str]]] = []
        original = channel.open_stream

        async def open_stream(method: str, path: str, headers: list[tuple[str, str]], **kw: object) -> int:
            fields = dict(headers)
            if kw.get("content_length") is not None:
                fields["content-length"] = str(kw["content_length"])
            opened.append((f"{method} {path}", fields))
            return await original(method, path, headers, **kw)  # type: ignore[arg-type]

        channel.open_stream = open_stream  # type: ignore[assignment,method-assign]
        check_plays(env.front_url(), env.camera.width, env.camera.height)
        assert [what for what, _ in opened[:2]] == [f"GET /onvif/rtsp/{TOKEN}", f"POST /onvif/rtsp/{TOKEN}"]
        get, post = opened[0][1], opened[1][1]
        assert get["x-sessioncookie"] == post["x-sessioncookie"]
        assert post["content-type"] == "application/x-rtsp-tunnelled"
        assert int(post["content-length"]) >= 16 * 1024 * 1024


def test_ten_players_on_one_uplink(tmp_path: Path) -> None:
    """STR-1, UPL-16: ten ffmpeg players at once through one uplink each decode 100 frames."""
    with video_env(tmp_path) as env:
        procs = [subprocess.Popen(["ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", "tcp", "-i",
                                   env.front_url(), "-frames:v", "100", "-f", "null", "-"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(10)]
        try:
            results = [proc.communicate(timeout=PLAYER_TIMEOUT * 2) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err[-1500:]
            assert decoded_frames(err) >= 100
        assert env.front.stats.opened == 10
        wait_until(lambda: env.front.stats.sessions == 0, 15, what="every session to end")


def test_unknown_device_and_unknown_token_are_404(tmp_path: Path) -> None:
    """STR-1: an unknown device and a media token the device does not have get RTSP 404."""
    with video_env(tmp_path) as env:
        for url in (env.url(device_id="no-such-device"), env.url(token="no_such_token")):
            probe = ffprobe(url)
            assert probe.returncode != 0
            assert "404" in probe.stderr, probe.stderr[-1000:]
        player = RawPlayer(env.front_base + "/elsewhere")
        try:
            assert player.request("OPTIONS", env.front_base + "/elsewhere")[0] == 404
        finally:
            player.close()
        assert env.front.stats.not_found == 1


@pytest.mark.parametrize("payload", [b"\x00\x01\x02 not rtsp at all\r\n\r\n",
                                     b"OPTIONS * RTSP/1.0\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"],
                         ids=["garbage", "1MiB-header"])
def test_garbage_and_huge_heads_are_400_and_closed(tmp_path: Path, payload: bytes) -> None:
    """STR-1: garbage and a head over 64 KiB get RTSP 400 and the connection is closed; the
    front keeps serving players."""
    with video_env(tmp_path) as env:
        player = RawPlayer(env.front_url())
        try:
            try:
                player.send(payload)
            except OSError:
                pass  # the front answered and closed while the rest was still being sent
            assert player.read_response()[0] == 400
            with pytest.raises((EOFError, ConnectionResetError)):
                player.read_response()
        finally:
            player.close()
        assert env.front.stats.bad_requests == 1
        assert ffprobe(env.front_url()).returncode == 0


def test_player_that_stops_reading_holds_bounded_memory(tmp_path: Path) -> None:
    """STR-1, UPL-16: a player that stops reading stalls only its own stream: the cloud holds at
    most that stream's HTTP/2 window of it, the device about two camera reads (it stops reading the
    camera), and another player on the same uplink decodes 100 frames."""
    with video_env(tmp_path, pattern="snow") as env:  # snow: the full 2 Mbit/s
        env.front.stall_timeout = PLAYER_TIMEOUT * 2  # this test watches a stall, not its end
        channel = env.listener.channel(DEVICE)
        stalled = RawPlayer(env.front_url(), rcvbuf=16 * 1024)
        try:
            stalled.play()  # ... and never reads again
            wait_until(lambda: channel.held_bytes >= DEFAULT_LIMITS.initial_window_size // 2, 60,
                       what="the stalled player's stream window to fill")
            run = decode_frames(env.front_url())
            assert run.returncode == 0, run.stderr[-1500:]
            assert decoded_frames(run.stderr) >= 100
            assert channel.held_bytes <= DEFAULT_LIMITS.initial_window_size
            # the stalled session is still there, merely held (the other one ends as ffmpeg leaves)
            wait_until(lambda: env.front.stats.sessions == 1, 15, what="the finished player's session to end")
            assert channel.held_bytes <= DEFAULT_LIMITS.initial_window_size
            queued, pending = device_side_buffers()  # the device holds two camera reads at most
            assert 0 < queued <= SEND_LOW_WATER + READ_CHUNK + 1024  # > 0: the stalled stream's window is shut
            assert 0 < pending <= READ_CHUNK + MAX_HEAD
        finally:
            stalled.close()


def test_stalled_player_loses_its_session_after_the_stall_timeout(tmp_path: Path) -> None:
    """STR-1, UPL-16: a player that takes nothing for the front's stall timeout loses its session and
    its stream's share of the uplink's window comes back."""
    with video_env(tmp_path, pattern="snow") as env:
        env.front.stall_timeout = 1.0
        channel = env.listener.channel(DEVICE)
        stalled = RawPlayer(env.front_url(), rcvbuf=16 * 1024)
        try:
            stalled.play()
            wait_until(lambda: env.front.stats.opened == 1 and env.front.stats.sessions == 0, 60,
                       what="the stalled session to end")
            wait_until(lambda: channel.held_bytes == 0, 15, what="the stream's window to come back")
            with pytest.raises((EOFError, ConnectionResetError)):
                while True:  # what was sent before the end, then the end
                    stalled.read_response()
        finally:
            stalled.close()


def test_uplink_drop_ends_the_players_session(tmp_path: Path) -> None:
    """STR-1: when the uplink drops mid-stream the player's connection ends (no hang)."""
    with video_env(tmp_path) as env:
        proc = subprocess.Popen(["ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", "tcp", "-timeout",
                                 str(PLAYER_TIMEOUT * 1_000_000), "-i", env.front_url(), "-f", "null", "-"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            err: list[str] = []
            reader = threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else ""))
            reader.start()
            wait_until(lambda: env.listener.channel(DEVICE).held_bytes or env.front.stats.sessions, 30,
                       what="the session to start")
            env.device.stop()
            assert proc.wait(timeout=PLAYER_TIMEOUT) is not None  # the player ended, it did not hang
            reader.join(10)
            wait_until(lambda: env.front.stats.sessions == 0, 15, what="the front to drop the session")
            assert env.front.stats.sessions == 0
        finally:
            proc.kill()
            proc.wait(timeout=10)


def test_user_level_below_read_media_gets_401(tmp_path: Path) -> None:
    """STR-4, UPL-12: an uplink whose UserLevel may not READ_MEDIA (Anonymous) gets RTSP 401 on
    the tunnelled session; no credentials are asked of the player on a User-level uplink."""
    with video_env(tmp_path, level=("Anonymous",)) as env:
        probe = ffprobe(env.url())
        assert probe.returncode != 0
        assert "401" in probe.stderr, probe.stderr[-1000:]


@pytest.mark.parametrize("digest", [False, True], ids=["basic", "digest"])
def test_camera_credentials_are_injected(tmp_path: Path, digest: bool) -> None:
    """STR-4: the camera's own RTSP credentials (configured on the media source) are added by the
    device, Basic or after the camera's Digest challenge; the player sends none."""
    with video_env(tmp_path, camera_user="viewer", digest=digest) as env:
        check_plays(env.url(), env.camera.width, env.camera.height)


def test_python_api_open_rtsp(tmp_path: Path) -> None:
    """STR-1, STR-3: `await cloud.open_rtsp(device, token)` is a byte stream of the RTSP session; the
    requests may name any URL ending in the token, and the answers name that URL, never the camera's."""
    with video_env(tmp_path) as env:
        mine = f"rtsp://vms.example/site-4/{TOKEN}"

        async def describe() -> bytes:
            stream = await env.listener.open_rtsp(DEVICE, TOKEN)
            return await rtsp_request(stream, f"DESCRIBE {mine} RTSP/1.0\r\nCSeq: 7\r\nAccept: application/sdp\r\n\r\n")

        answer = env.cloud.call(describe, 30)
        head, _, sdp = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"RTSP/1.0 200 ") and b"CSeq: 7" in head
        assert f"Content-Base: {mine}/".encode() in head
        assert b"m=video" in sdp and b"H264" in sdp
        assert env.camera.url.encode() not in answer


def test_device_refuses_malformed_tunnels(tmp_path: Path) -> None:
    """STR-2, STR-3: the device's relay refuses a CONNECT without the ONVIF subprotocol (400), a GET
    channel without x-sessioncookie (400), a POST whose cookie names no GET channel (404) and an
    unknown media token (404); the uplink stays up."""
    with video_env(tmp_path) as env:
        channel = env.listener.channel(DEVICE)
        path = f"/onvif/rtsp/{TOKEN}"

        async def status(method: str, target: str, headers: list[tuple[str, str]], **kw: Any) -> int:
            sid = await channel.open_stream(method, target, headers, timeout=10, **kw)
            try:
                return (await channel.response(sid, timeout=10))[0]
            finally:
                channel.cancel(sid)

        cases = [
            (("CONNECT", path, [("sec-websocket-protocol", "chat")]), {"protocol": "websocket"}, 400),
            (("CONNECT", "/onvif/rtsp/nope", [("sec-websocket-protocol", "rtsp.onvif.org")]),
             {"protocol": "websocket"}, 404),
            (("GET", path, []), {"end_stream": True}, 400),
            (("POST", path, [("x-sessioncookie", "no-such-get")]), {"content_length": 100}, 404),
            (("GET", "/onvif/rtsp/nope", [("x-sessioncookie", "c1")]), {"end_stream": True}, 404),
        ]
        for args, kw, expected in cases:
            assert env.cloud.call(lambda args=args, kw=kw: status(*args, **kw), 30) == expected, args
        assert DEVICE in [d.device_id for d in env.listener.devices()]
