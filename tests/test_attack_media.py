"""ANX-B-2, STR-1, STR-2, STR-4: attack-pass regressions for the PTZ service, Media2 stream URIs and the
device's RTSP tunnel relay.

Each test runs the real device (application, or device, uplink and cloud; a camera-side RTSP server where
the camera's view matters) on loopback and sends the request that showed the defect.
"""

from __future__ import annotations

import http.client
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import OPERATOR, seed_device
from helpers import fault_chain
from lxml import etree
from rtsp_env import DEVICE, TOKEN, RawPlayer, needs_camera, video_env
from served_app import body_of, envelope, serve_app, soap_call

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.domain.ptz import PtzNode, SimulatedPtz
from iec62676_2_33.namespaces import SOAP_ENV, TT
from iec62676_2_33.sansio.rtsp_tunnel import TUNNEL_CONTENT_TYPE
from iec62676_2_33.services.app import build_device_app
from iec62676_2_33.services.media2 import MEDIA2_PATH, TR2
from iec62676_2_33.services.ptz import PTZ_PATH, TPTZ
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DeviceStore

NS = {"env": SOAP_ENV, "tptz": TPTZ, "tt": TT}
NODE = PtzNode(token="head-1", name="Dome", profile_token="main")
MAIN = MediaSource(token="main", name="Main", rtsp_url="rtsp://127.0.0.1:8554/main")
STATUS = "<tptz:GetStatus><tptz:ProfileToken>main</tptz:ProfileToken></tptz:GetStatus>"


