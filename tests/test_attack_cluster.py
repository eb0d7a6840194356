"""UPL-16, GEN-3, STR-2: the cloud cluster under attack -- what a hostile client, device, NATS writer or
balancer peer can make a node do, and that a request relayed to another node is the request a local
device would get.

In process, on real TLS over loopback where it matters: node B's internal listener (the proxy on mutual
TLS, ``NodesOnly`` in front, devices that record what reaches them) and node A's proxy relaying to it
through a :class:`~iec62676_2_33.cluster.router.NodeRouter` whose registry is a stand-in naming B.

* **The relayed request is the local one.** A device at node B gets, header for header and byte for
  byte of the target, what it gets when the client asks its own node: the hop adds no header of its
  own (httpx's ``Accept``, ``Accept-Encoding``, ``User-Agent``), carries none the client's
  ``Connection`` named, and carries the body of an HTTP/2 request that declares no length.
* **A target that is no path** (``OPTIONS *`` to a device named by host or port) never reaches another
  device (``/devices/cam`` + ``*`` is ``/devices/cam*``).
* **A refused RTSP tunnel** (node B answers the GET with 404 and a body without end, as a hostile
  device can) is refused at once; the front does not read the body.
* **Registry records** that name another device or node than their key, a node id that is not one, or
  an internal address that is not ``HOST:PORT`` are refused (a real nats-server): they neither list a
  device twice, nor close a device's uplink, nor make a node live, nor end a relayed request with an
  exception.
* **A node others could not dial** (``--internal 0.0.0.0:PORT`` without ``--internal-advertise``, an
  advertised host no node would decode) does not start.
* **Device-port announcements** on ``iec62676.device.*`` assign no port to an id the cluster does not
  list (an assignment is kept for good).
* **PROXY v2 from a balancer** trickled a byte at a time is refused at the header's deadline.

Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from cluster_env import NatsServer, have
from cryptography.x509.oid import ExtendedKeyUsageOID
from test_proxy import FakeChannel, FakeCloud, call

from iec62676_2_33 import pki
from iec62676_2_33.cluster import node as node_module
from iec62676_2_33.cluster import node_rtsp
from iec62676_2_33.cluster.node import ClusterOptions, NodesOnly, join_cluster
from iec62676_2_33.cluster.node_ports import ClusterDevicePorts
from iec62676_2_33.cluster.records import DeviceRecord, NodeRecord, RecordError, device_key
from iec62676_2_33.cluster.registry import ClusterRegistry, read_registry
from iec62676_2_33.cluster.router import NodeRouter
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime.cloud import CloudListener
from iec62676_2_33.runtime.http_server import serve_asgi, wait_event
from iec62676_2_33.runtime.proxy import UplinkProxy
from iec62676_2_33.runtime.rtsp_front import TunnelRefused
from iec62676_2_33.sansio.admission import AdmissionLimits
from iec62676_2_33.sansio.port_table import PortTable
from iec62676_2_33.sansio.proxy_protocol import encode
from iec62676_2_33.transport.contexts import client_context, server_context
from iec62676_2_33.transport.tls import TlsStream, report_authenticated, start_tls_server

BOUND = 15.0
needs_nats = pytest.mark.skipif(not have("nats-server"), reason="Debian nats-server is needed (.ci/run installs it)")


class Pki:
    """The node CA and one node certificate (serverAuth and clientAuth) both ends use."""

    def __init__(self) -> None:
        self.ca = pki.make_ca("attack cluster node CA")
        self.leaf = pki.make_leaf(self.ca, "node", kind="server", sans=["IP:127.0.0.1"],
                                  eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])

    def server(self) -> ssl.SSLContext:
        return server_context(self.leaf.cert_pem(), self.leaf.key_pem(), client_ca_pems=[self.ca.cert_pem()],
                              require_client_cert=True, alpn_protocols=["h2", "http/1.1"])

    def client(self) -> ssl.SSLContext:
        return client_context(cafile_pems=[self.ca.cert_pem()], certfile_pem=self.leaf.cert_pem(),
                              keyfile_pem=self.leaf.key_pem(), alpn_protocols=["h2"])


@contextlib.asynccontextmanager
async def listening(app: Any, context: ssl.SSLContext) -> AsyncIterator[int]:
    """``app`` served on TLS on a loopback port (yielded) until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_asgi(app, sock, lambda: wait_event(stop), ssl_context=context))
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        await asyncio.wait_for(serving, BOUND)


