"""STR-1, UPL-16: live video across the nodes of a cloud cluster (the cluster itself has no
requirement IDs of its own: IEC 62676-2-33 knows one cloud).

Two ``iec62676 cloud serve --nats … --rtsp`` nodes and a real nats-server on loopback; one device
(our device runtime) with a real GStreamer camera as its media source holds its uplink at node B.
Through node A only: GetStreamUri (RTSP) by path and by host name (``--device-domain``) answers a
URI on node A's RTSP front (the ``x-iec62676-rtsp-base`` crosses the node-to-node hop, a client's
forged copy does not); ffmpeg decodes frames from that URI, the session running through B's
internal listener (HTTP/2, mutual TLS) and the uplink; when the player leaves (with or without
TEARDOWN), the device's session ends too; an unknown media token is RTSP 404; sixteen sessions
opened one after another while the others sit idle before PLAY open without waiting on each
other, a seventeenth is RTSP 503 (MAX_NODE_SESSIONS). Then node B is
killed with SIGKILL in the middle of a session, after the player sent nothing for 40 s (longer
than B's 30 s wait for the POST channel's next bytes): the player's connection ends (no hang:
every read bounded) and node A logs one line naming B. Every wait is bounded.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from camera import Camera, start_camera
from cluster_env import DEVICE_DOMAIN, NatsServer, Node, NodePki, have
from conftest import USER
from rtsp_env import DEVICE, TOKEN, RawPlayer, decode_frames, decoded_frames, needs_camera
from test_media2 import stream_uri

from iec62676_2_33.cluster.router import MAX_NODE_SESSIONS
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.runtime.rtsp_relay import RtspRelay
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device, wait_until

pytestmark = [needs_camera, pytest.mark.skipif(not have("nats-server"),
                                               reason="Debian nats-server is needed (.ci/run installs it)")]

#: The player's reads after node B is killed: a session that did not end would time out here.
READ_BOUND = 30.0
#: Seconds a player sends nothing while it plays: longer than the other node's 30 s wait for the
#: next bytes of a request body (the POST channel), which node A's keep-alive spans.
QUIET = 40.0


@dataclass
class Env:
    a: Node
    b: Node
    camera: Camera
    device: RunningDevice

    def front_url(self, token: str = TOKEN) -> str:
        assert self.a.rtsp_base is not None
        return f"{self.a.rtsp_base}/devices/{DEVICE}/{token}"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    certs = UplinkPki(tmp_path / "pki")
    node_pki = NodePki(tmp_path / "pki")
    nats = NatsServer(tmp_path / "js")
    nodes: list[Node] = []
    try:
        # no balancer here: the device dials node B itself (the PROXY header is asked of 127.0.0.2 only)
        for name in ("a", "b"):
            nodes.append(Node(name, cert=certs.cert, key=certs.key, client_ca=certs.ca_file, nodes=node_pki,
                              nats_url=nats.url, balancer="127.0.0.2/32", log=tmp_path / f"{name}.log", rtsp=True))
        a, b = nodes
        with start_camera() as cam:
            data = tmp_path / "dev"
            seed_device(data, certs, DEVICE, [(f"https://localhost:{b.port}/uplink", ("User",))])
            with DeviceStore(data) as store:
                store.put_media_source(MediaSource(token=TOKEN, name="Camera 1", rtsp_url=cam.url, width=cam.width,
                                                   height=cam.height))
                store.put_user(*USER, "User")
            device = RunningDevice(data, listen=False)
            try:
                wait_until(lambda: held_at(a) == "b", 30, 0.2, "node a lists the device at node b")
                yield Env(a, b, cam, device)
            finally:
                device.stop()
    finally:
        for node in nodes:
            node.stop()
        nats.kill()


def held_at(node: Node) -> str | None:
    try:
        listing = httpx.get(f"{node.proxy_url}/devices", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None
    return next((d["node"] for d in listing if d["id"] == DEVICE), None)


def device_sessions() -> int:
    """RTSP sessions the device's relays run now (the device runs in this process)."""
    return sum(o.stats.sessions for o in gc.get_objects() if isinstance(o, RtspRelay))


