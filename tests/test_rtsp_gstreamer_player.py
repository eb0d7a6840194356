"""STR-1: a second stock player, GStreamer's ``rtspsrc``, plays through the cloud's RTSP front.

ffmpeg is the player of ``test_rtsp_uplink.py``; GStreamer's RTSP client is a different
implementation (its own RTSP state machine, ``GET_PARAMETER`` keep-alives, TCP interleaving asked
with ``protocols=tcp``). It runs under Debian's ``/usr/bin/python3`` (``gi`` exists only there,
INTEROP.md) as ``rtspsrc ! rtph264depay ! h264parse ! appsink``: the script prints the negotiated
caps and the number of H.264 access units it received, bounded by a deadline.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from camera import SYSTEM_PYTHON
from rtsp_env import PLAYER_TIMEOUT, needs_camera, video_env

pytestmark = needs_camera

UNITS = 60

_PLAYER = r"""
import sys
import time
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
url, wanted, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
pipeline = Gst.parse_launch(
    f"rtspsrc location={url} protocols=tcp latency=0 ! rtph264depay ! h264parse ! "
    "video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false max-buffers=64")
sink = pipeline.get_by_name("sink")
pipeline.set_state(Gst.State.PLAYING)
units, caps = 0, None
end = time.monotonic() + deadline
while units < wanted and time.monotonic() < end:
    sample = sink.emit("try-pull-sample", Gst.SECOND)
    if sample is None:
        if sink.get_property("eos"):
            break
        continue
    units += 1
    caps = caps or sample.get_caps().get_structure(0)
pipeline.set_state(Gst.State.NULL)
if caps is not None:
    print("CAPS", caps.get_name(), caps.get_value("width"), caps.get_value("height"))
print("UNITS", units)
"""


def gstreamer_play(url: str, units: int) -> tuple[str, int]:
    """``(caps line, access units received)`` from GStreamer's RTSP client on ``url``."""
    run = subprocess.run([SYSTEM_PYTHON, "-c", _PLAYER, url, str(units), str(PLAYER_TIMEOUT - 10)],
                         capture_output=True, text=True, timeout=PLAYER_TIMEOUT, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if " " in line)
    return lines.get("CAPS", ""), int(lines.get("UNITS", "0"))


def test_gstreamer_rtspsrc_plays_through_the_cloud_str_1(tmp_path: Path) -> None:
    """STR-1: GStreamer's rtspsrc (RTP/AVP/TCP interleaved) receives H.264 of the camera's size through
    the device, its uplink and the cloud's RTSP front."""
    with video_env(tmp_path) as env:
        caps, units = gstreamer_play(env.url(), UNITS)
    assert caps == f"video/x-h264 {env.camera.width} {env.camera.height}"
    assert units >= UNITS
