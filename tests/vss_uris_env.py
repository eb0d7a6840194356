"""Test helper for the URIs a VSS answers: a GStreamer camera behind two devices, one a lower system of the VSS
by URL (prefix ``cam``), one dialling the VSS's embedded cloud listener (prefix ``cam-device``); the VSS runs an
RTSP front. Real parts on loopback (TLS with certificates made here), every wait bounded."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from camera import Camera, start_camera
from rtsp_env import PLAYER_TIMEOUT
from vss_env import NS, add_lower, answer, seed, start_device, start_vss, stream_uri

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud_server import CloudOptions
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device, wait_until
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.runtime import VssOptions

#: The lower system on an uplink (its device ID is its prefix) and the one reached by URL.
UPLINK_DEVICE = "cam-device"
URL_PREFIX = "cam"
VIEWER = ("viewer", "viewer-pw")  # a User of the VSS: READ_MEDIA
GUEST = ("guest", "guest-pw")  # an Anonymous-level user of the VSS


@dataclass
class Hierarchy:
    vss: str  # the VSS's base URL
    camera: Camera
    vss_service: BackgroundService
    data: Path  # the VSS's data folder

    def uri(self, token: str, protocol: str = "RTSP") -> str:
        """GetStreamUri at the VSS (as its admin); the URI answered."""
        status, root = stream_uri(self.vss, token, protocol)
        assert status == 200, root
        uri = answer(root).findtext("tr2:Uri", namespaces=NS)
        assert uri
        return uri


def _announced(service: BackgroundService, pattern: str) -> str:
    text = wait_until(lambda: next((m for m in service.messages if re.search(pattern, m)), None), 15, what=pattern)
    return re.search(pattern, text).group(1)  # type: ignore[union-attr]


@contextmanager
def hierarchy(tmp_path: Path, *, snapshot_url: str | None = None, more: tuple[MediaSource, ...] = (),
              options: VssOptions | None = None) -> Iterator[Hierarchy]:
    """The VSS with its two lower systems, both devices with media source ``main`` (the camera; the snapshot
    at ``snapshot_url`` when given) and the sources ``more``; yields once the uplink device answers through
    the VSS."""
    certs = UplinkPki(tmp_path / "pki")
    services: list[BackgroundService] = []
    with start_camera() as cam:
        try:
            source = MediaSource(token="main", name="Gate camera", rtsp_url=cam.url, width=cam.width,
                                 height=cam.height, snapshot_url=snapshot_url)
            seed(tmp_path / "direct", sources=(source, *more))
            direct, direct_url = start_device(tmp_path / "direct")
            services.append(direct)

            seed(tmp_path / "vss")
            with DeviceStore(tmp_path / "vss") as store:
                store.put_user(*VIEWER, "User")
                store.put_user(*GUEST, "Anonymous")
            add_lower(tmp_path / "vss", LowerSystem(prefix=URL_PREFIX, url=f"{direct_url}/onvif/device_service",
                                                    username="admin", password="admin-pw"))
            add_lower(tmp_path / "vss", LowerSystem(prefix=UPLINK_DEVICE, uplink=UPLINK_DEVICE))
            uplink = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file])
            options = options or VssOptions(rtsp="127.0.0.1:0", timeout=5, mirror_retry=0.3)
            options.uplink = uplink
            vss, vss_url = start_vss(tmp_path / "vss", options)
            services.append(vss)
            port = _announced(vss, r"cloud listening for uplinks on https://127\.0\.0\.1:(\d+)/")

            seed_device(tmp_path / "dev", certs, UPLINK_DEVICE, [(f"https://localhost:{port}/uplink", ("User",))])
            seed(tmp_path / "dev", sources=(source, *more))
            services.append(RunningDevice(tmp_path / "dev").service)
            wait_until(lambda: stream_uri(vss_url, f"{UPLINK_DEVICE}:main")[0] == 200, 30, interval=0.2,
                       what="the uplink device through the VSS")
            yield Hierarchy(vss_url, cam, vss, tmp_path / "vss")
        finally:
            for service in reversed(services):
                service.stop()


def play(url: str, frames: int = 50, *, transport: str = "tcp") -> subprocess.CompletedProcess[str]:
    """ffmpeg decodes ``frames`` video frames of ``url`` (``transport``: tcp, or http for RTSP over HTTP)."""
    return subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", transport, "-i", url,
                           "-frames:v", str(frames), "-f", "null", "-"],
                          capture_output=True, text=True, timeout=PLAYER_TIMEOUT, check=False)


def with_user(uri: str, user: tuple[str, str]) -> str:
    """``rtsp://user:password@host…`` of an ``rtsp://`` or ``http://`` URI (ffmpeg tunnels rtsp URLs over HTTP)."""
    rest = uri.split("://", 1)[1]
    return f"rtsp://{user[0]}:{user[1]}@{rest}"