@dataclass
class StandIn:
    """What the router uses of a registry: this node is ``a``, every device is at node ``b``."""

    b: NodeRecord
    node: NodeRecord = field(default_factory=lambda: NodeRecord(node="a", internal="127.0.0.1:1", started=0.0))

    def locate(self, device_id: str) -> NodeRecord | None:
        return self.b

    def devices(self) -> list[DeviceRecord]:
        return []


@dataclass
class TwoNodes:
    a: UplinkProxy  # node A's proxy: no device here, every one relayed to B
    local: UplinkProxy  # the same devices as B's, asked on their own node
    at_b: dict[str, FakeChannel]
    at_local: dict[str, FakeChannel]


@contextlib.asynccontextmanager
async def two_nodes(*device_ids: str) -> AsyncIterator[TwoNodes]:
    certs = Pki()
    at_b = {d: FakeChannel([b"ok"]) for d in device_ids}
    at_local = {d: FakeChannel([b"ok"]) for d in device_ids}
    b = NodesOnly(UplinkProxy(FakeCloud(at_b), trust_forwarded=True))  # type: ignore[arg-type]
    async with listening(b, certs.server()) as port:
        router = NodeRouter(StandIn(NodeRecord(node="b", internal=f"127.0.0.1:{port}", started=0.0)),  # type: ignore[arg-type]
                            certs.client(), timeout=BOUND)
        try:
            yield TwoNodes(a=UplinkProxy(FakeCloud({}), router=router, device_domain="devices.test"),  # type: ignore[arg-type]
                           local=UplinkProxy(FakeCloud(at_local), device_domain="devices.test"),  # type: ignore[arg-type]
                           at_b=at_b, at_local=at_local)
        finally:
            await router.aclose()


def seen(channel: FakeChannel) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """What reached the device: method, target and headers (in a canonical order) of each request."""
    return [(method, target, sorted(headers)) for method, target, headers, _, _ in channel.opened]


# --------------------------------------------------------------------------- the relayed request


REQUESTS = {
    "no optional headers": [],
    "fields its Connection names": [(b"connection", b"x-hop, Keep-Alive"), (b"x-hop", b"1"), (b"keep-alive", b"5")],
    "look-alikes and proxy credentials": [(b"x_forwarded_host", b"evil"), (b"x-forwarded-host", b"evil"),
                                          (b"proxy-authorization", b"Basic eDp5"),
                                          (b"x-iec62676-rtsp-base", b"rtsp://evil")],
    "its own accept and agent": [(b"accept", b"application/soap+xml"), (b"user-agent", b"vms/1")],
}


@pytest.mark.parametrize("headers", list(REQUESTS.values()), ids=list(REQUESTS))
async def test_a_request_relayed_to_another_node_reaches_the_device_as_a_local_one_upl_16(
        headers: list[tuple[bytes, bytes]]) -> None:
    """UPL-16, GEN-3: whatever inspects the request at node A sees what the device at node B gets -- the
    same target and headers as when the client asks the device's own node (before, the hop added
    httpx's ``accept``, ``accept-encoding: gzip, deflate`` and ``user-agent``, and passed the fields
    the client's ``Connection`` names)."""
    async with asyncio.timeout(BOUND * 2), two_nodes("cam") as nodes:
        for path, query in ((b"/devices/cam/onvif/a%2Fb%25c", b"x=%2F&y"), (b"/devices/cam/onvif/rtsp/main", b"")):
            assert await call(nodes.a, path, headers, query) == (200, b"ok")
            assert await call(nodes.local, path, headers, query) == (200, b"ok")
        assert seen(nodes.at_b["cam"]) == seen(nodes.at_local["cam"])


