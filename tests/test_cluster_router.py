"""UPL-16, STR-2: a long answer relayed from one cluster node through another delays no other request.

Real parts on loopback: a nats-server (JetStream), two ``iec62676 cloud serve --nats`` nodes A and
B, and two devices (our device runtime) holding their uplinks at node B: ``cam-media`` with a media
source, ``cam-soap``. Through node A's proxy only (relayed to B's internal listener on mutual TLS),
a client opens twelve RTSP-over-HTTP GET channels to ``cam-media`` (STR-2) and leaves them unpaired:
the device answers 200 at once (node A passes the head on before any body) and then sends nothing
until it gives up waiting for the POST channel. While all twelve are open, SOAP calls to ``cam-soap``
through node A, eight at a time, must all be answered; the test then checks that every GET
channel is still open, so the calls were not let through by a long answer ending. With
``MAX_NODE_REQUESTS`` channels open, node A refuses one more request to node B at once (503), and
answers again once they have ended. And with ``cam-media``'s source a real camera (GStreamer),
ffmpeg plays RTSP over HTTP through node A's proxy (its GET channel's head must reach it before
any video: it opens the POST channel only then). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from camera import Camera, start_camera
from cluster_env import NatsServer, Node, NodePki, have
from rtsp_env import PLAYER_TIMEOUT, decoded_frames, needs_camera

from iec62676_2_33.cluster.router import MAX_NODE_REQUESTS
from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TUP
from iec62676_2_33.sansio.rtsp_tunnel import TUNNEL_CONTENT_TYPE, TUNNEL_PATH
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device, wait_until

pytestmark = pytest.mark.skipif(not have("nats-server"), reason="Debian nats-server is needed (.ci/run installs it)")

TOKEN = "main"
#: The long answers held open at once. On one HTTP/2 connection shared through httpcore, each silent
#: answer's reader takes the connection's read lock in turn, and an answer another task read already
#: waits behind them; the frames of a small answer let it pass a few of them, not twelve.
LONG = 12
#: SOAP calls in flight at once, and rounds of them.
CONCURRENCY, ROUNDS = 8, 3
#: Bound on every wait; the device gives an unpaired GET channel up after 10 s.
WAIT = 30.0
GET_CAPABILITIES = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:tup="{TUP}">'
    "<s:Body><tup:GetServiceCapabilities/></s:Body></s:Envelope>").encode()
SOAP_CT = f'{SOAP12_CONTENT_TYPE}; action="{TUP}/GetServiceCapabilities"'


@dataclass
class Env:
    a: Node
    b: Node


def held(node: Node) -> dict[str, str]:
    try:
        listing = httpx.get(f"{node.proxy_url}/devices", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {d["id"]: d["node"] for d in listing}


@contextlib.contextmanager
def cluster(tmp: Path, camera: Camera | None = None) -> Iterator[Env]:
    """Nodes A and B and the two devices at B; ``cam-media``'s source is ``camera`` (or one never dialled)."""
    certs = UplinkPki(tmp / "pki")
    node_pki = NodePki(tmp / "pki")
    nats = NatsServer(tmp / "js")
    nodes: list[Node] = []
    devices: list[RunningDevice] = []
    try:
        # no balancer: the devices dial node B themselves (a PROXY header is asked of 127.0.0.2 only)
        for name in ("a", "b"):
            nodes.append(Node(name, cert=certs.cert, key=certs.key, client_ca=certs.ca_file, nodes=node_pki,
                              nats_url=nats.url, balancer="127.0.0.2/32", log=tmp / f"{name}.log"))
        a, b = nodes
        for name in ("cam-media", "cam-soap"):
            seed_device(tmp / name, certs, name, [(f"https://localhost:{b.port}/uplink", ("User",))])
        with DeviceStore(tmp / "cam-media") as store:
            # without a camera, an unpaired GET channel never dials the source
            source = camera.url if camera is not None else "rtsp://127.0.0.1:9/none"
            store.put_media_source(MediaSource(token=TOKEN, name="Camera 1", rtsp_url=source))
        for name in ("cam-media", "cam-soap"):
            devices.append(RunningDevice(tmp / name, listen=False))
        wait_until(lambda: held(a) == {"cam-media": "b", "cam-soap": "b"}, WAIT, 0.2, "node a lists both devices at b")
        yield Env(a, b)
    finally:
        for device in devices:
            device.stop()
        for node in nodes:
            node.stop()
        nats.kill()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with cluster(tmp_path) as running:
        yield running


async def get_channel(client: httpx.AsyncClient, url: str, opened: asyncio.Event) -> int:
    """An RTSP-over-HTTP GET channel: ``opened`` once its 200 head is in, then its body read to
    the end; returns the body's length."""
    headers = {"x-sessioncookie": secrets.token_urlsafe(18), "accept": TUNNEL_CONTENT_TYPE}
    async with client.stream("GET", url, headers=headers) as answer:
        assert answer.status_code == 200, answer.status_code
        assert answer.headers["content-type"] == TUNNEL_CONTENT_TYPE
        opened.set()
        return len(await answer.aread())


