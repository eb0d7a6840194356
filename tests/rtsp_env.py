"""Test helper for live video through the uplink: a synthetic camera (tests/camera.py), a device
(``run_device``) with that camera as a media source, and a cloud (``run_cloud`` with the HTTP
proxy and the RTSP front) on loopback; ffprobe/ffmpeg as players, every wait bounded."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from camera import Camera, camera_available, start_camera

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.http2.server import H2ServerRole
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud import CloudListener
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.runtime.http_server import bind_listen
from iec62676_2_33.runtime.rtsp_front import RtspFront
from iec62676_2_33.runtime.rtsp_relay import RtspRelay
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device, wait_until
from iec62676_2_33.transport.tcp import TcpServer, start_tcp_server

DEVICE = "cam-device"
TOKEN = "main"
PLAYER_TIMEOUT = 60

needs_camera = pytest.mark.skipif(not camera_available(),
                                  reason="GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, "
                                         "gstreamer1.0-plugins-ugly) or ffmpeg is not installed (.ci/run installs them)")


@dataclass
class VideoEnv:
    camera: Camera
    cloud: BackgroundService
    listener: CloudListener
    rtsp_base: str  # rtsp://127.0.0.1:<front>
    proxy_url: str
    device: RunningDevice
    data: Path
    front: RtspFront  # a second front on the same listener, whose counters the tests read
    front_base: str

    def url(self, device_id: str = DEVICE, token: str = TOKEN) -> str:
        """A player's URL on the front ``iec62676 cloud serve --rtsp`` runs."""
        return f"{self.rtsp_base}/devices/{device_id}/{token}"

    def front_url(self, device_id: str = DEVICE, token: str = TOKEN) -> str:
        """A player's URL on :attr:`front`."""
        return f"{self.front_base}/devices/{device_id}/{token}"


@contextmanager
def video_env(tmp_path: Path, *, scheme: str = "https", level: tuple[str, ...] = ("User",),
              camera_user: str | None = None, digest: bool = False, pattern: str = "ball",
              **cloud_options: Any) -> Iterator[VideoEnv]:
    """Camera -> device (media source TOKEN) -> uplink (``scheme``: https native, wss) -> cloud
    (``cloud_options``: more :class:`CloudOptions` fields, e.g. ``device_domain``)."""
    certs = UplinkPki(tmp_path / "pki")
    options = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file],
                           **{"proxy": "127.0.0.1:0", "rtsp": "127.0.0.1:0", **cloud_options})
    found: dict[str, Any] = {}

    async def cloud_service(stop: asyncio.Event, announce: Callable[[str], None]) -> None:
        servers: list[asyncio.Task[TcpServer]] = []

        def ready(listener: CloudListener) -> None:
            sock = bind_listen("127.0.0.1", 0)  # listening already: players wait in its backlog
            found.update(listener=listener, front=RtspFront(listener),
                         front_base=f"rtsp://127.0.0.1:{sock.getsockname()[1]}")
            servers.append(asyncio.get_running_loop().create_task(start_tcp_server(found["front"].handle, sock)))

        try:
            await run_cloud(options, stop, announce, ready=ready)
        finally:
            for server in servers:
                await (await server).aclose()

    with start_camera(user=camera_user, password="cam-pw" if camera_user else None, digest=digest,
                      pattern=pattern) as cam:
        cloud = BackgroundService(cloud_service, name="cloud", ready_after=3).start()
        try:
            text = "\n".join(cloud.messages)
            port = int(re.search(r"https://127\.0\.0\.1:(\d+)/", text).group(1))  # type: ignore[union-attr]
            rtsp_base = re.search(r"(rtsp://\S+)/devices", text).group(1)  # type: ignore[union-attr]
            proxy_url = re.search(r"(http://\S+)/devices", text).group(1)  # type: ignore[union-attr]
            data = tmp_path / "dev"
            seed_device(data, certs, DEVICE, [(f"{scheme}://localhost:{port}/uplink", level)])
            with DeviceStore(data) as store:
                store.put_media_source(MediaSource(token=TOKEN, name="Camera 1", rtsp_url=cam.url, width=cam.width,
                                                   height=cam.height, username=camera_user,
                                                   password="cam-pw" if camera_user else None))
            device = RunningDevice(data)
            try:
                listener = found["listener"]
                wait_until(lambda: DEVICE in [d.device_id for d in listener.devices()], 20, what="the uplink")
                yield VideoEnv(cam, cloud, listener, rtsp_base, proxy_url, device, data, found["front"],
                               found["front_base"])
            finally:
                device.stop()
        finally:
            cloud.stop()


