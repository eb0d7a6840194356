"""GEN-2, GEN-3, UPL-16, RQ-5, EVT-4: a port per device on the cloud's proxy (``cloud serve --device-ports``).

onvif-zeep-async, unmodified, takes ``ONVIFCamera("127.0.0.1", <the device's port>)`` and runs
GetDeviceInformation and the whole pull-point workflow (test_interop_onvif_clients.py) to a device that
has no listening port of its own (reached over its uplink only): every XAddr and subscription address is
on that port. The port is listed in ``GET /devices``, is the same after a reconnect and after a restart of
the cloud, closes when its device has been gone for the linger time, and a port another program holds
gives one error line while the device stays reachable by path. The assignment rules themselves
(:class:`~iec62676_2_33.sansio.port_table.PortTable`) are checked without I/O.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import random
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN
from test_interop_onvif_clients import check_onvif_zeep_async_workflow, sample

from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime import device_ports
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.sansio.port_table import MAX_PORTS, PortTable, parse_port_range
from iec62676_2_33.testing.harness import RunningCloud, RunningDevice, UplinkPki, seed_device, wait_until

TIMEOUT = 30.0
SIZE = 16


# -- the assignment rules, without I/O -------------------------------------------------------------

def test_home_port_is_derived_from_the_id_and_stable() -> None:
    """The same id gets the same port from two tables (two runs of the cloud); ports stay in the range."""
    first, second = PortTable(range(40000, 40100)), PortTable(range(40000, 40100))
    ids = [f"cam-{i}" for i in range(20)]
    assert [first.home(i) for i in ids] == [second.home(i) for i in ids]
    assert all(40000 <= first.home(i) < 40100 for i in ids)
    assert len({first.home(i) for i in ids}) > 10  # spread, not one port


def test_collision_probes_to_the_next_free_port_and_a_reconnect_keeps_it() -> None:
    """Two ids with one home port: the later one gets the next free port (wrapping), kept across
    release and reassignment; the owner of each port is known."""
    table = PortTable(range(100, 104))
    ids = [f"d{i}" for i in range(50)]
    a = ids[0]
    b = next(i for i in ids[1:] if table.home(i) == table.home(a))
    assert table.assign(a) == table.home(a)
    expected = 100 + (table.home(a) - 100 + 1) % 4
    assert table.assign(b) == expected
    table.release(b)
    assert table.owner(expected) == b and table.released(b)
    assert table.assign(b) == expected and not table.released(b)


def test_full_range_gives_up_the_port_released_longest_ago_and_none_when_all_are_connected() -> None:
    """Bounded: one assignment per port; a new device takes the port of the device gone longest, and
    none while every port belongs to a connected device."""
    table = PortTable(range(7000, 7002))
    port_a, port_b = table.assign("a"), table.assign("b")
    assert table.assign("c") is None
    table.release("b")
    table.release("a")
    assert table.assign("c") == port_b and table.port("b") is None
    assert table.assign("a") == port_a  # kept: released more recently than b
    assert table.assign("d") is None


@pytest.mark.parametrize(("text", "words"), [("40000", "START-END"), ("a-b", "START-END"), ("5-4", "START <= END"),
                                             ("0-10", "START <= END"), ("1-70000", "END <= 65535"),
                                             (f"1000-{1000 + MAX_PORTS}", f"at most {MAX_PORTS}")])
def test_a_bad_range_is_one_clear_line(text: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as info:
        parse_port_range(text)
    assert "\n" not in str(info.value)
    assert parse_port_range(f"1000-{999 + MAX_PORTS}") == range(1000, 1000 + MAX_PORTS)


# -- through a real cloud and a real device ------------------------------------------------------------

def free_range(size: int = SIZE) -> str:
    """``START-END`` of ``size`` ports below Linux's ephemeral range that can all be bound now."""
    for _ in range(50):
        start = random.randrange(20000, 32000 - size)
        with ExitStack() as stack:
            try:
                for port in range(start, start + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return f"{start}-{start + size - 1}"
    raise AssertionError("no free port range found")


def get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def listing(cloud: RunningCloud) -> dict[str, Any]:
    assert cloud.proxy_url is not None
    status, body = get(int(cloud.proxy_url.rsplit(":", 1)[1]), "/devices")
    assert status == 200
    return {d["id"]: d for d in json.loads(body)}


def closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[UplinkPki, Path, str]]:
    """A PKI, where device cam-p's store goes (seeded by :func:`start`) and a free port range."""
    yield UplinkPki(tmp_path / "pki"), tmp_path / "dev", free_range()


