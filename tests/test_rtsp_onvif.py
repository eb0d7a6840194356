"""An unmodified ONVIF client and a stock player through the cloud only: onvif-zeep-async asks the
device's Media2 service for a stream URI through the cloud's HTTP proxy (which tells the device
where the cloud's RTSP front is), and ffprobe plays that URI through the front and the uplink."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from conftest import USER
from rtsp_env import DEVICE, TOKEN, ffprobe, needs_camera, video_env
from test_media2 import check_onvif_zeep_async, stream_uri

from iec62676_2_33.store import DeviceStore

pytestmark = needs_camera


def test_onvif_client_gets_the_front_uri_and_ffprobe_plays_it(tmp_path: Path) -> None:
    """STR-1, UPL-12: GetStreamUri (RTSP) through the proxy of a cloud with an RTSP front answers
    rtsp://<front>/devices/<id>/<token>; ffprobe on it sees the camera's H.264 stream."""
    with video_env(tmp_path) as env:
        with DeviceStore(env.data) as store:
            store.put_user(*USER, "User")
        base = f"{env.proxy_url}/devices/{DEVICE}"
        port = int(urlsplit(env.proxy_url).port or 80)
        # onvif-zeep-async appends ":<port>/onvif/device_service" itself (test_interop_onvif_clients.py)
        got = asyncio.run(check_onvif_zeep_async(f"{base}/onvif/device_service#", port, base))
        assert got["RTSP"] == env.url(token=TOKEN)
        probe = ffprobe(got["RTSP"])
        assert probe.returncode == 0, probe.stderr[-1500:]
        assert probe.stdout.strip() == f"h264,{env.camera.width},{env.camera.height}"


def test_proxy_sets_the_front_base_and_drops_a_client_copy(tmp_path: Path) -> None:
    """STR-1: the proxy tells the device where the RTSP front is; an `x-iec62676-rtsp-base` sent by
    a client is dropped, never passed on (a client cannot make the device name another host)."""
    with video_env(tmp_path) as env:
        with DeviceStore(env.data) as store:
            store.put_user(*USER, "User")
        media2 = f"{env.proxy_url}/devices/{DEVICE}/onvif/media2_service"
        forged = {"x-iec62676-rtsp-base": "rtsp://evil.example:554/x"}
        assert stream_uri(media2, "RTSP", TOKEN, headers=forged) == env.url(token=TOKEN)
