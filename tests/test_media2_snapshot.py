"""ANX-B-1, SEC-1, UPL-12: the snapshot relay — GetSnapshotUri's URI fetches a real JPEG on the device's
direct port (HTTP Digest, READ_MEDIA) and through the cloud's HTTP proxy over a User-level uplink (no
credentials: the uplink's level decides); bounded size and deadline towards the camera.

The camera side is a tiny stdlib HTTP server started by the test, serving a JPEG made by ffmpeg.
"""

from __future__ import annotations

import http.server
import io
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import USER, RunningDevice
from test_media2 import MEDIA2_PATH, NS, ok

from iec62676_2_33.domain.media import MediaSource, StoreMediaBackend
from iec62676_2_33.security.middleware import ENVIRON_UPLINK_LEVEL
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.snapshot import SnapshotRelay
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore

TIMEOUT = 20.0
SNAPSHOT = "<tr2:GetSnapshotUri><tr2:ProfileToken>{}</tr2:ProfileToken></tr2:GetSnapshotUri>"


def make_jpeg(path: Path) -> bytes:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (Debian package ffmpeg)")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=1",
                    "-frames:v", "1", "-y", str(path)], check=True, timeout=60)
    return path.read_bytes()


class CameraHttp:
    """The camera's HTTP server: ``/snap.jpg`` (the JPEG), ``/big.jpg`` (2 MiB), ``/slow.jpg`` (headers after
    2 s), ``/drip.jpg`` (one byte every 0.2 s), ``/page`` (text/html), ``/gone`` (404)."""

    def __init__(self, jpeg: bytes) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests += 1
                if self.path == "/slow.jpg":
                    time.sleep(2)
                body, kind = {"/big.jpg": (b"\xff" * (2 << 20), "image/jpeg"), "/page": (b"<html/>", "text/html"),
                              "/drip.jpg": (jpeg, "image/jpeg")}.get(self.path, (jpeg, "image/jpeg"))
                if self.path == "/gone":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if self.path == "/drip.jpg":
                        for i in range(min(len(body), 30)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.2)
                        return
                    self.wfile.write(body)
                except OSError:
                    pass

        self.requests = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def camera(tmp_path: Path) -> Iterator[tuple[CameraHttp, bytes]]:
    jpeg = make_jpeg(tmp_path / "snap.jpg")
    server = CameraHttp(jpeg)
    try:
        yield server, jpeg
    finally:
        server.close()


def source(camera: CameraHttp, path: str = "/snap.jpg", token: str = "main") -> MediaSource:
    return MediaSource(token=token, name="Main", rtsp_url="rtsp://127.0.0.1:8554/cam", snapshot_url=camera.base + path)


def test_snapshot_direct_needs_digest_and_returns_the_jpeg_anx_b_1_sec_1(
        device: RunningDevice, camera: tuple[CameraHttp, bytes]) -> None:
    """ANX-B-1, SEC-1: on the direct port the URI of GetSnapshotUri answers 401 with Digest challenges to an
    anonymous GET and the camera's JPEG, byte for byte, to a User with HTTP Digest."""
    server, jpeg = camera
    with DeviceStore(device.data) as store:
        store.put_media_source(source(server))
    uri = ok(device.base + MEDIA2_PATH, SNAPSHOT.format("main")).findtext("tr2:Uri", namespaces=NS)
    assert uri == device.base + "/onvif/snapshot/main"
    anonymous = httpx.get(uri, timeout=TIMEOUT)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Digest ")
    assert server.requests == 0  # refused before the camera is asked
    got = httpx.get(uri, auth=httpx.DigestAuth(*USER), timeout=TIMEOUT)
    assert (got.status_code, got.headers["content-type"], got.content) == (200, "image/jpeg", jpeg)
    assert got.content[:2] == b"\xff\xd8"
    wrong = httpx.get(uri, auth=httpx.DigestAuth(USER[0], "wrong"), timeout=TIMEOUT)
    assert wrong.status_code == 401


