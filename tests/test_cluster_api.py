"""UPL-16, GEN-2: the Python API of a cluster node reaches a device whose uplink another node holds.

Real parts on loopback: a nats-server (JetStream), node B as ``iec62676 cloud serve --nats``
in a process of its own, node A in this process through ``serve_cloud(cluster=...)``, and
devices running our device runtime: ``cam-b`` dials node B, ``cam-a`` node A. The block of
docs/api.md "Python API across nodes" runs as written (addresses, files and the device id
replaced). Then, on node A: zeep's AsyncClient runs GetDeviceInformation and GetServices on
``cam-b`` through ``cloud.transport`` (relayed over the node-to-node HTTP/2 mTLS connection)
and gets the addresses a local call gets; ``max_body`` cuts a long answer off with
AnswerTooLarge; a device no node holds raises UnknownDevice, and so does one the registry
places at node B while B does not hold it (B's proxy answers 404 itself); node B stopped (SIGSTOP) raises
TransportError once the timeout passes, and answers again when it resumes; node B killed
(SIGKILL) raises TransportError while ``cam-a`` still answers on its direct path, and
UnknownDevice once B's heartbeat has expired. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import zeep
from cluster_env import NatsServer, Node, NodePki, have
from zeep.proxy import AsyncServiceProxy

from iec62676_2_33 import TransportError, UnknownDevice, serve_cloud
from iec62676_2_33.cluster import ClusterOptions
from iec62676_2_33.cluster.records import DeviceRecord, device_key
from iec62676_2_33.cluster.registry import open_buckets
from iec62676_2_33.namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TDS
from iec62676_2_33.runtime.cloud import AnswerTooLarge
from iec62676_2_33.schemas import wsdl_path
from iec62676_2_33.services.device import default_serial
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import RunningDevice, UplinkPki, seed_device

pytestmark = pytest.mark.skipif(not have("nats-server"), reason="Debian nats-server is needed (.ci/run installs it)")

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0
#: Node heartbeat TTL: long enough that a stopped node is still listed while the test calls it.
TTL = 6.0
DEVICE_BINDING = "{http://www.onvif.org/ver10/device/wsdl}DeviceBinding"
GET_SERVICES = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:tds="{TDS}">'
    "<s:Body><tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>"
    "</s:Body></s:Envelope>").encode()


@dataclass
class Setting:
    tmp: Path
    certs: UplinkPki
    node_pki: NodePki
    nats: NatsServer
    node_b: Node

    def options(self, node_id: str) -> ClusterOptions:
        cert, key = self.node_pki.node(node_id)
        return ClusterOptions(nats=self.nats.url, node_id=node_id, internal="127.0.0.1:0", cert=cert, key=key,
                              ca=self.node_pki.ca_file, ttl=TTL)


@pytest.fixture
def setting(tmp_path: Path) -> Iterator[Setting]:
    certs = UplinkPki(tmp_path / "pki")
    node_pki = NodePki(tmp_path / "pki")
    nats = NatsServer(tmp_path / "js")
    try:
        # Devices dial node B directly: the PROXY protocol only from an address nobody here has.
        node_b = Node("b", cert=certs.cert, key=certs.key, client_ca=certs.ca_file, nodes=node_pki,
                      nats_url=nats.url, balancer="192.0.2.1/32", ttl=TTL, log=tmp_path / "b.log")
        try:
            yield Setting(tmp_path, certs, node_pki, nats, node_b)
        finally:
            node_b.stop()
    finally:
        nats.kill()


async def bounded(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``condition`` (sync or async) until truthy, at most ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = condition()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


@contextlib.asynccontextmanager
async def device(setting: Setting, name: str, cloud_port: int) -> AsyncIterator[str]:
    """Our device runtime dialling ``cloud_port`` as ``name``; yields its SerialNumber."""
    seed_device(setting.tmp / name, setting.certs, name, [(f"https://localhost:{cloud_port}/uplink", ("Operator",))])
    with DeviceStore(setting.tmp / name) as store:
        serial = default_serial(store.device_salt())
    running = await asyncio.to_thread(RunningDevice, setting.tmp / name, listen=False)
    try:
        yield serial
    finally:
        await asyncio.to_thread(running.stop)


async def listed_at_b(setting: Setting, device_id: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{setting.node_b.proxy_url}/devices")
    return answer.status_code == 200 and any(d["id"] == device_id and d["node"] == "b" for d in answer.json())


def device_service(cloud: Any, device_id: str, timeout: float = WAIT) -> Any:
    client = zeep.AsyncClient(str(wsdl_path("devicemgmt")), transport=cloud.transport(device_id, timeout=timeout))
    return AsyncServiceProxy(client, client.wsdl.bindings[DEVICE_BINDING], address="http://device/onvif/device_service")


def snippet(setting: Setting, device_id: str) -> str:
    """The docs/api.md block, with this test's addresses, files and device in place of the examples."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text[text.index("## Python API across nodes"):]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]
    cert, key = setting.node_pki.node("a")
    for old, new in {"nats://10.0.0.2:4222": setting.nats.url, "10.0.0.11:9443": "127.0.0.1:0",
                     '"n1.pem"': repr(str(cert)), '"n1.key"': repr(str(key)),
                     '"node-ca.pem"': repr(str(setting.node_pki.ca_file)),
                     '"cloud.pem"': repr(str(setting.certs.cert)), '"cloud.key"': repr(str(setting.certs.key)),
                     '"devices-ca.pem"': repr(str(setting.certs.ca_file)), '("10.0.0.11", 8443)': '("127.0.0.1", 0)',
                     '"camera-7"': repr(device_id)}.items():
        assert old in block, f"docs/api.md's cluster example no longer holds {old}"
        block = block.replace(old, new)
    return "async def run_snippet():\n" + textwrap.indent(block, "    ")