def test_stream_uri_and_video_through_another_node_str_1(env: Env) -> None:
    """STR-1, UPL-16: GetStreamUri through node A for a device at node B names A's RTSP front, by path
    and by host name; ffmpeg decodes 30 frames from it; the device's session ends with the player's, also
    one that vanishes without TEARDOWN;
    an unknown token is RTSP 404 and a device no node holds is RTSP 404."""
    front = env.front_url()
    media2 = f"{env.a.proxy_url}/devices/{DEVICE}/onvif/media2_service"
    assert stream_uri(media2, "RTSP", TOKEN) == front
    forged = {"x-iec62676-rtsp-base": "rtsp://evil.example:554/x"}
    assert stream_uri(media2, "RTSP", TOKEN, headers=forged) == front
    host = f"{DEVICE}.{DEVICE_DOMAIN}:{urlsplit(env.a.proxy_url).port}"
    assert stream_uri(f"{env.a.proxy_url}/onvif/media2_service", "RTSP", TOKEN, headers={"host": host}) == front

    played = decode_frames(front, frames=30)
    assert played.returncode == 0, played.stderr[-1500:]
    assert decoded_frames(played.stderr) >= 30
    wait_until(lambda: device_sessions() == 0, 20, 0.1, "the device's session ended with the player's")

    # a player that vanishes without TEARDOWN: node A ends the POST channel, the device ends the
    # session (well before B's proxy would give up on a GET nobody reads, 30 s)
    player = RawPlayer(front)
    try:
        player.play()
        assert player.sock.recv(65536), "no media after PLAY"
        assert device_sessions() == 1
    finally:
        player.close()
    wait_until(lambda: device_sessions() == 0, 20, 0.1, "the device's session ended with the vanished player's")

    for url in (env.front_url("no-such-token"), f"{env.a.rtsp_base}/devices/no-such-device/{TOKEN}"):
        assert describe(url) == 404, url


def test_sessions_to_one_node_are_bounded_str_1(env: Env) -> None:
    """STR-1, UPL-16: node A relays MAX_NODE_SESSIONS sessions to node B at once, each opened while the
    others sit idle before PLAY (none waits for another's traffic); one more is RTSP 503 at once, and
    the slot comes back when a session ends."""
    players: list[RawPlayer] = []
    try:
        for _ in range(MAX_NODE_SESSIONS):
            players.append(player := RawPlayer(env.front_url()))
            status, _, _ = player.request("DESCRIBE", env.front_url(), "Accept: application/sdp")
            assert status == 200
        assert describe(env.front_url()) == 503
        players.pop().close()
        wait_until(lambda: describe(env.front_url()) == 200, 20, 0.2, "the ended session's slot back")
    finally:
        for player in players:
            player.close()


def describe(url: str) -> int:
    """The status of a DESCRIBE on a connection of its own."""
    player = RawPlayer(url)
    try:
        status, _, _ = player.request("DESCRIBE", url, "Accept: application/sdp")
    finally:
        player.close()
    return status


def test_node_killed_mid_session_ends_the_players_session_str_1(env: Env) -> None:
    """STR-1, UPL-16: a player that sends nothing for 40 s keeps its session through node A to node B;
    then node B dies (SIGKILL): the player's connection ends within the read bound and node A logs
    why, naming node B."""
    player = RawPlayer(env.front_url(), timeout=READ_BOUND)
    try:
        player.play()
        quiet_until = time.monotonic() + QUIET
        while time.monotonic() < quiet_until:
            assert player.sock.recv(65536), "the quiet player's session ended"
        env.b.kill()
        ended = False
        while not ended:
            try:
                ended = not player.sock.recv(65536)  # socket.timeout (a hang) fails the test
            except ConnectionResetError:
                ended = True
    finally:
        player.close()
    wait_until(lambda: "through node b broken off" in env.a.log.read_text(), 20, 0.1,
               "node a's log line on the broken session")
    # the registry still names b until its TTL passes: a new session is refused, not hung
    assert describe(env.front_url()) in (404, 503)