class FakeClock:
    """The device's clock, advanced by hand from the real time (WS-Security checks Created against it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ptz(tmp_path: Path, clock: FakeClock) -> Iterator[str]:
    """A device application with one profile reaching a simulated PTZ head; yields the PTZ address."""
    seed_device(tmp_path / "d")
    with DeviceStore(tmp_path / "d") as store:
        store.put_media_source(MAIN)
        app = build_device_app(UplinkServiceContext(store=store), clock=clock, ptz=SimulatedPtz([NODE], clock()))
        with serve_app(app) as base:
            yield base + PTZ_PATH


def _status(url: str) -> etree._Element:
    status, root = soap_call(url, STATUS, NS, user=OPERATOR)
    assert status == 200, etree.tostring(root)
    found: etree._Element = body_of(root).find("tptz:PTZStatus", NS)
    return found


def _move_status(url: str) -> tuple[str | None, str | None]:
    found = _status(url)
    return found.findtext("tt:MoveStatus/tt:PanTilt", namespaces=NS), found.findtext("tt:MoveStatus/tt:Zoom",
                                                                                      namespaces=NS)


def _position(url: str) -> tuple[float, float, float]:
    found = _status(url)
    pan_tilt, zoom = found.find("tt:Position/tt:PanTilt", NS), found.find("tt:Position/tt:Zoom", NS)
    return float(pan_tilt.get("x")), float(pan_tilt.get("y")), float(zoom.get("x"))


def test_a_subnormal_speed_is_refused_whole_not_half_run_anx_b_2(ptz: str) -> None:
    """ANX-B-2: an AbsoluteMove whose tilt speed (5e-324, inside the generic speed space) underflows to
    0 units per second once scaled by the node's max speed is refused as ter:InvalidSpeed, and nothing
    of it ran: the pan axis does not start moving (it did, behind a 500 "service failed")."""
    move = ("<tptz:AbsoluteMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Position>"
            '<tt:PanTilt x="0.5" y="0.5"/></tptz:Position><tptz:Speed><tt:PanTilt x="0.5" y="5e-324"/>'
            "</tptz:Speed></tptz:AbsoluteMove>")
    status, root = soap_call(ptz, move, NS, user=OPERATOR)
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidSpeed"])
    assert _move_status(ptz) == ("IDLE", "IDLE")


def _call(url: str, body: str) -> None:
    status, root = soap_call(url, body, NS, user=OPERATOR)
    assert status == 200, etree.tostring(root)


@pytest.mark.parametrize("velocity", [0.3, 0.45, 0.6, 0.74, 0.85, 0.9])
def test_a_head_stops_exactly_on_its_limits_and_targets_anx_b_2(ptz: str, clock: FakeClock,
                                                                     velocity: float) -> None:
    """ANX-B-2: a ContinuousMove that runs into the limits stops exactly on them, and an AbsoluteMove arrives
    exactly at its target: GetStatus reports the limits and the target themselves (it was off by up to ~2e-8,
    past a limit or short of it: the end time, rounded to the epoch clock's float, scaled the rate's travel)."""
    _call(ptz, "<tptz:ContinuousMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Velocity>"
               f'<tt:PanTilt x="{velocity}" y="-{velocity}"/><tt:Zoom x="{velocity}"/></tptz:Velocity>'
               "<tptz:Timeout>PT3600S</tptz:Timeout></tptz:ContinuousMove>")
    clock.now += 100.0
    assert _position(ptz) == (1.0, -1.0, 1.0)
    _call(ptz, "<tptz:AbsoluteMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Position>"
               '<tt:PanTilt x="-0.3" y="0.7"/><tt:Zoom x="0.125"/></tptz:Position><tptz:Speed>'
               f'<tt:PanTilt x="{velocity}" y="{velocity}"/><tt:Zoom x="{velocity}"/></tptz:Speed></tptz:AbsoluteMove>')
    clock.now += 100.0
    assert _position(ptz) == (-0.3, 0.7, 0.125)


@needs_camera
def test_an_unknown_tunnel_token_is_echoed_as_an_excerpt_only_str_2(tmp_path: Path) -> None:
    """STR-2: RTSP over HTTP through the cloud's proxy to a media token nobody configured is 404 whose text
    names at most 64 characters of it (it echoed the whole path segment, 6,000 characters here)."""
    with video_env(tmp_path) as env:
        parts = urlsplit(env.proxy_url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request("GET", f"/devices/{DEVICE}/onvif/rtsp/{'b' * 6000}", headers={"x-sessioncookie": "c1"})
            response = conn.getresponse()
            status, text = response.status, response.read()
        finally:
            conn.close()
    assert status == 404
    assert text == f"no media source {'b' * 64!r}\n".encode()


@needs_camera
def test_rtsp_over_http_stream_uri_over_the_uplink_itself_str_1_str_2(tmp_path: Path) -> None:
    """STR-1, STR-2: GetStreamUri for RtspOverHttp asked by the cloud straight over the uplink (no proxy, no
    X-Forwarded-*) names the device's RTSP-over-HTTP path, and a GET channel on that path over the uplink is
    taken (it faulted InvalidStreamSetup, "relayed over the uplink only", on the very uplink that relays it)."""
    with video_env(tmp_path) as env:
        channel = env.listener.channel(DEVICE)
        body = envelope(f"<tr2:GetStreamUri><tr2:Protocol>RtspOverHttp</tr2:Protocol><tr2:ProfileToken>{TOKEN}"
                        "</tr2:ProfileToken></tr2:GetStreamUri>", {"tr2": TR2}, None)

        async def get_stream_uri() -> tuple[int, bytes]:
            sid, status, _ = await channel.open("POST", MEDIA2_PATH, [("content-type", "application/soap+xml")],
                                                body, timeout=10)
            answer = b""
            async for chunk in channel.body(sid, timeout=10):
                answer += chunk
            return status, answer

        status, answer = env.cloud.call(get_stream_uri, 30)
        assert status == 200, answer[-500:]
        uri = etree.fromstring(answer).findtext(f".//{{{TR2}}}Uri") or ""
        assert urlsplit(uri).path == f"/onvif/rtsp/{TOKEN}"

        async def get_channel() -> tuple[int, list[tuple[str, str]]]:
            sid = await channel.open_stream("GET", urlsplit(uri).path, [("x-sessioncookie", "attack-media-1")],
                                            end_stream=True, timeout=10)
            try:
                return await channel.response(sid, timeout=10)
            finally:
                channel.cancel(sid)

        status, headers = env.cloud.call(get_channel, 30)
        assert (status, dict(headers).get("content-type")) == (200, TUNNEL_CONTENT_TYPE)


class _RecordingCamera(socketserver.StreamRequestHandler):
    """A camera-side RTSP server that notes each request's method and whether it carried credentials: 401 with a
    Digest challenge to a request without ``Authorization``, else 200 OK."""

    seen: list[tuple[str, bool]]

    def handle(self) -> None:
        self.connection.settimeout(10)
        while head := self._head():
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            self.rfile.read(int(headers.get("content-length", "0")))
            authorized = "authorization" in headers
            self.seen.append((lines[0].split(" ")[0], authorized))
            status = "200 OK" if authorized else '401 Unauthorized\r\nWWW-Authenticate: Digest realm="cam", nonce="n1"'
            self.wfile.write(f"RTSP/1.0 {status}\r\nCSeq: {headers.get('cseq', '0')}\r\n\r\n".encode())

    def _head(self) -> bytes:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline(4096)
            if not line:
                return b""
            head += line
        return head.rstrip()


@needs_camera
def test_a_player_cannot_publish_to_the_camera_with_its_credentials_str_4(tmp_path: Path) -> None:
    """STR-4: a player over a User-level uplink (READ_MEDIA) that sends ANNOUNCE and RECORD gets 405 and the
    camera sees neither; it saw both, with the device's camera credentials (answered to its Digest challenge)."""
    seen: list[tuple[str, bool]] = []
    handler = type("Camera", (_RecordingCamera,), {"seen": seen})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as camera:
        camera.daemon_threads = True
        threading.Thread(target=camera.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        try:
            with video_env(tmp_path) as env:
                with DeviceStore(env.data) as store:
                    store.put_media_source(MediaSource(token="pub", name="Publishing", username="cam", password="pw",
                                                       rtsp_url=f"rtsp://127.0.0.1:{camera.server_address[1]}/in"))
                url = env.url(token="pub")
                player = RawPlayer(url, timeout=10)
                try:
                    sdp = b"v=0\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
                    player.send(f"ANNOUNCE {url} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\n"
                                f"Content-Length: {len(sdp)}\r\n\r\n".encode() + sdp)
                    announced = player.read_response()[:2]
                    player.send(f"RECORD {url} RTSP/1.0\r\nCSeq: 2\r\n\r\n".encode())
                    try:
                        recorded: object = player.read_response()[0]
                    except (EOFError, OSError):
                        recorded = "session ended"
                finally:
                    player.close()
        finally:
            camera.shutdown()
    assert announced == (405, {"cseq": "1", "content-length": "0"})
    assert recorded == "session ended"
    assert not [method for method, _ in seen if method in ("ANNOUNCE", "RECORD")], seen


@needs_camera
def test_a_profile_token_that_needs_quoting_plays_through_the_cloud_str_1(tmp_path: Path) -> None:
    """STR-1: the stream URI GetStreamUri answers through the cloud's proxy for a profile whose token is quoted
    in a URI (``sub#2`` -> ``sub%232``) plays: DESCRIBE on it is the camera's SDP (the relay looked for the
    unquoted token in the player's URL and answered 404)."""
    with video_env(tmp_path) as env:
        with DeviceStore(env.data) as store:
            store.put_media_source(MediaSource(token="sub#2", name="Sub", rtsp_url=env.camera.url))
        parts = urlsplit(env.proxy_url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request("POST", f"/devices/{DEVICE}{MEDIA2_PATH}",
                         envelope("<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol><tr2:ProfileToken>sub#2"
                                  "</tr2:ProfileToken></tr2:GetStreamUri>", {"tr2": TR2}, None),
                         {"Content-Type": "application/soap+xml; charset=utf-8"})
            response = conn.getresponse()
            status, answer = response.status, response.read()
        finally:
            conn.close()
        assert status == 200, answer[-500:]
        url = etree.fromstring(answer).findtext(f".//{{{TR2}}}Uri") or ""
        assert url == env.url(token="sub%232")
        player = RawPlayer(url, timeout=10)
        try:
            player.send(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode())
            described, headers, sdp = player.read_response()
        finally:
            player.close()
    assert (described, headers.get("content-type"), headers.get("content-base")) == (
        200, "application/sdp", url + "/")
    assert b"m=video" in sdp