async def test_a_body_without_declared_length_crosses_to_another_node_upl_16() -> None:
    """UPL-16: an HTTP/2 client may send a body with neither ``content-length`` nor ``transfer-encoding``;
    the device at node B gets it as a local device does (before, node A relayed the POST without its body)."""
    async with asyncio.timeout(BOUND * 2), two_nodes("cam") as nodes:
        for app in (nodes.a, nodes.local):
            status, _ = await call(app, b"/devices/cam/onvif/device_service", method="POST",
                                   body=[b"<s:Envelope/>", b"<!-- more -->", b""])
            assert status == 200
        [(_, _, _, end_stream, _)] = nodes.at_b["cam"].opened
        assert not end_stream
        assert b"".join(data for data, _ in nodes.at_b["cam"].sent) == b"<s:Envelope/><!-- more -->"
        assert seen(nodes.at_b["cam"]) == seen(nodes.at_local["cam"])


async def host_named(app: UplinkProxy, target: bytes) -> int:
    """``OPTIONS <target>`` with ``Host: cam.devices.test``; the status."""
    scope = {"type": "http", "method": "OPTIONS", "path": target.decode(), "raw_path": target, "query_string": b"",
             "headers": [(b"host", b"cam.devices.test:8081")], "scheme": "http", "client": ("127.0.0.1", 5000)}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def test_a_target_that_is_no_path_never_reaches_another_device_upl_16() -> None:
    """UPL-16: ``OPTIONS *`` (HTTP/1.1 and HTTP/2 servers pass the asterisk as the path) to the device
    named by the host, ``cam``, held by another node: relayed as ``/devices/cam*`` it went to device
    ``cam*``. Now it is refused at node A, and neither device is asked."""
    async with asyncio.timeout(BOUND * 2), two_nodes("cam", "cam*") as nodes:
        assert await host_named(nodes.a, b"*") == 400
        assert await host_named(nodes.a, b"/onvif/device_service") == 200  # a path is relayed as before
        assert seen(nodes.at_b["cam*"]) == []
        assert [target for _, target, _ in seen(nodes.at_b["cam"])] == ["/onvif/device_service"]


# --------------------------------------------------------------------------- a refused RTSP tunnel


async def test_a_refused_rtsp_tunnel_is_not_read_to_its_end_str_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """STR-2, UPL-16: node B answers the RTSP tunnel's GET with 404 and a body that does not end (the
    device's answer, relayed). The front at node A is refused with 404 at once and reads none of the
    body, so B sends no more than the stream's flow-control window (httpcore opens 16 MiB); before, A
    read the body into memory until ``OPEN_TIMEOUT`` and then reported the node as not answering (RTSP
    503)."""
    monkeypatch.setattr(node_rtsp, "OPEN_TIMEOUT", 3.0)
    certs = Pki()
    sent = [0]

    async def refusing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(BOUND / 2):
                while True:
                    await send({"type": "http.response.body", "body": b"x" * 16384, "more_body": True})
                    sent[0] += 16384

    async with listening(refusing, certs.server()) as port:
        url = httpx.URL(f"https://127.0.0.1:{port}/devices/cam")
        async with asyncio.timeout(BOUND):
            with pytest.raises(TunnelRefused) as refused:
                await node_rtsp.open_node_rtsp(certs.client(), "b", url, "cam", "main", endings=set(),
                                               on_end=lambda: None)
    assert refused.value.status == 404
    assert sent[0] <= 17 << 20, f"node B sent {sent[0]} bytes of the refusal"


# --------------------------------------------------------------------------- registry records


NODE = '{"node":"n1","internal":%s,"started":1}'
BAD_INTERNAL = ["nonsense", "a:b", "127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1: 1", ":1", "h/p:1", "u@h:1",
                "x y:1", "127.0.0.1:-1"]
BAD_NODE_IDS = ["", "n1\nFORGED LOG LINE", "n 1", "n1/../x", "é", "x" * 65]


@pytest.mark.parametrize("internal", BAD_INTERNAL)
def test_a_node_record_whose_internal_address_is_not_host_port_is_refused(internal: str) -> None:
    with pytest.raises(RecordError, match="internal is not HOST:PORT"):
        NodeRecord.decode((NODE % json.dumps(internal)).encode())


