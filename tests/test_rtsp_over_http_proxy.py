"""RTSP over HTTP through the cloud's HTTP proxy (STR-1, STR-2): an unmodified player (ffmpeg with
``-rtsp_transport http``) plays the RtspOverHttp URI that Media2 GetStreamUri returns through the
proxy -- camera -> device -> uplink -> the proxy's HTTP/1.1 front, the GET channel and the
base64 POST channel as two proxied requests joined on the device by ``x-sessioncookie``."""

from __future__ import annotations

import http.client
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from lxml import etree
from rtsp_env import DEVICE, PLAYER_TIMEOUT, TOKEN, decoded_frames, needs_camera, video_env

from iec62676_2_33.namespaces import SOAP_ENV

pytestmark = needs_camera

TR2 = "http://www.onvif.org/ver20/media/wsdl"


def get_stream_uri(proxy_url: str, protocol: str) -> str:
    """Media2 GetStreamUri through the proxy, anonymous (the uplink's UserLevel decides, UPL-12)."""
    body = (f'<env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tr2="{TR2}"><env:Body><tr2:GetStreamUri>'
            f"<tr2:Protocol>{protocol}</tr2:Protocol><tr2:ProfileToken>{TOKEN}</tr2:ProfileToken>"
            "</tr2:GetStreamUri></env:Body></env:Envelope>").encode()
    parts = urlsplit(proxy_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", f"/devices/{DEVICE}/onvif/media2_service", body,
                     {"Content-Type": "application/soap+xml; charset=utf-8"})
        response = conn.getresponse()
        text = response.read()
    finally:
        conn.close()
    assert response.status == 200, text[:500]
    uri = etree.fromstring(text).findtext(f".//{{{TR2}}}Uri")
    assert uri
    return uri


def test_ffmpeg_rtsp_over_http_through_the_proxy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """STR-1, STR-2: ffmpeg ``-rtsp_transport http`` on the RtspOverHttp URI through the proxy decodes
    100 frames; the proxy's HTTP/1.1 connections end without a traceback in the log."""
    import subprocess

    with video_env(tmp_path) as env:
        uri = get_stream_uri(env.proxy_url, "RtspOverHttp")
        assert uri == f"{env.proxy_url}/devices/{DEVICE}/onvif/rtsp/{TOKEN}"
        player_url = "rtsp://" + uri.removeprefix("http://")  # ffmpeg tunnels rtsp:// URLs over HTTP
        with caplog.at_level(logging.INFO):
            run = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", "http", "-i", player_url,
                                  "-frames:v", "100", "-f", "null", "-"],
                                 capture_output=True, text=True, timeout=PLAYER_TIMEOUT, check=False)
        assert run.returncode == 0, run.stderr[-2000:]
        assert decoded_frames(run.stderr) >= 100
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def test_a_tunnel_post_joins_only_a_get_of_the_same_client_sec_1(tmp_path: Path) -> None:
    """SEC-1, STR-2: a GET channel opened through the proxy from 127.0.0.1 waits under cookie ``c``; a POST with
    ``c`` from another address (127.0.0.2) is 404 (before, the device paired it by the cookie alone and the
    stranger drove the session); the POST from the GET's own address is joined (the empty session ends: 204)."""
    import httpx

    with video_env(tmp_path) as env:
        uri = get_stream_uri(env.proxy_url, "RtspOverHttp")
        head = {"accept": "application/x-rtsp-tunnelled", "x-sessioncookie": "c"}
        stranger = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
        with httpx.Client(timeout=10) as player, stranger, player.stream("GET", uri, headers=head) as channel:
            assert channel.status_code == 200
            hijack = stranger.post(uri, content=b"", headers=head)
            assert hijack.status_code == 404, hijack.text
            own = player.post(uri, content=b"", headers=head)
            assert own.status_code == 204, own.text
