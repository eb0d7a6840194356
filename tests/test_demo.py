"""GEN-1, GEN-3, UPL-10, UPL-4, UPL-14, RQ-5, STR-1: ``iec62676 demo`` runs end to end on loopback and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from iec62676_2_33 import demo
from iec62676_2_33.demo_camera import camera_missing


def test_demo_runs_end_to_end_gen_3_upl_10() -> None:
    """GEN-3, UPL-10, UPL-4, UPL-14, RQ-6, STR-1: three devices (two mTLS, one wss with an access token) dial
    out, are called through their uplinks, survive a cloud restart; a location query and a live Offline
    change travel through an uplink; with GStreamer and ffmpeg installed, ffmpeg decodes 100 H.264 frames of a
    synthetic camera through a device, its uplink and the cloud's RTSP front (else the step says what is
    missing)."""
    proc = subprocess.run([sys.executable, "-m", "iec62676_2_33", "demo"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "fault as expected: env:Sender/ter:InvalidArgVal/ter:CertificateID" in out
    assert "all devices connected: camera-0001 (mTLS), camera-0002 (mTLS), camera-0003 (AccessToken)" in out
    assert "camera-0003 via its uplink: MaxUplinks=8, Protocols=https wss, uplink wss://localhost:" in out
    assert ("proxy GET /devices: [('camera-0001', 'mTLS'), ('camera-0002', 'mTLS'), ('camera-0003', 'AccessToken')]"
            in out)
    assert "all devices came back on their own" in out
    assert "400 resources loaded into its registry" in out
    assert "MediaProfiles within 100 m of (32.0603, 118.7969), asked through the uplink:" in out
    assert "    live: Changed " in out and "Offline=True" in out
    missing = camera_missing()
    if missing is None:
        assert re.search(r"Media2 GetStreamUri through the cloud's HTTP proxy: rtsp://127\.0\.0\.1:\d+/devices/"
                         r"camera-0001/cam1\n", out), out
        assert ("  ffmpeg decoded 100 frames (h264 640x360) from the camera, through camera-0001, its uplink and "
                "the cloud's RTSP front\n") in out
    else:
        assert f"Part 4 — live video: a synthetic camera behind camera-0001, played through the cloud\n  skipped: " \
               f"{missing} not installed\n" in out
    assert out.rstrip().endswith("demo finished: every step behaved as the standard says")
    assert "Traceback" not in proc.stderr


def test_live_video_step_says_what_is_missing_str_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """STR-1: without GStreamer's RTSP server or ffmpeg, the live-video step prints one line naming what is
    missing and starts nothing."""
    monkeypatch.setattr(demo, "camera_missing", lambda: "ffmpeg")
    monkeypatch.setattr(demo, "start_camera", lambda: pytest.fail("the camera must not start"))
    lines: list[str] = []
    demo.part_live_video(None, tmp_path, lines.append)  # type: ignore[arg-type]
    assert lines == ["Part 4 — live video: a synthetic camera behind camera-0001, played through the cloud",
                     "  skipped: ffmpeg not installed"]