@pytest.mark.parametrize("node", BAD_NODE_IDS)
def test_a_record_whose_node_is_not_a_node_id_is_refused(node: str) -> None:
    device = DeviceRecord(id="cam", node=node, peer="192.0.2.1:5000", connected_since=1.0, auth_mode="mTLS")
    with pytest.raises(RecordError, match="node is not a node id"):
        DeviceRecord.decode(device.encode())
    with pytest.raises(RecordError, match="node is not a node id"):
        NodeRecord.decode(NodeRecord(node=node, internal="127.0.0.1:9443", started=1.0).encode())


@pytest.mark.parametrize("internal", ["127.0.0.1:9443", "[::1]:9443", "::1:9443", "node-2.cluster.example:1",
                                      "cloud_node_1:9443"])
def test_internal_addresses_nodes_advertise_still_decode(internal: str) -> None:
    """The forms a node writes (``--internal-advertise``, or the bound address: IPv6 without brackets), and
    host names with "_" (Docker's DNS names containers and services so)."""
    assert NodeRecord.decode((NODE % json.dumps(internal)).encode()).internal == internal


@pytest.mark.parametrize("internal, advertise, refused", [
    ("0.0.0.0:0", None, "every address"), ("[::]:0", None, "every address"),
    ("127.0.0.1:0", "0.0.0.0:9443", "every address"), ("127.0.0.1:0", "my host:9443", "not a host name"),
    ("127.0.0.1:0", "nonsense", "not HOST:PORT")])
async def test_a_node_that_others_could_not_dial_is_refused_at_start_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, internal: str, advertise: str | None, refused: str) -> None:
    """The address a node advertises in its heartbeat must be one the others dial and decode: before,
    ``--internal 0.0.0.0:9443`` was advertised as is (each other node dialled itself, and no node
    certificate names 0.0.0.0), and an advertised host the others refuse made the node look dead. (No
    NATS listens here: the check comes first.)"""
    monkeypatch.setattr(node_module, "FIRST_CONNECT", 1.0)
    certs = Pki()
    cert, key = certs.leaf.write(tmp_path, "n1")
    ca, _ = certs.ca.write(tmp_path, "ca")
    options = ClusterOptions(nats="nats://127.0.0.1:1", node_id="n1", internal=internal, cert=cert, key=key, ca=ca,
                             advertise=advertise)
    with pytest.raises(ConfigurationError, match=refused) as caught:
        async with asyncio.timeout(BOUND), join_cluster(CloudListener(), options):
            pass
    assert "\n" not in str(caught.value)


