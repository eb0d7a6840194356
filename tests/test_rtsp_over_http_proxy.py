"""RTSP over HTTP through the cloud's HTTP proxy (STR-1, STR-2): an unmodified player (ffmpeg with
``-rtsp_transport http``) plays the RtspOverHttp URI that Media2 GetStreamUri returns through the
proxy -- camera -> device -> uplink -> the proxy's HTTP/1.1 front, the GET channel and the
base64 POST channel as two proxied requests joined on the device by ``x-sessioncookie``."""

from __future__ import annotations

import contextlib
import http.client
import logging
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from lxml import etree
from rtsp_env import DEVICE, PLAYER_TIMEOUT, TOKEN, decoded_frames, needs_camera, video_env

from iec62676_2_33.namespaces import SOAP_ENV
from iec62676_2_33.runtime import proxy
from iec62676_2_33.testing.harness import wait_until

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


def _hold_gets(client: httpx.Client, uri: str, count: int, stack: contextlib.ExitStack) -> list[int]:
    """Open ``count`` GET channels that get no POST; their statuses (the channels stay open in ``stack``)."""
    statuses = []
    for n in range(count):
        channel = stack.enter_context(client.stream(
            "GET", uri, headers={"accept": "application/x-rtsp-tunnelled", "x-sessioncookie": f"held-{n}"}))
        statuses.append(channel.status_code)
    return statuses


def test_one_client_cannot_hold_every_waiting_channel_on_the_device_sec_1(tmp_path: Path) -> None:
    """SEC-1, STR-2: through the proxy, one client address has at most 8 GET channels waiting for their POST on
    the device (before, one client took all 64 and the device answered everyone else 503); another client
    address still gets its channel."""
    with video_env(tmp_path) as env, contextlib.ExitStack() as stack:
        uri = get_stream_uri(env.proxy_url, "RtspOverHttp")
        client = stack.enter_context(httpx.Client(timeout=10, limits=httpx.Limits(max_connections=32)))
        assert _hold_gets(client, uri, 8, stack) == [200] * 8
        ninth = client.get(uri, headers={"accept": "application/x-rtsp-tunnelled", "x-sessioncookie": "ninth"})
        assert ninth.status_code == 503 and "x-iec62676-proxy-answer" not in ninth.headers  # the device's answer
        other = stack.enter_context(httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10))
        assert _hold_gets(other, uri, 1, stack) == [200]


def test_the_proxy_bounds_tunnel_channels_per_client_sec_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC-1, STR-2: the proxy lets one client address have at most ``MAX_TUNNELS_PER_CLIENT`` RTSP-over-HTTP
    channels open (here 4), so silent channels of one client cannot take every request slot of the proxy (64)
    or of a node-to-node relay; the next is the proxy's own 503, another address is still served."""
    monkeypatch.setattr(proxy, "MAX_TUNNELS_PER_CLIENT", 4)
    with video_env(tmp_path) as env, contextlib.ExitStack() as stack:
        uri = get_stream_uri(env.proxy_url, "RtspOverHttp")
        client = stack.enter_context(httpx.Client(timeout=10, limits=httpx.Limits(max_connections=32)))
        with contextlib.ExitStack() as held:
            assert _hold_gets(client, uri, 4, held) == [200] * 4
            fifth = client.get(uri, headers={"accept": "application/x-rtsp-tunnelled", "x-sessioncookie": "fifth"})
            assert fifth.status_code == 503 and fifth.headers.get("x-iec62676-proxy-answer") == "1", fifth.text
            other = stack.enter_context(httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                                                     timeout=10))
            assert _hold_gets(other, uri, 1, stack) == [200]

        def again() -> bool:  # the slots come back once the channels ended (the device gives an unpaired GET 10 s)
            with client.stream("GET", uri, headers={"accept": "application/x-rtsp-tunnelled",
                                                    "x-sessioncookie": "again"}) as channel:
                return channel.status_code == 200

        wait_until(again, 30, 0.5, what="a tunnel slot given back")