def start(certs: UplinkPki, data: Path, ports: str, port: int = 0) -> RunningCloud:
    cloud = RunningCloud(certs, port=port, device_ports=ports)
    if not data.exists():
        seed_device(data, certs, "cam-p", [(cloud.uplink_url(), ("User",))])
    return cloud


async def device_information(port: int) -> tuple[str, str, dict[str, str]]:
    """onvif-zeep-async, unmodified: bootstrap on 127.0.0.1:<port>, then GetDeviceInformation."""
    import onvif
    from onvif import ONVIFCamera

    cam = ONVIFCamera("127.0.0.1", port, *ADMIN, os.path.join(os.path.dirname(onvif.__file__), "wsdl"),
                      no_cache=True, adjust_time=True)
    try:
        await asyncio.wait_for(cam.update_xaddrs(), TIMEOUT)
        devicemgmt = await cam.create_devicemgmt_service()
        info = await asyncio.wait_for(devicemgmt.GetDeviceInformation(), TIMEOUT)
        return info.Manufacturer, info.Model, dict(cam.xaddrs)
    finally:
        await cam.close()


def test_stock_client_by_device_port_gen_2_gen_3_upl_16_rq_5_evt_4(env: tuple[UplinkPki, Path, str]) -> None:
    """GEN-2, GEN-3, UPL-16, RQ-5, EVT-4: GET /devices lists the device's port; onvif-zeep-async on
    127.0.0.1:<port> gets the device information (every XAddr on that port) and runs the pull-point
    workflow; the proxy's own port still serves /devices/<id>/ and a device port names its device only."""
    certs, data, ports = env
    cloud = start(certs, data, ports)
    try:
        with ResourceRegistry(data / "resources.db") as reg:
            reg.upsert_many(sample("cam-p"))
            device = RunningDevice(data, listen=False)
            try:
                cloud.wait_for("cam-p")
                port = listing(cloud)["cam-p"]["port"]
                assert port in parse_port_range(ports)
                assert port == PortTable(parse_port_range(ports)).home("cam-p")
                base = f"http://127.0.0.1:{port}"
                maker, model, xaddrs = asyncio.run(device_information(port))
                assert (maker, model) == ("IEC 62676-2-33 reference implementation", "iec62676-device")
                assert xaddrs and all(x.startswith(base + "/onvif/") for x in xaddrs.values()), xaddrs
                asyncio.run(check_onvif_zeep_async_workflow("127.0.0.1", port, reg, "cam-p", base))
                # every path goes to the device (its answer, not the proxy's listing or 404 text)
                status, body = get(port, "/devices")
                assert status == 404 and b"GET /devices lists" not in body
                assert cloud.proxy_url is not None
                proxy_port = int(cloud.proxy_url.rsplit(":", 1)[1])
                assert get(proxy_port, "/devices/cam-p/onvif/device_service")[0] == 405  # the device: POST only
            finally:
                device.stop()
    finally:
        cloud.stop()