async def test_docs_block_calls_a_device_at_another_node_upl_16(setting: Setting,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """UPL-16: the documented cluster block, run as written, calls a device held by node B."""
    async with device(setting, "cam-b", setting.node_b.port) as serial:
        await bounded(lambda: listed_at_b(setting, "cam-b"), "cam-b connected to node B")
        namespace: dict[str, Any] = {}
        exec(compile(snippet(setting, "cam-b"), "docs/api.md", "exec"), namespace)  # noqa: S102
        async with asyncio.timeout(WAIT):
            await namespace["run_snippet"]()
    listing, information = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "('cam-b', 'b')" in listing
    assert information.split()[-1] == serial


async def test_calls_across_nodes_upl_16_gen_2(setting: Setting) -> None:
    """UPL-16, GEN-2: zeep through ``cloud.transport`` on node A reaches ``cam-b`` at node B, with the
    budgets and errors of a local call; ``cam-a`` at node A stays on its direct path."""
    async with serve_cloud((setting.certs.cert, setting.certs.key), client_cas=[setting.certs.ca_file],
                           cluster=setting.options("a")) as cloud:
        assert cloud.router is not None
        async with device(setting, "cam-b", setting.node_b.port) as serial_b, \
                device(setting, "cam-a", cloud.port) as serial_a:
            await cloud.listener.wait_for("cam-a", timeout=WAIT)
            await bounded(lambda: cloud.router.registry.locate("cam-b"), "cam-b located at node B")
            assert [d.device_id for d in cloud.listener.devices()] == ["cam-a"]  # cam-b is not local
            await check_calls(cloud, setting.node_b, {"cam-a": serial_a, "cam-b": serial_b}, setting.nats.url)


async def claim(device_id: str, node: str, nats_url: str) -> None:
    """Write a registry entry saying ``node`` holds ``device_id`` (whether it does or not)."""
    nc = await nats.connect(nats_url, connect_timeout=5, allow_reconnect=False)
    try:
        devices, _ = await open_buckets(nc, TTL)
        record = DeviceRecord(id=device_id, node=node, peer="192.0.2.9:1", connected_since=0.0, auth_mode="mTLS")
        await devices.put(device_key(device_id), record.encode())
    finally:
        await nc.close()


async def check_calls(cloud: Any, node_b: Node, serials: dict[str, str], nats_url: str) -> None:
    remote, local = device_service(cloud, "cam-b"), device_service(cloud, "cam-a")
    async with asyncio.timeout(WAIT):
        info = await remote.GetDeviceInformation()
        assert info.SerialNumber == serials["cam-b"]
        assert (await local.GetDeviceInformation()).SerialNumber == serials["cam-a"]
        # the device builds the same addresses for a relayed call as for a local one
        remote_xaddrs = [s.XAddr for s in await remote.GetServices(IncludeCapability=False)]
        local_xaddrs = [s.XAddr for s in await local.GetServices(IncludeCapability=False)]
        assert remote_xaddrs == [x.replace("cam-a", "cam-b") for x in local_xaddrs]
        assert remote_xaddrs and all(x.startswith("https://cam-b/onvif/") for x in remote_xaddrs)

        head = [("content-type", SOAP12_CONTENT_TYPE)]
        whole = await cloud.request("cam-b", "POST", "/onvif/device_service", head, GET_SERVICES)
        assert whole.status == 200 and b"GetServicesResponse" in whole.body
        with pytest.raises(AnswerTooLarge):
            await cloud.request("cam-b", "POST", "/onvif/device_service", head, GET_SERVICES,
                                max_body=len(whole.body) // 2)
        with pytest.raises(UnknownDevice):
            await cloud.request("nobody", "POST", "/onvif/device_service", head, GET_SERVICES)
        with pytest.raises(UnknownDevice):
            await device_service(cloud, "nobody").GetDeviceInformation()

    # the registry names node B for a device B does not hold: B's proxy answers 404 itself
    await claim("ghost", "b", nats_url)
    await bounded(lambda: cloud.router.registry.locate("ghost"), "the ghost entry seen by node A")
    async with asyncio.timeout(WAIT):
        with pytest.raises(UnknownDevice, match="is not connected \\(node b: "):
            await cloud.request("ghost", "POST", "/onvif/device_service", head, GET_SERVICES)

    # node B stops answering (SIGSTOP): a clear TransportError once the timeout passes, not a hang
    node_b.proc.send_signal(signal.SIGSTOP)
    try:
        async with asyncio.timeout(WAIT):
            with pytest.raises(TransportError) as stalled:
                await device_service(cloud, "cam-b", timeout=2).GetDeviceInformation()
        assert not isinstance(stalled.value, UnknownDevice)
        assert "node b holding device 'cam-b' did not answer" in str(stalled.value)
    finally:
        node_b.proc.send_signal(signal.SIGCONT)
    async with asyncio.timeout(WAIT):
        assert (await remote.GetDeviceInformation()).SerialNumber == serials["cam-b"]

    # node B killed: TransportError while the registry still lists it; the local device is unaffected
    node_b.kill()
    async with asyncio.timeout(WAIT):
        with pytest.raises(TransportError) as dead:
            await remote.GetDeviceInformation()
        assert not isinstance(dead.value, UnknownDevice)
        assert (await local.GetDeviceInformation()).SerialNumber == serials["cam-a"]
    # once B's heartbeat expired, no live node holds cam-b
    await bounded(lambda: cloud.router.registry.locate("cam-b") is None, "node B gone from the registry",
                  TTL * 3)
    async with asyncio.timeout(WAIT):
        with pytest.raises(UnknownDevice):
            await remote.GetDeviceInformation()
