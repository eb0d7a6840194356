"""GEN-1, GEN-3, ADR-2, ADR-4, ADR-6, ANX-B-1, ANX-B-4: the informative example 7.8.1 end to end — a camera
behind a device that dials a site VSS (its embedded cloud listener), the site VSS a lower system of a
regional VSS (by URL), and a client of the regional VSS: a resource query for the cameras within 100 m
of a point, GetStreamUri with the remote token it got, and ffmpeg decoding frames through both VSSs'
RTSP fronts and the uplink. Also: a resource Changed at the camera reaches a pull point of the regional
VSS with the token as the regional VSS exposes it.

Real parts on loopback: the GStreamer camera (tests/camera.py), TLS with certificates made here,
``run_device`` with its uplink agent, two ``run_vss``; every wait bounded."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from camera import start_camera
from rtsp_env import decode_frames, decoded_frames, needs_camera
from vss_env import FAR, HERE, NEAR, NS, add_lower, answer, seed, start_vss, stream_uri

from iec62676_2_33.domain.filters import LocationFilter
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.registry import REGISTRY_FILE, ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.query import ResourceChange, ResourceQueryClient
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud_server import CloudOptions
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device, wait_until
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.runtime import VssOptions

pytestmark = needs_camera

DEVICE = "cam-device"
CAMERA = Resource(f"{DEVICE}:main", "MediaProfile", name="Gate camera", location=NEAR)
FAR_CAMERA = Resource(f"{DEVICE}:yard", "MediaProfile", name="Yard camera", location=FAR)


@dataclass
class Chain:
    regional: str
    device_data: Path
    services: list[BackgroundService]

    def query(self) -> ResourceQueryClient:
        return ResourceQueryClient(f"{self.regional}/onvif/event_service", username="admin", password="admin-pw",
                                   pull_timeout=1.0)


def _announced(service: BackgroundService, pattern: str) -> str:
    text = wait_until(lambda: next((m for m in service.messages if re.search(pattern, m)), None), 15,
                      what=pattern)
    return re.search(pattern, text).group(1)  # type: ignore[union-attr]


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    certs = UplinkPki(tmp_path / "pki")
    with start_camera() as cam:
        services: list[BackgroundService] = []
        try:
            seed(tmp_path / "site")
            add_lower(tmp_path / "site", LowerSystem(prefix=DEVICE, uplink=DEVICE))
            uplink = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file])
            site, site_url = start_vss(tmp_path / "site", VssOptions(rtsp="127.0.0.1:0", uplink=uplink, timeout=5,
                                                                     mirror_retry=0.3))
            services.append(site)
            port = _announced(site, r"cloud listening for uplinks on https://127\.0\.0\.1:(\d+)/")

            seed_device(tmp_path / "dev", certs, DEVICE, [(f"https://localhost:{port}/uplink", ("User",))])
            seed(tmp_path / "dev", sources=(MediaSource(token="main", name="Gate camera", rtsp_url=cam.url,
                                                        width=cam.width, height=cam.height),),
                 resources=(CAMERA, FAR_CAMERA))
            with DeviceStore(tmp_path / "dev") as store:
                store.put_user("viewer", "viewer-pw", "User")
            device = RunningDevice(tmp_path / "dev")
            services.append(device.service)

            seed(tmp_path / "regional")
            add_lower(tmp_path / "regional", LowerSystem(prefix="site", url=f"{site_url}/onvif/device_service",
                                                         username="admin", password="admin-pw"))
            regional, regional_url = start_vss(tmp_path / "regional", VssOptions(rtsp="127.0.0.1:0", timeout=10,
                                                                                 mirror_retry=0.3))
            services.append(regional)
            yield Chain(regional_url, tmp_path / "dev", services)
        finally:
            for service in reversed(services):
                service.stop()


def test_live_video_example_7_8_1(chain: Chain) -> None:
    """ANX-B-1, GEN-1, ADR-6: cameras within 100 m at the regional VSS, the remote token from that answer,
    GetStreamUri through the regional VSS, and ffmpeg decodes frames of the camera three levels down."""
    def nearby() -> set[str]:
        with chain.query().subscribe(location=LocationFilter(HERE.lon, HERE.lat, 100.0)) as subscription:
            return {r.token for r in subscription.resources()}

    tokens = wait_until(nearby, 30, interval=0.2, what="the camera at the regional VSS")
    assert tokens == {CAMERA.token}  # the yard camera is 2 km away
    status, root = stream_uri(chain.regional, CAMERA.token)
    assert status == 200, root
    uri = answer(root).findtext("tr2:Uri", namespaces=NS)
    assert uri.startswith("rtsp://127.0.0.1:") and "/relay/" in uri
    run = decode_frames(uri.replace("rtsp://", "rtsp://admin:admin-pw@", 1), 50)  # the fronts ask for a user
    assert run.returncode == 0, run.stderr[-2000:]
    assert decoded_frames(run.stderr) >= 50


def test_camera_change_reaches_regional_pull_point(chain: Chain) -> None:
    """ANX-B-4, RQ-4, GEN-3: a resource Changed at the camera device arrives at a pull point of the regional
    VSS, two levels up, under the token the regional VSS exposes; when the device's uplink ends, its
    resources turn Offline there too."""
    def subscribed_tokens() -> set[str]:
        with chain.query().subscribe(prefix=DEVICE) as subscription:
            return {r.token for r in subscription.resources()}

    wait_until(lambda: CAMERA.token in subscribed_tokens(), 30, interval=0.2, what="the camera at the regional VSS")
    with chain.query().subscribe(prefix=DEVICE) as subscription:
        list(subscription.resources())
        with ResourceRegistry(chain.device_data / REGISTRY_FILE) as registry:
            registry.upsert(replace(CAMERA, name="Gate camera (north)"))
        deadline = time.monotonic() + 30
        seen: list[ResourceChange] = []

        def renamed() -> bool:
            return any(c.operation == "Changed" and c.resource.token == CAMERA.token
                       and c.resource.name == "Gate camera (north)" for c in seen)

        while not renamed() and time.monotonic() < deadline:
            seen.extend(subscription.pull())
        assert renamed(), f"the change did not arrive: {seen}"

        chain.services[1].stop()  # the device: its uplink to the site VSS ends
        offline: set[str] = set()
        wait_until(lambda: offline.update(c.resource.token for c in subscription.pull() if c.resource.offline)
                   or offline >= {CAMERA.token, FAR_CAMERA.token}, 30, what="the camera offline at the regional VSS")
        assert offline >= {CAMERA.token, FAR_CAMERA.token}