def test_port_is_kept_across_reconnect_and_cloud_restart_then_closes_after_linger_gen_3(
        env: tuple[UplinkPki, Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """GEN-3: the device reconnects (same port, open meanwhile: 404 'not connected' while it is gone); a new
    cloud process on the same range and uplink port gives it the same port; once the device has been gone
    for the linger time its port closes and GET /devices shows no port."""
    certs, data, ports = env
    monkeypatch.setattr(device_ports, "LINGER", 1.0)
    cloud = start(certs, data, ports)
    uplink_port = cloud.port
    try:
        device = RunningDevice(data, listen=False)
        cloud.wait_for("cam-p")
        port = listing(cloud)["cam-p"]["port"]
        device.stop()
        wait_until(lambda: "cam-p" not in cloud.device_ids(), TIMEOUT, what="the device to leave")
        status, body = get(port, "/onvif/device_service")
        assert status == 404 and b"is not connected" in body
        device = RunningDevice(data, listen=False)
        cloud.wait_for("cam-p")
        assert listing(cloud)["cam-p"]["port"] == port
        device.stop()
        wait_until(lambda: closed(port), TIMEOUT, what="the port to close after the linger time")
    finally:
        cloud.stop()
    cloud = start(certs, data, ports, port=uplink_port)
    try:
        device = RunningDevice(data, listen=False)
        try:
            cloud.wait_for("cam-p")
            wait_until(lambda: listing(cloud)["cam-p"].get("port") == port, TIMEOUT, what="the same port")
            assert get(port, "/onvif/device_service")[0] == 405
        finally:
            device.stop()
    finally:
        cloud.stop()


def test_port_in_use_is_one_error_line_and_the_device_stays_reachable_gen_3(
        env: tuple[UplinkPki, Path, str], caplog: pytest.LogCaptureFixture) -> None:
    """GEN-3: another program holds the device's port: one error line naming the device and the port,
    no port in GET /devices, the device still answers through /devices/<id>/."""
    certs, data, ports = env
    home = PortTable(parse_port_range(ports)).home("cam-p")
    cloud = start(certs, data, ports)
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", home))
        holder.listen(1)
        with caplog.at_level(logging.ERROR, logger="iec62676_2_33.runtime.device_ports"):
            device = RunningDevice(data, listen=False)
            try:
                cloud.wait_for("cam-p")
                assert "port" not in listing(cloud)["cam-p"]
                errors = [r.getMessage() for r in caplog.records if r.name.endswith("device_ports")]
                assert len(errors) == 1 and "\n" not in errors[0], errors
                assert "cam-p" in errors[0] and str(home) in errors[0] and "in use" in errors[0]
                assert cloud.proxy_url is not None
                assert get(int(cloud.proxy_url.rsplit(":", 1)[1]), "/devices/cam-p/onvif/device_service")[0] == 405
            finally:
                device.stop()
    finally:
        holder.close()
        cloud.stop()


def test_one_port_range_goes_to_the_device_gone_longest_gen_3(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """GEN-3, bounded: a one-port range; while cam-a is connected cam-b gets no port (a warning line) and is
    reachable by path; once cam-a is gone (its port lingering), cam-b's reconnect takes the port over: the
    listener is rebound and every request on it now reaches cam-b."""
    certs = UplinkPki(tmp_path / "pki")
    ports = free_range(1)
    only = int(ports.split("-")[0])
    cloud = RunningCloud(certs, device_ports=ports)
    for name in ("cam-a", "cam-b"):
        seed_device(tmp_path / name, certs, name, [(cloud.uplink_url(), ("User",))])
    try:
        a = RunningDevice(tmp_path / "cam-a", listen=False)
        cloud.wait_for("cam-a")
        with caplog.at_level(logging.WARNING, logger="iec62676_2_33.runtime.device_ports"):
            b = RunningDevice(tmp_path / "cam-b", listen=False)
            cloud.wait_for("cam-b")
        try:
            devices = listing(cloud)
            assert devices["cam-a"]["port"] == only and "port" not in devices["cam-b"]
            assert [r.getMessage() for r in caplog.records if r.name.endswith("device_ports")] == [
                f"device cam-b: no port left in {only}-{only} (every one belongs to a connected device)"]
            a.stop()
            wait_until(lambda: "cam-a" not in cloud.device_ids(), TIMEOUT, what="cam-a to leave")
            assert b"is not connected" in get(only, "/onvif/device_service")[1]  # cam-a's port lingers
            b.stop()
            wait_until(lambda: "cam-b" not in cloud.device_ids(), TIMEOUT, what="cam-b to leave")
            b = RunningDevice(tmp_path / "cam-b", listen=False)
            cloud.wait_for("cam-b")
            assert listing(cloud)["cam-b"]["port"] == only
            assert get(only, "/onvif/device_service")[0] == 405  # cam-b's device service (POST only)
        finally:
            a.stop()  # stopping twice is harmless
            b.stop()
    finally:
        cloud.stop()


@pytest.mark.parametrize(("proxy", "what"), [(None, "needs --proxy"), ("127.0.0.1:{start}", "listens on already")])
def test_device_ports_without_proxy_or_over_the_clouds_own_ports_are_refused(
        env: tuple[UplinkPki, Path, str], proxy: str | None, what: str) -> None:
    """A configuration error, one line, before anything listens."""
    certs, _, ports = env
    start_port = ports.split("-")[0]
    options = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file],
                           proxy=None if proxy is None else proxy.format(start=start_port), device_ports=ports)
    with pytest.raises(ConfigurationError, match=what) as info:
        asyncio.run(run_cloud(options, asyncio.Event()))
    assert "\n" not in str(info.value)