def test_snapshot_through_the_cloud_proxy_anx_b_1_upl_12(tmp_path: Path, camera: tuple[CameraHttp, bytes]) -> None:
    """ANX-B-1, UPL-12: through the cloud's HTTP proxy to a device with no listening port, GetSnapshotUri
    points back through the proxy and a plain GET there (no credentials: the User-level uplink decides)
    returns the camera's JPEG."""
    from iec62676_2_33.testing.harness import RunningCloud, UplinkPki, seed_device
    from iec62676_2_33.testing.harness import RunningDevice as Device

    server, jpeg = camera
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    try:
        seed_device(tmp_path / "dev", certs, "cam-s", [(cloud.uplink_url(), ("User",))])
        with DeviceStore(tmp_path / "dev") as store:
            store.put_user(*USER, "User")
            store.put_media_source(source(server))
        device = Device(tmp_path / "dev", listen=False)
        try:
            cloud.wait_for("cam-s")
            base = f"{cloud.proxy_url}/devices/cam-s"
            uri = ok(base + MEDIA2_PATH, SNAPSHOT.format("main")).findtext("tr2:Uri", namespaces=NS)
            assert uri == base + "/onvif/snapshot/main"
            got = httpx.get(uri, timeout=TIMEOUT)
            assert (got.status_code, got.headers["content-type"], got.content) == (200, "image/jpeg", jpeg)
            assert httpx.get(base + "/onvif/snapshot/nope", timeout=TIMEOUT).status_code == 404
        finally:
            device.stop()
    finally:
        cloud.stop()


def wsgi_get(app: Any, path: str, method: str = "GET", **environ: Any) -> tuple[str, bytes]:
    env = {"REQUEST_METHOD": method, "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", "HTTP_HOST": "cam.local",
           "SERVER_NAME": "cam.local", "SERVER_PORT": "80", "SCRIPT_NAME": "", "PATH_INFO": path, **environ}
    got: dict[str, str] = {}
    body = b"".join(app(env, lambda status, headers, exc_info=None: got.setdefault("status", status)))
    return got["status"], body


def test_snapshot_levels_and_bounds_sec_1_upl_12(tmp_path: Path, camera: tuple[CameraHttp, bytes]) -> None:
    """SEC-1, UPL-12: an uplink level without READ_MEDIA gets 403 and the camera is not asked; the relay
    refuses what it cannot pass on cleanly: a body above its size budget, a camera slower than its timeout or
    its total deadline, something that is not an image, a camera error, an unknown token, a POST."""
    server, jpeg = camera
    user = {ENVIRON_UPLINK_LEVEL: ["User"]}
    with DeviceStore(tmp_path / "d") as store:
        for token, path in (("main", "/snap.jpg"), ("big", "/big.jpg"), ("slow", "/slow.jpg"), ("drip", "/drip.jpg"),
                            ("page", "/page"), ("gone", "/gone")):
            store.put_media_source(source(server, path, token))
        store.put_media_source(MediaSource(token="nosnap", name="n", rtsp_url="rtsp://127.0.0.1:8554/x"))
        app = build_device_app(UplinkServiceContext(store=store))
        assert wsgi_get(app, "/onvif/snapshot/main", **{ENVIRON_UPLINK_LEVEL: ["Guest"]})[0].startswith("403")
        assert server.requests == 0
        assert wsgi_get(app, "/onvif/snapshot/main", **user) == ("200 OK", jpeg)
        assert wsgi_get(app, "/onvif/snapshot/main", "HEAD", **user) == ("200 OK", b"")
        for token in ("nosnap", "unknown"):
            assert wsgi_get(app, f"/onvif/snapshot/{token}", **user)[0].startswith("404")
        assert wsgi_get(app, "/onvif/snapshot/main", "DELETE", **user)[0].startswith("405")

        relay = SnapshotRelay(StoreMediaBackend(store), None, timeout=0.5, deadline=1.0, max_bytes=1 << 20)
        for token, expected in (("big", "502"), ("slow", "504"), ("drip", "504"), ("page", "502"), ("gone", "502")):
            status, body = wsgi_get(relay, f"/onvif/snapshot/{token}", **user)
            assert status.startswith(expected), (token, status, body)
            assert server.base.encode() not in body and body.count(b"\n") == 1
