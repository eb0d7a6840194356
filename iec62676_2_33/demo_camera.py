"""Layer 7: the synthetic camera of the demo and the tests — GStreamer's RTSP server from Debian, on loopback.

The demo needs a camera-side RTSP server to show live video through an uplink,
and the tests need one to play through every path. GStreamer's
(``python3-gi``, ``gir1.2-gst-rtsp-server-1.0``, ``gstreamer1.0-plugins-ugly``
for ``x264enc``) serves ``rtsp://127.0.0.1:<port>/cam``: ``videotestsrc !
x264enc ! rtph264pay``, 640 x 360 at 30 frames/s, one shared pipeline for every
player. ``gi`` exists only for Debian's ``/usr/bin/python3`` (not for a virtual
environment on another interpreter, INTEROP.md), so this file is also a script
that interpreter runs: it serves on a free port, keeps the media playing with a
built-in player, prints ``PORT <n>`` then and runs until killed. The script part
imports nothing of this package. ``--user``/``--password`` require RTSP Basic
(``--digest``: Digest) authentication; ``--pattern`` and ``--bitrate``
(kbit/s) pick the picture and the rate.

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
from dataclasses import dataclass

__all__ = ["HEIGHT", "SYSTEM_PYTHON", "WIDTH", "Camera", "camera_missing", "start_camera"]

SYSTEM_PYTHON = "/usr/bin/python3"
WIDTH, HEIGHT, FPS = 640, 360, 30
START_TIMEOUT = 20.0


def _serve(user: str | None, password: str | None, pattern: str, bitrate: int, digest: bool) -> None:  # pragma: no cover - runs in the subprocess
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
        f"( videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={WIDTH},height={HEIGHT},framerate={FPS}/1"
        f" ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate={bitrate}"
        " ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    if user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        if digest:
            gi.require_version("GstRtsp", "1.0")
            from gi.repository import GstRtsp

            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(user, password or "", token)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password or ""), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(Gst.Structure.new_from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    port = server.get_bound_port()
    threading.Thread(target=_anchor, args=(port, user, password), daemon=True).start()
    GLib.MainLoop().run()


def _anchor(port: int, user: str | None, password: str | None) -> None:  # pragma: no cover - subprocess
    """One player inside the camera that keeps the shared media playing, then ``PORT <n>``.

    A shared media is torn down when its last player leaves, and a DESCRIBE arriving meanwhile
    gets 503 (13 of 60 quick reconnects did): with this player the media never goes away."""
    import base64
    import hashlib
    import re
    import socket
    import time

    url = f"rtsp://127.0.0.1:{port}/cam"
    basic = f"Authorization: Basic {base64.b64encode(f'{user}:{password}'.encode()).decode()}\r\n" if user else ""
    challenge: dict[str, str] = {}
    sock = socket.create_connection(("127.0.0.1", port))
    buf = b""

    def authorization(line: str) -> str:
        if not challenge:
            return basic
        uri = line.split(" ")[1]
        h = [hashlib.md5(x.encode()).hexdigest()
             for x in (f"{user}:{challenge['realm']}:{password}", line.replace(" ", ":"))]
        response = hashlib.md5(f"{h[0]}:{challenge['nonce']}:{h[1]}".encode()).hexdigest()
        return (f'Authorization: Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
                f'uri="{uri}", response="{response}"\r\n')

    def request(line: str, extra: str = "") -> tuple[str, bytes]:
        nonlocal buf
        sock.sendall(f"{line} RTSP/1.0\r\nCSeq: 1\r\n{authorization(line)}{extra}\r\n".encode())
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        text = head.decode()
        length = int(next((v for k, _, v in (x.partition(":") for x in text.split("\r\n")) if k.lower() ==
                           "content-length"), "0"))
        while len(buf) < length:
            buf += sock.recv(65536)
        body, buf = buf[:length], buf[length:]
        return text, body

    while " 200 " not in (answer := request(f"DESCRIBE {url}"))[0].split("\r\n")[0]:
        digest = re.search(r'Digest realm="([^"]*)", nonce="([^"]*)"', answer[0])
        if digest:
            challenge.update(realm=digest[1], nonce=digest[2])
        time.sleep(0.1)
    control = next(x[10:] for x in answer[1].decode().splitlines() if x.startswith("a=control:") and x != "a=control:*")
    head, _ = request(f"SETUP {url}/{control}", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
    session = next(v.strip() for k, _, v in (x.partition(":") for x in head.split("\r\n")) if k.lower() == "session")
    request(f"PLAY {url}", f"Session: {session.split(';')[0]}\r\n")
    print(f"PORT {port}", flush=True)
    while sock.recv(1 << 20):
        pass


def camera_missing() -> str | None:
    """What keeps the synthetic camera and its players from running (Debian package names), or ``None``."""
    missing = []
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer;"
             "Gst.init(None); assert Gst.ElementFactory.find('x264enc')")
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30, check=False).returncode != 0:
        missing.append("GStreamer's RTSP server for /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0, "
                       "gstreamer1.0-plugins-ugly)")
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        missing.append("ffmpeg")
    return " and ".join(missing) or None


@dataclass(frozen=True)
class Camera:
    """A running synthetic camera: its port and stream URL."""

    port: int
    url: str
    width: int = WIDTH
    height: int = HEIGHT


@contextlib.contextmanager
def start_camera(*, user: str | None = None, password: str | None = None, digest: bool = False,
                 pattern: str = "ball", bitrate: int = 2000) -> Iterator[Camera]:
    """A running synthetic camera; killed when the block ends. ``user``/``password`` require
    Basic (``digest``: Digest) authentication; ``pattern`` is videotestsrc's (``ball`` compresses
    to a few KB/s; ``snow`` fills ``bitrate``, kbit/s)."""
    args = [SYSTEM_PYTHON, os.path.abspath(__file__), "--pattern", pattern, "--bitrate", str(bitrate)]
    if digest:
        args.append("--digest")
    if user is not None:
        args += ["--user", user, "--password", password or ""]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""),
                                  daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not line or not line[0].startswith("PORT "):
            raise RuntimeError(f"the camera did not start within {START_TIMEOUT:g} s: {line!r}")
        port = int(line[0].split()[1])
        yield Camera(port=port, url=f"rtsp://127.0.0.1:{port}/cam")
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


if __name__ == "__main__":  # pragma: no cover - the subprocess
    import argparse

    parser = argparse.ArgumentParser(description="a synthetic RTSP camera on loopback")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--pattern", default="ball")
    parser.add_argument("--bitrate", type=int, default=2000)
    options = parser.parse_args()
    _serve(options.user, options.password, options.pattern, options.bitrate, options.digest)
