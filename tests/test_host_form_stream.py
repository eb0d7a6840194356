"""STR-1, ANX-B-1, UPL-12: live video for an unmodified ONVIF client that reaches the device by host name
through the cloud (``cloud serve --device-domain DOMAIN --rtsp HOST:PORT``).

onvif-zeep-async's ``ONVIFCamera("<id>.DOMAIN", <proxy port>)`` bootstraps as against a camera (every XAddr
on that host), its ``ONVIFService`` on our Media2 WSDL (the library ships none, see test_media2.py) lists the
profiles and asks GetStreamUri; the RTSP URI names the cloud's RTSP front for that device, and ffmpeg
decodes frames from it through the front, the uplink and the device's relay from a real GStreamer camera.
Name resolution stands in for the wildcard DNS record an operator gives the domain; the client is untouched.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import USER
from rtsp_env import DEVICE, TOKEN, decode_frames, decoded_frames, needs_camera, video_env
from test_media2 import check_onvif_zeep_async

from iec62676_2_33.store import DeviceStore

pytestmark = needs_camera

DOMAIN = "devices.test"


@pytest.fixture
def wildcard_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``*.devices.test`` resolves to 127.0.0.1 in this process (the operator's wildcard DNS record)."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if str(host).endswith("." + DOMAIN) else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.mark.usefixtures("wildcard_dns")
def test_stream_uri_by_device_host_name_points_at_the_front_and_plays_str_1_anx_b_1(tmp_path: Path) -> None:
    """STR-1, ANX-B-1, UPL-12: by host name, GetStreamUri (RTSP) answers the cloud's RTSP front for that
    device, RtspOverHttp an address on the device's host name; ffmpeg decodes 30 frames from the RTSP URI."""
    with video_env(tmp_path, device_domain=DOMAIN) as env:
        with DeviceStore(env.data) as store:
            store.put_user(*USER, "User")
        port = int(urlsplit(env.proxy_url).port or 80)
        base = f"http://{DEVICE}.{DOMAIN}:{port}"
        got = asyncio.run(check_onvif_zeep_async(f"{DEVICE}.{DOMAIN}", port, base))
        assert got["profiles"][0][:3] == (TOKEN, "Camera 1", "H264")
        assert got["RTSP"] == env.url(token=TOKEN)
        assert got["RtspOverHttp"] == f"{base}/onvif/rtsp/{TOKEN}"
        played = decode_frames(got["RTSP"], frames=30)
        assert played.returncode == 0, played.stderr[-1500:]
        assert decoded_frames(played.stderr) >= 30


@pytest.mark.usefixtures("wildcard_dns")
def test_front_on_every_address_takes_the_host_the_client_named_str_1(tmp_path: Path) -> None:
    """STR-1: with the RTSP front on 0.0.0.0 (no host a player could dial) the stream URI names the device's
    host name and the front's port; ffmpeg decodes from it, the name resolved as the wildcard record would
    (ffmpeg runs in another process: the test puts in the address the record gives)."""
    with video_env(tmp_path, device_domain=DOMAIN, rtsp="0.0.0.0:0", rtsp_allow_remote=True) as env:
        with DeviceStore(env.data) as store:
            store.put_user(*USER, "User")
        port = int(urlsplit(env.proxy_url).port or 80)
        front_port = urlsplit(env.rtsp_base).port
        got = asyncio.run(check_onvif_zeep_async(f"{DEVICE}.{DOMAIN}", port, f"http://{DEVICE}.{DOMAIN}:{port}"))
        assert got["RTSP"] == f"rtsp://{DEVICE}.{DOMAIN}:{front_port}/devices/{DEVICE}/{TOKEN}"
        played = decode_frames(got["RTSP"].replace(f"{DEVICE}.{DOMAIN}", "127.0.0.1"), frames=30)
        assert played.returncode == 0, played.stderr[-1500:]
        assert decoded_frames(played.stderr) >= 30
