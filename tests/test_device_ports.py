"""GEN-2, GEN-3, UPL-16, RQ-5, EVT-4: a port per device on the cloud's proxy (``cloud serve --device-ports``).

onvif-zeep-async, unmodified, takes ``ONVIFCamera("127.0.0.1", <the device's port>)`` and runs
GetDeviceInformation and the whole pull-point workflow (test_interop_onvif_clients.py) to a device that
has no listening port of its own (reached over its uplink only): every XAddr and subscription address is
on that port. The port is listed in ``GET /devices``, is the same after a reconnect and after a restart of
the cloud (also for a device that collided and connects first after the restart), closes when its device
has been gone for the linger time, and a port another program holds gives one error line while the device
stays reachable by path. A port never passes to another device: a full range gives a new device none,
until the operator frees one with ``iec62676 cloud ports release``; the assignments file is private and a
damaged one is a one-line startup error. The assignment rules themselves
(:class:`~iec62676_2_33.sansio.port_table.PortTable`, also as a cluster node's mirror of assignments made
by other nodes) are checked without I/O.
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

from iec62676_2_33.cli import main
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime import device_ports
from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
from iec62676_2_33.sansio.port_table import (
    MAX_PORTS,
    PortTable,
    dumps_assignments,
    loads_assignments,
    parse_port_range,
)
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


def colliding(table: PortTable) -> tuple[str, str]:
    """Two device names with one home port in ``table``."""
    ids = [f"cam-{i}" for i in range(200)]
    return next((a, b) for n, a in enumerate(ids) for b in ids[n + 1:] if table.home(a) == table.home(b))


def test_collision_probes_to_the_next_free_port_and_the_assignments_survive_a_restart() -> None:
    """Two ids with one home port: the later one gets the next free port (wrapping); the encoded
    assignments give a new table (a restarted cloud) the same ports, whoever asks first."""
    table = PortTable(range(100, 104))
    a, b = colliding(table)
    assert table.assign(a) == table.home(a)
    expected = 100 + (table.home(a) - 100 + 1) % 4
    assert table.assign(b) == expected and table.owner(expected) == b
    restarted = PortTable(range(100, 104), loads_assignments(dumps_assignments(table.assignments())))
    assert restarted.assign(b) == expected  # b first, a absent: b keeps its port, a's stays a's
    assert restarted.owner(table.home(a)) == a and restarted.assign(a) == table.home(a)


def test_full_range_gives_a_new_id_no_port_until_the_operator_releases_one() -> None:
    """Bounded, never reused: one assignment per port; a new id gets none while every port is another
    id's, however long that one has been gone; release frees exactly that port."""
    table = PortTable(range(7000, 7002))
    port_a = table.assign("a")
    table.assign("b")
    assert table.assign("c") is None and table.port("c") is None
    assert table.release("a") == port_a and table.release("a") is None
    assert table.assign("c") == port_a and table.assign("d") is None


def test_assignments_made_elsewhere_follow_the_same_rules() -> None:
    """A cluster node's mirror: an assignment recorded from another node takes its port from the candidates
    (the candidate is not assigned); a forgotten (released) port is free again; an id that holds two ports
    uses the first in its probe order and a release frees both; a port outside the range is refused."""
    table = PortTable(range(100, 104))
    a, b = colliding(table)
    home = table.home(a)
    assert table.candidate(a) == home and table.port(a) is None
    table.record(b, home)
    nxt = 100 + (home - 100 + 1) % 4
    assert table.owner(home) == b and table.port(b) == home and table.candidate(a) == nxt
    assert table.forget(home) == b and table.port(b) is None and table.candidate(a) == home
    table.record(a, nxt)
    table.record(a, home)
    assert table.port(a) == home and table.owner(nxt) == a  # both reserved, the home port used
    assert table.forget(home) == a and table.port(a) == nxt
    table.record(a, home)
    assert table.release(a) == home and table.owner(nxt) is None and table.assignments() == {}
    with pytest.raises(ConfigurationError, match="same --device-ports range"):
        table.record(a, 99)