async def test_a_nats_url_s_password_is_not_shown_when_nats_cannot_be_reached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cloud serve --nats nats://user:password@…`` with NATS unreachable: one line that names the server,
    never the password."""
    monkeypatch.setattr(node_module, "FIRST_CONNECT", 1.0)
    certs = Pki()
    cert, key = certs.leaf.write(tmp_path, "n1")
    ca, _ = certs.ca.write(tmp_path, "ca")
    options = ClusterOptions(nats="nats://u:TOPSECRET@127.0.0.1:1", node_id="n1", internal="127.0.0.1:0", cert=cert,
                             key=key, ca=ca)
    with pytest.raises(ConfigurationError, match="cannot connect") as caught:
        async with asyncio.timeout(BOUND), join_cluster(CloudListener(), options):
            pass
    assert "TOPSECRET" not in str(caught.value) and "127.0.0.1:1" in str(caught.value)


@dataclass
class Member:
    registry: ClusterRegistry
    nc: Any
    superseded: list[DeviceRecord] = field(default_factory=list)

    def record(self, device_id: str) -> DeviceRecord:
        return DeviceRecord(id=device_id, node=self.registry.node.node, peer="192.0.2.1:5000",
                            connected_since=time.time(), auth_mode="mTLS")

    def ids(self) -> list[tuple[str, str]]:
        return [(r.id, r.node) for r in self.registry.devices()]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "js")
    yield server
    server.kill()


@contextlib.asynccontextmanager
async def members(url: str, *names: str) -> AsyncIterator[list[Member]]:
    started: list[Member] = []
    try:
        for name in names:
            nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
            member = Member(None, nc)  # type: ignore[arg-type]
            member.registry = ClusterRegistry(nc, node_id=name, internal="127.0.0.1:9", ttl=6.0,
                                              on_superseded=member.superseded.append)
            started.append(member)
            await member.registry.start()
        yield started
    finally:
        for member in started:
            await member.registry.close()
            await member.nc.close()


async def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND} s: {what}")
        await asyncio.sleep(0.05)


@needs_nats
async def test_a_device_record_under_another_devices_key_is_ignored(nats_server: NatsServer) -> None:
    """A record naming ``cam-1`` at live node b, written under another key: before, node a (which holds
    cam-1) took it for b's later claim and closed its uplink (rule 2), and every node listed cam-1
    twice. Now it is a bad record, skipped with one line."""
    async with asyncio.timeout(BOUND * 3), members(nats_server.url, "a", "b") as (a, b):
        a.registry.connected(a.record("cam-1"))
        await until(lambda: b.ids() == [("cam-1", "a")] and a.registry._local["cam-1"].revision is not None,
                    "cam-1 claimed by a")
        kv = a.registry._devices_kv
        assert kv is not None
        await kv.put(device_key("decoy"), b.record("cam-1").encode())
        b.registry.connected(b.record("cam-2"))  # the watchers see this after the decoy
        await until(lambda: ("cam-2", "b") in a.ids() and ("cam-2", "b") in b.ids(), "cam-2 seen by both")
        assert a.superseded == []
        assert a.ids() == b.ids() == [("cam-1", "a"), ("cam-2", "b")]
        assert [(r.id, r.node) for r in await read_registry(a.nc)] == [("cam-1", "a"), ("cam-2", "b")]


@needs_nats
async def test_node_records_that_are_not_their_nodes_make_no_node_live(nats_server: NatsServer) -> None:
    """Node records under keys ``c`` (naming node ``a``: a device at c was taken for one at a, so no node
    relayed to it) and ``d`` (internal address ``nonsense``: every relayed request for its devices ended
    in an exception, a 500): neither is a live node, their devices are not listed, none is located."""
    async with asyncio.timeout(BOUND * 3), members(nats_server.url, "a", "b") as (a, b):
        nodes, devices = a.registry._nodes_kv, a.registry._devices_kv
        assert nodes is not None and devices is not None
        await nodes.put("c", NodeRecord(node="a", internal="127.0.0.1:7", started=1.0).encode())
        await nodes.put("d", b'{"node":"d","internal":"nonsense","started":1}')
        for device, node in (("cam-c", "c"), ("cam-d", "d")):
            await devices.put(device_key(device), DeviceRecord(id=device, node=node, peer="192.0.2.1:5000",
                                                               connected_since=1.0, auth_mode="mTLS").encode())
        b.registry.connected(b.record("cam-2"))
        await until(lambda: ("cam-2", "b") in a.ids(), "cam-2 seen by a (after cam-c and cam-d)")
        await a.registry._refresh_nodes()
        assert set(a.registry.live_nodes()) == {"a", "b"}
        assert a.ids() == [("cam-2", "b")]
        assert a.registry.locate("cam-c") is None and a.registry.locate("cam-d") is None
        assert [r.id for r in await read_registry(a.nc)] == ["cam-2"]


# --------------------------------------------------------------------------- device-port announcements


class Assignments:
    """What :class:`ClusterDevicePorts` uses of the cluster's assignments: every call to ``assign`` is
    recorded and answered "no port" (nothing listens)."""

    def __init__(self) -> None:
        self.table = PortTable(range(40000, 40008))
        self.on_released: Callable[[str, int], None] = lambda _d, _p: None
        self.nc = type("Nats", (), {"stats": {"reconnects": 0}})()
        self.asked: list[str] = []

    async def assign(self, device_id: str) -> int | None:
        self.asked.append(device_id)
        return None

    async def aclose(self) -> None:
        pass


class Announcing:
    """A registry whose subject ``iec62676.device.*`` carries ``announced`` connect events; it lists
    ``listed`` only."""

    def __init__(self, announced: list[str], listed: set[str]) -> None:
        self.announced = announced
        self.listed = listed
        self.done = asyncio.Event()

    async def events(self) -> AsyncIterator[tuple[str, DeviceRecord]]:
        for device_id in self.announced:
            yield "connected", DeviceRecord(id=device_id, node="x", peer="192.0.2.1:5000", connected_since=1.0,
                                            auth_mode="mTLS")
        self.done.set()
        await asyncio.Event().wait()

    def devices(self) -> list[DeviceRecord]:
        return [DeviceRecord(id=d, node="b", peer="192.0.2.1:5000", connected_since=1.0, auth_mode="mTLS")
                for d in sorted(self.listed)]

    def locate(self, device_id: str) -> NodeRecord | None:
        return NodeRecord(node="b", internal="127.0.0.1:9", started=0.0) if device_id in self.listed else None


async def test_an_announcement_alone_assigns_no_port_upl_16() -> None:
    """UPL-16: 500 connect events for ids no node lists (anyone who may publish on the subject can send
    them) assign no port: an assignment is kept for good, and before, each took a port of the range
    until every one was gone. The one listed device is still assigned its port."""
    registry = Announcing([f"ghost-{i}" for i in range(500)] + ["cam-1"], {"cam-1"})
    assignments = Assignments()
    ports = ClusterDevicePorts(CloudListener(), UplinkProxy(CloudListener()), "127.0.0.1", assignments,  # type: ignore[arg-type]
                               registry)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(BOUND):
            await registry.done.wait()
            while "cam-1" not in assignments.asked or ports._queue:
                await asyncio.sleep(0.05)
        assert set(assignments.asked) == {"cam-1"}
    finally:
        await ports.aclose()


# --------------------------------------------------------------------------- PROXY v2 trickled


async def test_a_proxy_header_trickled_a_byte_at_a_time_is_refused_at_its_deadline() -> None:
    """UPL-9: a balancer-address peer that sends a valid PROXY v2 header one byte every 0.25 s (a
    header of 28 bytes would take 7 s) is cut off at the header's deadline (the first-byte one, 1 s),
    before the header is complete: the deadline runs from the connection, not from the last byte."""
    ca = pki.make_ca("trickle CA")
    leaf = pki.make_leaf(ca, "localhost", kind="server", sans=["IP:127.0.0.1"])

    async def handler(stream: TlsStream) -> None:
        report_authenticated(stream)

    server = await start_tls_server(handler, ("127.0.0.1", 0), server_context(leaf.cert_pem(), leaf.key_pem()),
                                    first_byte_timeout=1.0, admission=AdmissionLimits(),
                                    proxy_protocol_from=["127.0.0.1/32"])
    header = encode(("198.51.100.23", 50000), ("127.0.0.1", 443))
    assert len(header) == 28
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    written, closed = 0, False
    try:
        async with asyncio.timeout(BOUND):
            while written < len(header) and not closed:
                writer.write(header[written:written + 1])
                written += 1
                try:
                    await writer.drain()
                    async with asyncio.timeout(0.25):
                        closed = await reader.read(1) == b""
                except TimeoutError:
                    pass
                except ConnectionError:
                    closed = True
        assert closed and written < len(header)
        assert server.stats["refused_proxy"] == 1
    finally:
        writer.close()
        async with asyncio.timeout(BOUND):
            await server.aclose()


async def test_a_declared_body_over_max_body_is_413_for_a_device_at_another_node_upl_16() -> None:
    """UPL-16: a body declared over the proxy's max_body for a device at another node is refused 413 at the
    first node, as for a local device, before a byte of it is read (it was relayed, then reported as the
    holding node not answering)."""
    async with asyncio.timeout(30), two_nodes("cam") as nodes:
        n = 17 << 20
        scope = {"type": "http", "method": "POST", "path": "/devices/cam/onvif/x", "raw_path": b"/devices/cam/onvif/x",
                 "query_string": b"", "headers": [(b"host", b"cloud"), (b"content-length", str(n).encode())],
                 "scheme": "http", "client": ("127.0.0.1", 5000)}
        left = [n]

        async def receive() -> dict[str, Any]:
            chunk = min(65536, left[0])
            left[0] -= chunk
            return {"type": "http.request", "body": b"x" * chunk, "more_body": left[0] > 0}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await nodes.a(scope, receive, send)
        assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413]
        assert left[0] == n  # nothing of the body was read
