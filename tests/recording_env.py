"""Test helper: recordings made by ffmpeg from a test pattern, named with their UTC start."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from rtsp_env import RawPlayer

from iec62676_2_33.domain.subscriptions import parse_datetime

T0 = parse_datetime("2026-01-01T12:00:00Z")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe are not installed (Debian package ffmpeg, .ci/run)")


def stamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def make_video(path: Path, seconds: int, *, pattern: str = "testsrc") -> None:
    """A test-pattern H.264 video of ``seconds`` seconds at 10 frames/s, one keyframe a second."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"{pattern}=size=320x240:rate=10", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-g", "10", "-y", str(path)], check=True, timeout=60)


def replay_play(uri: str, clock_range: str, *, onvif: bool = True) -> tuple[RawPlayer, int, dict[str, str]]:
    """DESCRIBE, SETUP (RTP over the RTSP connection) and PLAY with ``Range: <clock_range>`` on ``uri``, with
    ``Require: onvif-replay`` unless ``onvif`` is false; the open player (close it), the PLAY's status and
    headers."""
    extra = ("Require: onvif-replay",) if onvif else ()
    player = RawPlayer(uri)
    try:
        status, head, sdp = player.request("DESCRIBE", uri, "Accept: application/sdp", *extra)
        assert status == 200, (status, head)
        base = head.get("content-base", uri + "/")
        control = next(line[len("a=control:"):] for line in sdp.decode().splitlines()
                       if line.startswith("a=control:") and line != "a=control:*")
        track = control if control.startswith("rtsp://") else base.rstrip("/") + "/" + control
        status, head, _ = player.request("SETUP", track, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", *extra)
        assert status == 200, (status, head)
        status, head, _ = player.request("PLAY", base, f"Session: {head['session'].split(';')[0]}", *extra,
                                         f"Range: {clock_range}")
    except BaseException:
        player.close()
        raise
    return player, status, head