@pytest.mark.parametrize(("data", "words"), [
    (b"{not json", "not JSON"), (b"[]", "not an assignments file"), (b'{"format": 2, "ports": {}}', "not an"),
    (b'{"format": 1, "ports": {"cam": "x"}}', "is not a port"), (b'{"format": 1, "ports": {"cam": 0}}', "not a port"),
    (b"\xff\xfe", "not JSON"), (b" " * (MAX_PORTS * 4096 + 1), "larger than"),
])
def test_a_damaged_assignments_file_is_one_clear_line(data: bytes, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as info:
        loads_assignments(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("assigned", "words"), [({"a": 99}, "outside 100-103"), ({"a": 100, "b": 100}, "both a and b")])
def test_assignments_that_do_not_fit_the_range_are_refused(assigned: dict[str, int], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        PortTable(range(100, 104), assigned)


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
    """A cloud whose assignments file is ``ports.json`` next to ``data``."""
    cloud = RunningCloud(certs, port=port, device_ports=ports, device_ports_file=data.parent / "ports.json")
    if not data.exists():
        seed_device(data, certs, "cam-p", [(cloud.uplink_url(), ("User",))])
    return cloud


async def device_information(port: int, host: str = "127.0.0.1") -> tuple[str, str, dict[str, str]]:
    """onvif-zeep-async, unmodified: bootstrap on <host>:<port>, then GetDeviceInformation."""
    import onvif
    from onvif import ONVIFCamera

    cam = ONVIFCamera(host, port, *ADMIN, os.path.join(os.path.dirname(onvif.__file__), "wsdl"),
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


def test_a_full_range_never_gives_a_port_to_another_device_until_released_gen_3(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """GEN-3, bounded, never reused: a one-port range; cam-b gets no port (one warning line naming it) and is
    reachable by path while cam-a is gone (its port lingering) and after a restart with cam-b alone (cam-a's
    port stays reserved, closed); ``cloud ports release`` is refused while the cloud runs, frees
    cam-a's port once it is stopped, and then cam-b gets the port."""
    certs = UplinkPki(tmp_path / "pki")
    ports = free_range(1)
    only = int(ports.split("-")[0])
    kept = tmp_path / "ports.json"
    cloud = RunningCloud(certs, device_ports=ports, device_ports_file=kept)
    uplink_port = cloud.port
    for name in ("cam-a", "cam-b"):
        seed_device(tmp_path / name, certs, name, [(cloud.uplink_url(), ("User",))])
    release = ["cloud", "ports", "release", "--file", str(kept), "--device", "cam-a"]
    try:
        a = RunningDevice(tmp_path / "cam-a", listen=False)
        cloud.wait_for("cam-a")
        a.stop()
        wait_until(lambda: "cam-a" not in cloud.device_ids(), TIMEOUT, what="cam-a to leave")
        with caplog.at_level(logging.WARNING, logger="iec62676_2_33.runtime.device_ports"):
            b = RunningDevice(tmp_path / "cam-b", listen=False)
            try:
                cloud.wait_for("cam-b")
                assert "port" not in listing(cloud)["cam-b"]
                assert b"is not connected" in get(only, "/onvif/device_service")[1]  # still cam-a's
                assert cloud.proxy_url is not None
                assert get(int(cloud.proxy_url.rsplit(":", 1)[1]), "/devices/cam-b/onvif/device_service")[0] == 405
            finally:
                b.stop()
        assert [r.getMessage() for r in caplog.records if r.name.endswith("device_ports")] == [
            (f"device cam-b: no port left in {only}-{only} (every one is assigned to another device; "
             "iec62676 cloud ports release frees one)")]
        assert main(release) == 2
        assert "a running cloud uses it (stop it first)" in capsys.readouterr().err
    finally:
        cloud.stop()
    assert json.loads(kept.read_text())["ports"] == {"cam-a": only}
    assert kept.stat().st_mode & 0o777 == 0o600
    cloud = RunningCloud(certs, port=uplink_port, device_ports=ports, device_ports_file=kept)
    try:
        b = RunningDevice(tmp_path / "cam-b", listen=False)
        try:
            cloud.wait_for("cam-b")
            assert "port" not in listing(cloud)["cam-b"] and closed(only)
        finally:
            b.stop()
            wait_until(lambda: "cam-b" not in cloud.device_ids(), TIMEOUT, what="cam-b to leave")
    finally:
        cloud.stop()
    assert main(release) == 0
    assert capsys.readouterr().out == f"device cam-a: port {only} released\n"
    cloud = RunningCloud(certs, port=uplink_port, device_ports=ports, device_ports_file=kept)
    try:
        b = RunningDevice(tmp_path / "cam-b", listen=False)
        try:
            cloud.wait_for("cam-b")
            wait_until(lambda: listing(cloud)["cam-b"].get("port") == only, TIMEOUT, what="cam-b's port")
            assert get(only, "/onvif/device_service")[0] == 405  # cam-b's device service (POST only)
        finally:
            b.stop()
    finally:
        cloud.stop()
    assert json.loads(kept.read_text())["ports"] == {"cam-b": only}
    assert main(release) == 2 and "device cam-a has no port" in capsys.readouterr().err


def test_a_collided_device_keeps_its_port_when_it_connects_first_after_a_restart_gen_3(tmp_path: Path) -> None:
    """GEN-3: two devices with one home port; the second gets the next port; after a restart of the cloud the
    second connects first with the first absent: it gets its own port again, and the home port stays
    closed (the first device's)."""
    certs = UplinkPki(tmp_path / "pki")
    ports = free_range()
    first, second = colliding(PortTable(parse_port_range(ports)))
    table = PortTable(parse_port_range(ports))
    home, probed = table.assign(first), table.assign(second)
    kept = tmp_path / "ports.json"
    cloud = RunningCloud(certs, device_ports=ports, device_ports_file=kept)
    uplink_port = cloud.port
    for name in (first, second):
        seed_device(tmp_path / name, certs, name, [(cloud.uplink_url(), ("User",))])
    try:
        devices = [RunningDevice(tmp_path / first, listen=False)]
        try:
            cloud.wait_for(first)
            devices.append(RunningDevice(tmp_path / second, listen=False))
            cloud.wait_for(second)
            found = listing(cloud)
            assert (found[first]["port"], found[second]["port"]) == (home, probed)
        finally:
            for device in devices:
                device.stop()
    finally:
        cloud.stop()
    cloud = RunningCloud(certs, port=uplink_port, device_ports=ports, device_ports_file=kept)
    try:
        device = RunningDevice(tmp_path / second, listen=False)
        try:
            cloud.wait_for(second)
            assert listing(cloud)[second]["port"] == probed
            assert get(probed, "/onvif/device_service")[0] == 405
            assert home is not None and closed(home)
        finally:
            device.stop()
    finally:
        cloud.stop()


def test_a_port_whose_assignment_cannot_be_kept_stays_closed_gen_3(
        env: tuple[UplinkPki, Path, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """GEN-3: the assignments file cannot be written when the device first connects: one error line naming
    the device, no port (after a restart it could be another device's), the device reachable by path;
    its next connect, with the file writable again, gets the port and keeps it in the file."""
    certs, data, ports = env
    cloud = start(certs, data, ports)
    kept = data.parent / "ports.json"
    save = device_ports.AssignmentsFile.save

    def failing(self: device_ports.AssignmentsFile, assigned: Any) -> None:
        raise ConfigurationError(f"cannot write {self.path}: No space left on device")

    monkeypatch.setattr(device_ports.AssignmentsFile, "save", failing)
    try:
        with caplog.at_level(logging.ERROR, logger="iec62676_2_33.runtime.device_ports"):
            device = RunningDevice(data, listen=False)
            try:
                cloud.wait_for("cam-p")
                assert "port" not in listing(cloud)["cam-p"]
                assert cloud.proxy_url is not None
                assert get(int(cloud.proxy_url.rsplit(":", 1)[1]), "/devices/cam-p/onvif/device_service")[0] == 405
            finally:
                device.stop()
        errors = [r.getMessage() for r in caplog.records if r.name.endswith("device_ports")]
        assert errors == [f"device cam-p: its port is not open: cannot write {kept}: No space left on device"]
        assert json.loads(kept.read_text())["ports"] == {}
        monkeypatch.setattr(device_ports.AssignmentsFile, "save", save)
        wait_until(lambda: "cam-p" not in cloud.device_ids(), TIMEOUT, what="the device to leave")
        device = RunningDevice(data, listen=False)
        try:
            cloud.wait_for("cam-p")
            port = listing(cloud)["cam-p"]["port"]
            assert json.loads(kept.read_text())["ports"] == {"cam-p": port}
        finally:
            device.stop()
    finally:
        cloud.stop()


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "ports": {"cam-p": 1}}'])
def test_a_damaged_assignments_file_is_a_one_line_startup_error(
        env: tuple[UplinkPki, Path, str], capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    """``cloud serve`` refuses a damaged (or foreign-range) assignments file in one line, exit status 2, and
    leaves the file as it was."""
    certs, data, ports = env
    kept = data.parent / "ports.json"
    kept.write_bytes(content)
    argv = ["cloud", "serve", "--listen", "127.0.0.1:0", "--cert", str(certs.cert), "--key", str(certs.key),
            "--client-ca", str(certs.ca_file), "--proxy", "127.0.0.1:0", "--device-ports", ports,
            "--device-ports-file", str(kept)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"iec62676: error: --device-ports-file {kept}"), lines
    assert kept.read_bytes() == content


@pytest.mark.parametrize(("proxy", "what"), [(None, "needs --proxy"), ("127.0.0.1:{start}", "listens on already")])
def test_device_ports_without_proxy_or_over_the_clouds_own_ports_are_refused(
        env: tuple[UplinkPki, Path, str], tmp_path: Path, proxy: str | None, what: str) -> None:
    """A configuration error, one line, before anything listens."""
    certs, _, ports = env
    start_port = ports.split("-")[0]
    options = CloudOptions(listen="127.0.0.1:0", cert=certs.cert, key=certs.key, client_cas=[certs.ca_file],
                           proxy=None if proxy is None else proxy.format(start=start_port), device_ports=ports,
                           device_ports_file=tmp_path / "ports.json")
    with pytest.raises(ConfigurationError, match=what) as info:
        asyncio.run(run_cloud(options, asyncio.Event()))
    assert "\n" not in str(info.value)
