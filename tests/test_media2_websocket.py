"""STR-3, STR-5: RTSPWebSocketUri end to end — a request over the uplink gets the one RTSP-over-WebSocket URI,
and an RFC 8441 extended CONNECT on that URI's path plays any profile: the player's first request names
the stream (a real GStreamer camera behind a real device and uplink; skipped without the Debian parts, as
every live-video test)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from helpers import rtsp_request
from lxml import etree
from rtsp_env import DEVICE, TOKEN, needs_camera, video_env

from iec62676_2_33.namespaces import SOAP_ENV
from iec62676_2_33.sansio.rtsp_tunnel import TUNNEL_PATH
from iec62676_2_33.services.media2 import MEDIA2_PATH, TR2

pytestmark = needs_camera


def test_websocket_uri_over_the_uplink_plays_the_profile_its_first_request_names_str_3(tmp_path: Path) -> None:
    """STR-3: GetServiceCapabilities over the uplink (the cloud's own HTTP/2 client) announces
    wss://<host>/onvif/rtsp/; a CONNECT (:protocol websocket, rtsp.onvif.org) on that path gets the camera's
    SDP for a DESCRIBE of a URL ending in the profile token (the answer names the player's URL, not the
    camera's), and RTSP 404 for a URL naming no profile."""
    with video_env(tmp_path) as env:
        body = (f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{SOAP_ENV}" xmlns:tr2="{TR2}">'
                "<env:Body><tr2:GetServiceCapabilities/></env:Body></env:Envelope>").encode()
        answer = env.cloud.call(lambda: env.listener.request(
            DEVICE, "POST", MEDIA2_PATH, [("content-type", "application/soap+xml; charset=utf-8")], body), 30)
        assert answer.status == 200, answer.body[:500]
        caps = etree.fromstring(answer.body).find(f".//{{{TR2}}}StreamingCapabilities")
        uri = caps.get("RTSPWebSocketUri")
        assert uri is not None and uri.startswith("wss://") and urlsplit(uri).path == TUNNEL_PATH

        async def describe(url: str) -> bytes:
            stream = await env.listener.open_rtsp(DEVICE, "")  # the tunnel path of no token: the URI's path
            return await rtsp_request(stream, f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 3\r\nAccept: application/sdp\r\n\r\n")

        mine = f"rtsp://player.example/site-4/{TOKEN}"
        head, _, sdp = env.cloud.call(lambda: describe(mine), 30).partition(b"\r\n\r\n")
        assert head.startswith(b"RTSP/1.0 200 ") and b"CSeq: 3" in head and f"Content-Base: {mine}/".encode() in head
        assert b"m=video" in sdp and b"H264" in sdp and env.camera.url.encode() not in head + sdp
        refused = env.cloud.call(lambda: describe("rtsp://player.example/nope"), 30)
        assert refused.startswith(b"RTSP/1.0 404 ") and b"CSeq: 3" in refused