def ffprobe(url: str) -> subprocess.CompletedProcess[str]:
    """Codec and size of the first video stream, as ``h264,640,360``."""
    return subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0",
                           "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", url],
                          capture_output=True, text=True, timeout=PLAYER_TIMEOUT, check=False)


def decode_frames(url: str, frames: int = 100) -> subprocess.CompletedProcess[str]:
    """Decode ``frames`` video frames (``-f null``); stderr carries ffmpeg's progress lines."""
    return subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", "tcp", "-i", url,
                           "-frames:v", str(frames), "-f", "null", "-"],
                          capture_output=True, text=True, timeout=PLAYER_TIMEOUT, check=False)


def decoded_frames(stderr: str) -> int:
    """The last ``frame=N`` ffmpeg reported."""
    counts = re.findall(r"frame=\s*(\d+)", stderr)
    return int(counts[-1]) if counts else 0


class RawPlayer:
    """A minimal RTSP-over-TCP player on a blocking socket (timeouts on every read), for the
    cases ffmpeg cannot play: a player that stops reading, garbage, oversized heads."""

    def __init__(self, url: str, *, rcvbuf: int | None = None, timeout: float = 20.0) -> None:
        host, port = url.removeprefix("rtsp://").split("/", 1)[0].split(":")
        self.url = url
        self.sock = socket.socket()
        if rcvbuf is not None:  # a small window: a player that stops reading stalls the sender soon
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, int(port)))
        self.buf = b""
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """The next RTSP response (interleaved frames before it are skipped)."""
        while True:
            while self.buf.startswith(b"$") and len(self.buf) >= 4:
                end = 4 + int.from_bytes(self.buf[2:4], "big")
                if len(self.buf) < end:
                    break
                self.buf = self.buf[end:]
            if b"\r\n\r\n" in self.buf and not self.buf.startswith(b"$"):
                head, _, rest = self.buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                if len(rest) >= length:
                    self.buf = rest[length:]
                    return int(lines[0].split(" ")[1]), headers, rest[:length]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"the server closed the connection; unparsed: {self.buf[:200]!r}")
            self.buf += chunk

    def request(self, method: str, url: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", *headers]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.read_response()

    def play(self) -> None:
        """DESCRIBE, SETUP of the first media (interleaved 0-1) and PLAY."""
        status, head, sdp = self.request("DESCRIBE", self.url, "Accept: application/sdp")
        assert status == 200, (status, head)
        base = head.get("content-base", self.url + "/")
        control = next(line[len("a=control:"):] for line in sdp.decode().splitlines()
                       if line.startswith("a=control:") and line != "a=control:*")
        track = control if control.startswith("rtsp://") else base.rstrip("/") + "/" + control
        status, head, _ = self.request("SETUP", track, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
        assert status == 200, (status, head)
        session = head["session"].split(";")[0]
        status, head, _ = self.request("PLAY", base, f"Session: {session}", "Range: npt=0.000-")
        assert status == 200, (status, head)


def device_side_buffers() -> tuple[int, int]:
    """(bytes queued in the device's HTTP/2 server roles, the relays' peak of bytes read from a camera
    and not yet handed to a stream): the device runs in this process, its objects are found by type."""
    roles = [o for o in gc.get_objects() if isinstance(o, H2ServerRole) and not o.is_closed]
    relays = [o for o in gc.get_objects() if isinstance(o, RtspRelay)]
    return max((r.queued_outbound() for r in roles), default=0), max((r.stats.peak_pending for r in relays), default=0)
