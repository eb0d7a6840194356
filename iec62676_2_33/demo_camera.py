"""Layer 7: the demo's synthetic camera — GStreamer's RTSP server from Debian, on loopback.

The demo needs a camera-side RTSP server to show live video through an uplink.
GStreamer's (``python3-gi``, ``gir1.2-gst-rtsp-server-1.0``,
``gstreamer1.0-plugins-ugly`` for ``x264enc``) serves
``rtsp://127.0.0.1:<port>/cam``: ``videotestsrc ! x264enc ! rtph264pay``,
640 x 360 at 30 frames/s, one shared pipeline. ``gi`` exists only for Debian's
``/usr/bin/python3`` (not for a virtual environment on another interpreter),
so this file is also a script that interpreter runs: it prints ``PORT <n>``
once the server listens and serves until it is killed. The script part
imports nothing of this package.

:func:`camera_missing` says what is not installed (``None`` when the camera and
the ffmpeg player can run); :func:`start_camera` runs the script as a
subprocess (bounded wait for its port) and kills it when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator

__all__ = ["HEIGHT", "SYSTEM_PYTHON", "WIDTH", "camera_missing", "start_camera"]

SYSTEM_PYTHON = "/usr/bin/python3"
WIDTH, HEIGHT, FPS = 640, 360, 30
START_TIMEOUT = 20.0
_PROBE = ("import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer;"
          "Gst.init(None); assert Gst.ElementFactory.find('x264enc')")


def camera_missing() -> str | None:
    """What keeps the live-video demo from running (Debian package names), or ``None``."""
    missing = []
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run(
            [SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, timeout=30, check=False).returncode != 0:
        missing.append("GStreamer's RTSP server for /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0, "
                       "gstreamer1.0-plugins-ugly)")
    if shutil.which("ffmpeg") is None:
        missing.append("ffmpeg")
    return " and ".join(missing) or None


@contextlib.contextmanager
def start_camera() -> Iterator[str]:
    """A running synthetic camera; yields its RTSP URL."""
    proc = subprocess.Popen([SYSTEM_PYTHON, os.path.abspath(__file__)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""),
                                  daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not line or not line[0].startswith("PORT "):
            raise RuntimeError(f"the synthetic camera did not start within {START_TIMEOUT:g} s")
        yield f"rtsp://127.0.0.1:{int(line[0].split()[1])}/cam"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _serve() -> None:  # pragma: no cover - runs under /usr/bin/python3
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={WIDTH},height={HEIGHT},framerate={FPS}/1"
        " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! rtph264pay name=pay0 pt=96 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    print(f"PORT {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":  # pragma: no cover - the subprocess
    _serve()
