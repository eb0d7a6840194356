"""ANX-B-1, SEC-1: a lower system's snapshot through the VSS — GetSnapshotUri at the VSS answers a URI on the
VSS's own snapshot route (never the lower system's address); a GET there is decided by the VSS's access control
(HTTP Digest, READ_MEDIA) and fetches the image from the lower system with the VSS's account.

Parts on loopback: a camera-side HTTP server with a real JPEG (ffmpeg), a device whose media source has that
snapshot, and a VSS whose lower system is the device by URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from lxml import etree
from test_media2_snapshot import CameraHttp, camera, source  # noqa: F401 - fixture
from vss_env import ADMIN, NS, add_lower, seed, snapshot_uri, start_device, start_vss

from iec62676_2_33.services.media2 import TR2
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.vss.lower import LowerSystem
from iec62676_2_33.vss.rtsp import RelayTable
from iec62676_2_33.vss.snapshots import SnapshotTable

TIMEOUT = 20.0
GUEST = ("guest", "guest-pw")


@pytest.fixture
def vss(tmp_path: Path, camera: tuple[CameraHttp, bytes]) -> Iterator[tuple[str, str]]:  # noqa: F811
    """(VSS base URL, device base URL)."""
    seed(tmp_path / "dev", sources=(source(camera[0]),))
    device, device_url = start_device(tmp_path / "dev")
    try:
        seed(tmp_path / "vss")
        with DeviceStore(tmp_path / "vss") as store:
            store.put_user(*GUEST, "Anonymous")
        add_lower(tmp_path / "vss", LowerSystem(prefix="cam", url=f"{device_url}/onvif/device_service",
                                                username=ADMIN[0], password=ADMIN[1]))
        service, vss_url = start_vss(tmp_path / "vss")
        try:
            yield vss_url, device_url
        finally:
            service.stop()
    finally:
        device.stop()


def test_lower_snapshot_is_served_by_the_vss_anx_b_1_sec_1(vss: tuple[str, str],
                                                           camera: tuple[CameraHttp, bytes]) -> None:  # noqa: F811
    """ANX-B-1, SEC-1: the VSS's URI for ``cam:main``, 401 with a Digest challenge without credentials, the
    camera's JPEG with the VSS's own credentials (the lower system's are never needed by the client), refused to
    an Anonymous-level user (READ_MEDIA needs User; answered like no credentials), 404 for a snapshot token the VSS never handed out."""
    vss_url, device_url = vss
    camera_http, jpeg = camera
    uri = snapshot_uri(vss_url, "cam:main")
    assert uri.startswith(f"{vss_url}/onvif/snapshot/cam%3Asnapshot-") and device_url not in uri
    assert snapshot_uri(vss_url, "cam:main") == uri  # one token per upstream URI

    anonymous = httpx.get(uri, timeout=TIMEOUT)
    assert anonymous.status_code == 401 and "Digest" in anonymous.headers["www-authenticate"]
    before = camera_http.requests
    fetched = httpx.get(uri, auth=httpx.DigestAuth(*ADMIN), timeout=TIMEOUT)
    assert (fetched.status_code, fetched.headers["content-type"], fetched.content) == (200, "image/jpeg", jpeg)
    assert camera_http.requests == before + 1
    assert httpx.get(uri, auth=httpx.DigestAuth(*GUEST), timeout=TIMEOUT).status_code == 401
    assert camera_http.requests == before + 1  # nothing fetched for a refused client
    unknown = uri.rsplit("snapshot-", 1)[0] + "snapshot-aaaaaaaaaaaaaaaa"
    assert httpx.get(unknown, auth=httpx.DigestAuth(*ADMIN), timeout=TIMEOUT).status_code == 404


def test_only_the_lower_systems_own_server_is_relayed_anx_b_1() -> None:
    """ANX-B-1: a snapshot URI on another server than the lower system's URL is left as written, so the VSS's
    account at the lower system is never offered elsewhere; the lower system's own is relayed."""
    lower = LowerSystem(prefix="cam", url="http://10.0.0.5:8080/onvif/device_service", username="vss", password="pw")
    table = SnapshotTable()
    for upstream, relayed in (("http://10.0.0.5:8080/onvif/snapshot/main", True),
                              ("http://10.0.0.5:9999/snap.jpg", False), ("https://10.0.0.5:8080/snap.jpg", False),
                              ("http://attacker.example/collect", False), ("http://[::1/x", False)):
        answer = etree.fromstring(f'<tr2:GetSnapshotUriResponse xmlns:tr2="{TR2}"><tr2:MediaUri><tr2:Uri>{upstream}'
                                  "</tr2:Uri></tr2:MediaUri></tr2:GetSnapshotUriResponse>")
        table.rewrite(answer, lower, "http://vss.example")
        uri = answer.findtext(".//tr2:Uri", namespaces=NS)
        assert (uri != upstream) == relayed, upstream
        if relayed:
            token = unquote(uri.rsplit("/", 1)[1])
            assert uri.startswith("http://vss.example/onvif/snapshot/cam%3Asnapshot-")
            assert table.source(token).snapshot_url == upstream  # type: ignore[union-attr]


def test_rtsp_relay_ids_are_random_but_stable_per_stream_anx_b_1() -> None:
    """ANX-B-1: the VSS's RTSP front has no authentication of its own, so a relay id cannot be computed from
    the upstream URI: two VSSs give the same stream different ids; one VSS keeps an id for its stream."""
    upstream = "rtsp://10.0.0.5:554/main"
    first, second = RelayTable("rtsp://vss:8554"), RelayTable("rtsp://vss:8554")
    uri = first.expose(upstream, "cam")
    assert uri == first.expose(upstream, "cam") != second.expose(upstream, "cam")
    assert first.source(uri.rsplit("/", 1)[1]).rtsp_url == upstream  # type: ignore[union-attr]
