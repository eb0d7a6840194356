"""ANX-B-1, SEC-1: the snapshot of a lower system on an uplink of the VSS's embedded cloud listener. GetSnapshotUri
at the VSS answers a URI on the VSS's own snapshot route; a GET there is decided by the VSS's access control
(HTTP Digest of its users, READ_MEDIA) and the image comes over the uplink from the device's snapshot relay, which
fetched it from the camera: the JPEG arrives byte for byte, nothing is fetched for a refused client.

Real parts on loopback: a camera-side HTTP server with a real JPEG (ffmpeg), the GStreamer camera, a device on an
uplink and one by URL, ``run_vss`` with its embedded cloud listener (TLS with certificates made here)."""

from __future__ import annotations

from pathlib import Path

import httpx
from rtsp_env import needs_camera
from test_media2_snapshot import CameraHttp, camera  # noqa: F401 - fixture
from vss_env import snapshot_uri
from vss_uris_env import GUEST, UPLINK_DEVICE, URL_PREFIX, VIEWER, hierarchy

from iec62676_2_33.domain.media import MediaSource

pytestmark = needs_camera

TIMEOUT = 20.0


def test_snapshot_of_a_lower_system_on_an_uplink_anx_b_1_sec_1(tmp_path: Path,
                                                              camera: tuple[CameraHttp, bytes]) -> None:  # noqa: F811
    """ANX-B-1, SEC-1: the VSS's snapshot URI for ``cam-device:main`` (on an uplink) and for ``cam:main`` (by URL);
    401 with a Digest challenge without credentials and for an Anonymous-level user (the camera is not asked);
    the camera's JPEG for a User of the VSS, through the uplink; a camera that fails is a 502 there."""
    camera_http, jpeg = camera
    gone = MediaSource(token="gone", name="Gone", rtsp_url="rtsp://127.0.0.1:9/gone",
                       snapshot_url=f"{camera_http.base}/gone")
    with hierarchy(tmp_path, snapshot_url=f"{camera_http.base}/snap.jpg", more=(gone,)) as vss:
        uri = snapshot_uri(vss.vss, f"{UPLINK_DEVICE}:main")
        assert uri.startswith(f"{vss.vss}/onvif/snapshot/{UPLINK_DEVICE}%3Asnapshot-")
        assert snapshot_uri(vss.vss, f"{UPLINK_DEVICE}:main") == uri  # one token per upstream URI
        before = camera_http.requests
        anonymous = httpx.get(uri, timeout=TIMEOUT)
        assert anonymous.status_code == 401 and "Digest" in anonymous.headers["www-authenticate"]
        assert httpx.get(uri, auth=httpx.DigestAuth(*GUEST), timeout=TIMEOUT).status_code == 401
        assert camera_http.requests == before  # nothing fetched for a refused client
        fetched = httpx.get(uri, auth=httpx.DigestAuth(*VIEWER), timeout=TIMEOUT)
        assert (fetched.status_code, fetched.headers["content-type"], fetched.content) == (200, "image/jpeg", jpeg)
        assert camera_http.requests == before + 1
        by_url = snapshot_uri(vss.vss, f"{URL_PREFIX}:main")
        assert by_url.startswith(f"{vss.vss}/onvif/snapshot/{URL_PREFIX}%3Asnapshot-") and by_url != uri
        fetched = httpx.get(by_url, auth=httpx.DigestAuth(*VIEWER), timeout=TIMEOUT)
        assert (fetched.status_code, fetched.content) == (200, jpeg)
        failed = httpx.get(snapshot_uri(vss.vss, f"{UPLINK_DEVICE}:gone"), auth=httpx.DigestAuth(*VIEWER),
                           timeout=TIMEOUT)
        assert failed.status_code == 502 and "lower system answered 502" in failed.text  # one line, no address
        assert camera_http.base not in failed.text
