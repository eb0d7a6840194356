"""UPL-16, GEN-2, GEN-3: a device's own port on every node of a cluster (``cloud serve --device-ports`` with
``--nats``).

Real parts on loopback: a nats-server (JetStream), two cloud nodes (``run_cloud`` with the cluster options,
each in a thread of its own), node A's proxy and device ports on 127.0.0.1 and node B's on 127.0.0.2 (one
host, two addresses, so both can listen on one port number), devices running our device runtime.

A device whose uplink node B holds gets one port, the same on A and B; onvif-zeep-async, unmodified,
runs GetDeviceInformation with ``ONVIFCamera("127.0.0.1", port)`` through node A (relayed to B), every
XAddr on that port of node A. A second device whose home port is the first's, connected to node A,
gets the next port on both nodes, never the first's. A device gone closes its port on both nodes after
the linger time; ``iec62676 cloud ports release --nats`` is refused while the device is connected and
then frees its port for another device (the bucket forgets it; a port still lingering closes on both
nodes at once). A node started with another range, or with an assignments file, refuses to start in one
line. NATS restarted with an empty store gets the assignments back from the nodes. Through a real
HAProxy configured from ``examples/haproxy.cfg`` and ``examples/haproxy-device-ports.cfg``,
onvif-zeep-async reaches the device on <balancer>:<device port>. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import nats
import pytest
from cluster_env import Haproxy, NatsServer, NodePki, have
from test_device_ports import colliding, device_information

from iec62676_2_33.cli import main
from iec62676_2_33.cluster import ClusterOptions
from iec62676_2_33.cluster.port_assignments import PORTS_BUCKET, ClusterPortAssignments
from iec62676_2_33.cluster.registry import _all_values
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime import device_ports
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.sansio.port_table import PortTable, parse_port_range
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device, wait_until

pytestmark = pytest.mark.skipif(not have("nats-server"), reason="Debian nats-server is needed (.ci/run installs it)")

WAIT = 30.0
SIZE = 8
HOSTS = ("127.0.0.1", "127.0.0.2")  # node A, node B
BALANCER = "127.0.0.3"
ROOT = Path(__file__).resolve().parent.parent


def free_range(size: int = SIZE) -> str:
    """``START-END`` of ``size`` ports that can be bound now on the nodes' and the balancer's addresses."""
    for _ in range(50):
        start = random.randrange(20000, 32000 - size)
        with ExitStack() as stack:
            try:
                for host in (*HOSTS, BALANCER):
                    for port in range(start, start + size):
                        stack.enter_context(socket.socket()).bind((host, port))
            except OSError:
                continue
            return f"{start}-{start + size - 1}"
    raise AssertionError("no free port range found")


class ClusterNode:
    """``run_cloud`` as cluster node ``name`` with its proxy and device ports on ``host``."""

    def __init__(self, name: str, host: str, setting: Setting, ports: str) -> None:
        cert, key = setting.node_pki.node(name)
        cluster = ClusterOptions(nats=setting.nats.url, node_id=name, internal="127.0.0.1:0", cert=cert, key=key,
                                 ca=setting.node_pki.ca_file, ttl=6.0)
        self.options = CloudOptions(listen="127.0.0.1:0", cert=setting.certs.cert, key=setting.certs.key,
                                    client_cas=[setting.certs.ca_file], proxy=f"{host}:0", device_ports=ports,
                                    cluster=cluster)
        self.host = host
        self.service = BackgroundService(lambda stop, announce: run_cloud(self.options, stop, announce),
                                         name=f"node {name}").start(WAIT)
        messages = self.service.messages
        self.port = int(re.search(r":(\d+)/", messages[0]).group(1))  # type: ignore[union-attr]
        found = wait_until(lambda: next((m for m in list(messages) if "cloud proxy on" in m), None), WAIT,
                           what=f"node {name}'s proxy")
        self.proxy_url = re.search(r"(http://\S+)/devices", found).group(1)  # type: ignore[union-attr]
        self.proxy_port = int(self.proxy_url.rsplit(":", 1)[1])

    def listing(self) -> dict[str, dict[str, Any]]:
        answer = httpx.get(f"{self.proxy_url}/devices", timeout=WAIT)
        assert answer.status_code == 200
        return {d["id"]: d for d in answer.json()}

    def port_of(self, device_id: str) -> int | None:
        entry = self.listing().get(device_id)
        return None if entry is None else entry.get("port")

    def stop(self) -> None:
        self.service.stop(WAIT)


@dataclass
class Setting:
    tmp: Path
    certs: UplinkPki
    node_pki: NodePki
    nats: NatsServer
    ports: str
    nodes: list[ClusterNode]

    def device(self, name: str, node: ClusterNode) -> RunningDevice:
        if not (self.tmp / name).exists():
            seed_device(self.tmp / name, self.certs, name, [(f"https://localhost:{node.port}/uplink", ("User",))])
        return RunningDevice(self.tmp / name, listen=False)


@pytest.fixture
def setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Setting]:
    """A nats-server and nodes A and B; a device port lingers 1 s (or the test's indirect parameter)."""
    monkeypatch.setattr(device_ports, "LINGER", getattr(request, "param", 1.0))
    nats_server = NatsServer(tmp_path / "js")
    s = Setting(tmp_path, UplinkPki(tmp_path / "pki"), NodePki(tmp_path / "pki"), nats_server, free_range(), [])
    try:
        s.nodes += [ClusterNode("a", HOSTS[0], s, s.ports), ClusterNode("b", HOSTS[1], s, s.ports)]
        yield s
    finally:
        for node in s.nodes:
            node.stop()
        nats_server.kill()


def status(host: str, port: int, path: str = "/onvif/device_service") -> int:
    return httpx.get(f"http://{host}:{port}{path}", timeout=WAIT).status_code


def closed(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


def same_port_on_both(s: Setting, device_id: str) -> int:
    """The device's port once both nodes list it, the same on both."""
    a, b = s.nodes
    return wait_until(lambda: (p := a.port_of(device_id)) is not None and p == b.port_of(device_id) and p, WAIT,
                      what=f"{device_id}'s port on both nodes")


async def assignments(url: str) -> dict[str, bytes]:
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        kv = await nc.jetstream(timeout=5.0).key_value(PORTS_BUCKET)
        return await _all_values(kv)
    finally:
        await nc.close()


def test_one_port_per_device_on_every_node_and_a_stock_client_through_the_other_node_upl_16_gen_2_gen_3(
        setting: Setting) -> None:
    """UPL-16, GEN-2, GEN-3: cam-1 at node B has its home port on A and B; onvif-zeep-async through node A's
    port reaches it (XAddrs on that port of A); a colliding device at node A gets the next port on both."""
    s = setting
    a, b = s.nodes
    table = PortTable(parse_port_range(s.ports))
    first, second = colliding(table)
    home, probed = table.assign(first), table.assign(second)
    devices = [s.device(first, b)]
    try:
        port = same_port_on_both(s, first)
        assert port == home
        assert a.listing()[first]["node"] == "b"
        maker, model, xaddrs = asyncio.run(device_information(port))  # 127.0.0.1: node A
        assert (maker, model) == ("IEC 62676-2-33 reference implementation", "iec62676-device")
        assert xaddrs and all(x.startswith(f"http://127.0.0.1:{port}/onvif/") for x in xaddrs.values()), xaddrs
        assert status(HOSTS[1], port) == 405  # node B's own port: the device service (POST only)
        devices.append(s.device(second, a))
        assert same_port_on_both(s, second) == probed != port
        assert status(HOSTS[0], probed) == status(HOSTS[1], probed) == 405
        stored = asyncio.run(assignments(s.nats.url))
        assert {k: v for k, v in stored.items() if k.startswith("port.")} == {
            f"port.{port}": first.encode(), f"port.{probed}": second.encode()}
    finally:
        for device in devices:
            device.stop()


def test_a_port_lingers_on_every_node_and_is_released_over_nats_gen_3(
        setting: Setting, capsys: pytest.CaptureFixture[str]) -> None:
    """GEN-3: cam gone: its port closes on both nodes after the linger time; ``cloud ports release --nats``
    is refused while the device is connected, then frees the port, which another device then gets."""
    s = setting
    a, b = s.nodes
    first, second = colliding(PortTable(parse_port_range(s.ports)))
    release = ["cloud", "ports", "release", "--nats", s.nats.url, "--device", first]
    device = s.device(first, b)
    try:
        port = same_port_on_both(s, first)
        assert main(release) == 2
        assert "is connected to the cluster" in capsys.readouterr().err
    finally:
        device.stop()
    wait_until(lambda: first not in a.listing(), WAIT, what=f"{first} to leave the cluster")
    wait_until(lambda: closed(HOSTS[0], port) and closed(HOSTS[1], port), WAIT, what="the port to close")
    assert f"port.{port}" in asyncio.run(assignments(s.nats.url))  # kept: the port stays the device's
    assert main(release) == 0
    assert capsys.readouterr().out == f"device {first}: port {port} released\n"
    assert f"port.{port}" not in asyncio.run(assignments(s.nats.url))
    assert main(release) == 2 and "has no port in the cluster" in capsys.readouterr().err
    other = s.device(second, a)
    try:
        assert same_port_on_both(s, second) == port
    finally:
        other.stop()


@pytest.mark.parametrize("setting", [120.0], indirect=True)
def test_a_released_port_closes_at_once_on_every_node_gen_3(setting: Setting,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """GEN-3: a device gone, its port lingering on both nodes (the proxy's 404 "not connected"): the
    release over NATS closes it on both at once, long before the linger time."""
    s = setting
    a, b = s.nodes
    device = s.device("cam-r", b)
    try:
        port = same_port_on_both(s, "cam-r")
    finally:
        device.stop()
    wait_until(lambda: "cam-r" not in a.listing() and "cam-r" not in b.listing(), WAIT, what="cam-r to leave")
    for host in HOSTS:
        answer = httpx.get(f"http://{host}:{port}/onvif/device_service", timeout=WAIT)
        assert answer.status_code == 404 and "is not connected" in answer.text
    assert main(["cloud", "ports", "release", "--nats", s.nats.url, "--device", "cam-r"]) == 0
    assert capsys.readouterr().out == f"device cam-r: port {port} released\n"
    wait_until(lambda: closed(HOSTS[0], port) and closed(HOSTS[1], port), WAIT, what="the port to close")


def test_a_node_with_another_range_or_a_file_refuses_to_start(setting: Setting, tmp_path: Path) -> None:
    """Every node derives ports from one range, kept in NATS: a node given another range, or an assignments
    file, stops at startup in one line."""
    s = setting
    start = int(s.ports.split("-")[0])
    cert, key = s.node_pki.node("c")
    cluster = ClusterOptions(nats=s.nats.url, node_id="c", internal="127.0.0.1:0", cert=cert, key=key,
                             ca=s.node_pki.ca_file, ttl=6.0)
    for ports, kept, words in ((f"{start}-{start + 3}", None, f"the cluster uses {s.ports}"),
                               (s.ports, tmp_path / "ports.json", "kept in NATS")):
        options = CloudOptions(listen="127.0.0.1:0", cert=s.certs.cert, key=s.certs.key,
                               client_cas=[s.certs.ca_file], proxy="127.0.0.3:0", device_ports=ports,
                               device_ports_file=kept, cluster=cluster)
        with pytest.raises(ConfigurationError, match=words) as info:
            asyncio.run(run_cloud(options, asyncio.Event()))
        assert "\n" not in str(info.value)


def test_nats_restarted_empty_gets_the_assignments_back_gen_3(setting: Setting) -> None:
    """GEN-3: NATS restarts with an empty store: the nodes write the assignments of their mirrors back, so a
    new device whose home port is taken still gets another one."""
    s = setting
    a, b = s.nodes
    first, second = colliding(PortTable(parse_port_range(s.ports)))
    devices = [s.device(first, b)]
    try:
        port = same_port_on_both(s, first)

        def stored() -> dict[str, bytes]:
            try:
                return asyncio.run(assignments(s.nats.url))
            except Exception:  # noqa: BLE001 - NATS or its bucket not back yet
                return {}

        s.nats.restart_empty()
        wait_until(lambda: stored().get(f"port.{port}") == first.encode(), WAIT, what="the assignment back")
        devices.append(s.device(second, a))
        assert same_port_on_both(s, second) not in (None, port)
        assert a.port_of(first) == b.port_of(first) == port
    finally:
        for device in devices:
            device.stop()


@pytest.mark.skipif(not have("haproxy"), reason="Debian haproxy is needed (.ci/run installs it)")
def test_device_ports_through_haproxy_upl_16_gen_2(setting: Setting, tmp_path: Path) -> None:
    """UPL-16, GEN-2: ``examples/haproxy-device-ports.cfg`` appended to ``examples/haproxy.cfg`` (checked
    with ``haproxy -c``): onvif-zeep-async on <balancer>:<device port> reaches the device at node B through
    whichever node HAProxy picks, three times, and every XAddr is on the balancer's address."""
    s = setting
    a, b = s.nodes
    servers = "\n".join(f"    server n{i} {node.host} check port {node.proxy_port}" for i, node in enumerate(s.nodes))
    fragment = (ROOT / "examples" / "haproxy-device-ports.cfg").read_text().format(
        ports_bind=f"{BALANCER}:{s.ports}", port_servers=servers)
    balancer = Haproxy(tmp_path, [a.port, b.port], server_options="", name="balancer", extra=fragment)
    device = s.device("cam-h", b)
    try:
        port = same_port_on_both(s, "cam-h")
        for _ in range(3):  # a new connection each time, to whichever node HAProxy picks
            maker, _model, xaddrs = asyncio.run(device_information(port, BALANCER))
            assert maker == "IEC 62676-2-33 reference implementation"
            assert xaddrs and all(x.startswith(f"http://{BALANCER}:{port}/onvif/") for x in xaddrs.values()), xaddrs
    finally:
        device.stop()
        balancer.stop()


@pytest.mark.parametrize("alias", ["port.040003", "port.40003 ", "port.４0003", "port.+40003"])
def test_only_the_canonical_key_names_a_port_gen_3(alias: str) -> None:
    """GEN-3: a second key that spells port 40003 another way (leading zero, space, a non-ASCII digit, a sign)
    does not pass the port to another device (before, ``port.040003`` -> device B moved 40003 from device A
    to B and clients set up with it sent A's credentials to B)."""
    assignments = ClusterPortAssignments(None, None, range(40000, 40010))  # type: ignore[arg-type]
    released: list[tuple[str, int]] = []
    assignments.on_released = lambda device, port: released.append((device, port))

    async def entries() -> AsyncIterator[object]:
        yield SimpleNamespace(key="port.40003", value=b"device-A", operation=None)
        yield None  # the initial state is in
        yield SimpleNamespace(key=alias, value=b"device-B", operation=None)

    asyncio.run(assignments._watch(entries()))
    assert assignments.table.owner(40003) == "device-A"
    assert assignments.table.port("device-B") is None
    assert released == []
