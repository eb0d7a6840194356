"""Test helper: recordings made by ffmpeg from a test pattern, named with their UTC start."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

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