@contextlib.asynccontextmanager
async def open_channels(client: httpx.AsyncClient, env: Env, n: int) -> AsyncIterator[list[asyncio.Task[int]]]:
    """``n`` GET channels to ``cam-media`` through node A, their heads in (each task ends with its body), from
    as many client addresses (127.0.0.1 ... 127.0.0.4) as the per-client bounds need: one address has at most
    8 unpaired channels waiting on the device. ``client`` is the first address's."""
    url = f"{env.a.proxy_url}/devices/cam-media{TUNNEL_PATH}{TOKEN}"
    async with contextlib.AsyncExitStack() as stack:
        others = [await stack.enter_async_context(httpx.AsyncClient(
            timeout=WAIT, limits=httpx.Limits(max_connections=MAX_NODE_REQUESTS),
            transport=httpx.AsyncHTTPTransport(local_address=f"127.0.0.{k}"))) for k in (2, 3, 4)]
        async with _channels([client, *others], url, n) as channels:
            yield channels


@contextlib.asynccontextmanager
async def _channels(clients: list[httpx.AsyncClient], url: str, n: int) -> AsyncIterator[list[asyncio.Task[int]]]:
    openings = [asyncio.Event() for _ in range(n)]
    channels = [asyncio.create_task(get_channel(clients[i % len(clients)], url, opened))
                for i, opened in enumerate(openings)]
    heads = asyncio.ensure_future(asyncio.gather(*(opened.wait() for opened in openings)))
    try:
        # all heads in, or the first channel that failed (its assertion) ends the wait
        await asyncio.wait([heads, *channels], timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        for channel in channels:
            if channel.done():
                channel.result()  # raises why it failed
        assert heads.done(), f"not every GET channel answered within {WAIT:g} s"
        yield channels
    finally:
        for task in (heads, *channels):
            task.cancel()
        await asyncio.gather(heads, *channels, return_exceptions=True)


def soap_url(env: Env) -> str:
    return f"{env.a.proxy_url}/devices/cam-soap/onvif/uplink_service"


async def soap_call(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.post(url, content=GET_CAPABILITIES, headers={"content-type": SOAP_CT})


async def answered(client: httpx.AsyncClient, url: str) -> None:
    answer = await soap_call(client, url)
    assert answer.status_code == 200, (answer.status_code, answer.text[:200])
    assert b"GetServiceCapabilitiesResponse" in answer.content


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # HTTP/1.1 keep-alive to node A: each long answer holds a client connection of its own
    async with httpx.AsyncClient(timeout=WAIT, limits=httpx.Limits(max_connections=MAX_NODE_REQUESTS + 8)) as c:
        yield c


async def test_long_answers_do_not_delay_other_calls_upl_16_str_2(env: Env, client: httpx.AsyncClient) -> None:
    """UPL-16, STR-2: while twelve RTSP-over-HTTP GET channels relayed from node B through node A stay
    open and silent, 24 SOAP calls through node A to another device at node B are all answered."""
    await answered(client, soap_url(env))  # the node-to-node path is up
    async with open_channels(client, env, LONG) as channels:
        for _ in range(ROUNDS):
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*(answered(client, soap_url(env)) for _ in range(CONCURRENCY)))
        ended = [i for i, channel in enumerate(channels) if channel.done()]
        assert not ended, f"GET channels {ended} ended before the SOAP calls were answered"
        # the device ends each unpaired channel itself (no POST came): an empty body, ended cleanly
        async with asyncio.timeout(WAIT):
            assert await asyncio.gather(*channels) == [0] * LONG


async def test_requests_to_one_node_are_bounded_upl_16(env: Env, client: httpx.AsyncClient) -> None:
    """UPL-16: with MAX_NODE_REQUESTS long answers from node B in flight through node A, one more
    request to node B is refused by node A at once (503 naming the node); once they have ended, as many
    open again and a call after them is answered (every slot was given back)."""
    async with open_channels(client, env, MAX_NODE_REQUESTS) as channels:
        async with asyncio.timeout(WAIT):
            refused = await soap_call(client, soap_url(env))
        assert refused.status_code == 503
        assert refused.headers["x-iec62676-proxy-answer"] == "1"  # the proxy's own answer, not the device's
        assert refused.text.startswith(f"node b carries {MAX_NODE_REQUESTS} requests from this node already")
        assert not any(channel.done() for channel in channels)
        async with asyncio.timeout(WAIT):
            assert await asyncio.gather(*channels) == [0] * MAX_NODE_REQUESTS
    async with open_channels(client, env, MAX_NODE_REQUESTS) as channels:
        assert not any(channel.done() for channel in channels)
        async with asyncio.timeout(WAIT):
            assert await asyncio.gather(*channels) == [0] * MAX_NODE_REQUESTS
    async with asyncio.timeout(WAIT):
        await answered(client, soap_url(env))


@needs_camera
def test_rtsp_over_http_through_another_node_str_2(tmp_path: Path) -> None:
    """STR-2, UPL-16: ffmpeg plays RTSP over HTTP (GET and POST channels) through node A's proxy from
    a camera behind a device at node B: node A passes the GET channel's 200 on before any video (the
    player sends its POST only then), and 30 frames decode."""
    with start_camera() as camera, cluster(tmp_path, camera) as env:
        url = f"rtsp://127.0.0.1:{urlsplit(env.a.proxy_url).port}/devices/cam-media{TUNNEL_PATH}{TOKEN}"
        played = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-rtsp_transport", "http", "-i", url,
                                 "-frames:v", "30", "-f", "null", "-"],
                                capture_output=True, text=True, timeout=PLAYER_TIMEOUT, check=False)
        assert played.returncode == 0, played.stderr[-1500:]
        assert decoded_frames(played.stderr) == 30
