"""EVT-4, EVT-10, RQ-11, GEN-2: base notification through the cloud, and a stock client's renewal across a
device restart.

* WS-BaseNotification push through the cloud's HTTP proxy: Subscribe, Renew and Unsubscribe travel through
  the proxy and the uplink to a device that has no listening port; the device pushes wsnt:Notify to the
  consumer the client named (a plain ``http.server`` on loopback).
* onvif-zeep-async's PullPointManager, unmodified, across a device restart: its Renew meets the fault it
  expects for a subscription that is gone (ResourceUnknown), it reports the subscription lost and
  subscribes again, and pulling works on the new pull point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from conftest import ADMIN, seed_device
from helpers import fault_chain, free_port, uplinked_registry
from test_events_push import Consumer, _stock_notification_manager, consumer  # noqa: F401 - fixture
from test_events_service import NS, answer, envelope, events_of, post, sample, topic

from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.namespaces import WSA, WSNT
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.device import run_device

TIMEOUT = 20.0


def test_base_notification_push_through_the_cloud_proxy_evt_10_rq_11(
        tmp_path: Path, consumer: Consumer) -> None:  # noqa: F811
    """EVT-10, RQ-11: Subscribe sent through the cloud's HTTP proxy to a device reached only over its uplink:
    the SubscriptionReference points back through the proxy, the device pushes the matching resources and a
    change to the consumer, Renew and Unsubscribe through the proxy work, and afterwards Renew faults
    ResourceUnknown."""
    with uplinked_registry(tmp_path, "cam-n", sample) as (cloud, registry):
        base = f"{cloud.proxy_url}/devices/cam-n"
        status, root = post(base + "/onvif/event_service", envelope(
            f"<wsnt:Subscribe><wsnt:ConsumerReference><wsa:Address>{consumer.url}</wsa:Address>"
            f"</wsnt:ConsumerReference><wsnt:Filter>{topic('tns1:Resource/VideoSource')}</wsnt:Filter>"
            "<wsnt:InitialTerminationTime>PT60S</wsnt:InitialTerminationTime></wsnt:Subscribe>",
            extra_ns=f' xmlns:wsa="{WSA}"'), timeout=TIMEOUT)
        assert status == 200
        response = answer(root)
        assert response.tag == f"{{{WSNT}}}SubscribeResponse"
        address = response.findtext("wsnt:SubscriptionReference/wsa:Address", namespaces=NS)
        assert address.startswith(base + "/onvif/event_service/subscription/")
        assert events_of(consumer.notify()) == [("Initialized", "tns1:Resource/VideoSource", "dev7:vs1")]
        registry.upsert(Resource("dev7:vs1", "VideoSource", "Sensor (renamed)"))
        assert events_of(consumer.notify()) == [("Changed", "tns1:Resource/VideoSource", "dev7:vs1")]
        renew = envelope("<wsnt:Renew><wsnt:TerminationTime>PT60S</wsnt:TerminationTime></wsnt:Renew>")
        status, root = post(address, renew, timeout=TIMEOUT)
        assert status == 200 and answer(root).tag == f"{{{WSNT}}}RenewResponse"
        status, root = post(address, envelope("<wsnt:Unsubscribe/>"), timeout=TIMEOUT)
        assert status == 200 and answer(root).tag == f"{{{WSNT}}}UnsubscribeResponse"
        status, root = post(address, renew, timeout=TIMEOUT)
        assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]


def _start(data: Path, port: int) -> BackgroundService:
    return BackgroundService(lambda stop, announce: run_device(data, f"127.0.0.1:{port}", stop, announce,
                                                               uplinks=False), name="device").start()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _renew_across_restart(host: str, port: int, restart: Callable[[], None]) -> tuple[int, str, str, int]:
    """Subscribe with the stock manager at ``host:port``, ``restart`` the device, make the manager renew now;
    returns (times the manager reported the subscription lost, old and new pull point address, HTTP status of a
    pull on the new)."""
    import onvif
    from onvif import ONVIFCamera

    pull_point = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"
    cam = ONVIFCamera(host, port, *ADMIN, os.path.join(os.path.dirname(onvif.__file__), "wsdl"),
                      no_cache=True, adjust_time=True)
    lost: list[int] = []
    try:
        await asyncio.wait_for(cam.update_xaddrs(), TIMEOUT)
        manager = await asyncio.wait_for(
            cam.create_pullpoint_manager(dt.timedelta(seconds=60), lambda: lost.append(1)), TIMEOUT)
        old = cam.xaddrs[pull_point]
        await asyncio.get_running_loop().run_in_executor(None, restart)
        manager.resume()  # the public way to renew now instead of in 48 s
        for _ in range(int(TIMEOUT / 0.05)):  # bounded: until the manager has subscribed again and
            if cam.xaddrs[pull_point] != old and manager.get_service().xaddr == cam.xaddrs[pull_point]:
                break  # swapped its pull-point service (it closes the old one's connector)
            await asyncio.sleep(0.05)
        new = cam.xaddrs[pull_point]
        pulled = await asyncio.wait_for(manager.get_service().PullMessages(
            {"Timeout": dt.timedelta(seconds=0), "MessageLimit": 10}), TIMEOUT)
        status = 200 if pulled.CurrentTime is not None else 0
        await asyncio.wait_for(manager.shutdown(), TIMEOUT)
        return len(lost), old, new, status
    finally:
        await cam.close()


def _stock_renewal(host: str, port: int, restart: Callable[[], None]) -> tuple[int, list[str], str, str, int]:
    """:func:`_renew_across_restart` with the library's log captured: (lost, "Failed to renew" lines, old, new,
    status)."""
    records, library = _Records(), logging.getLogger("onvif")
    level = library.level
    library.addHandler(records)
    library.setLevel(logging.DEBUG)
    try:
        lost, old, new, status = asyncio.run(_renew_across_restart(host, port, restart))
    finally:
        library.removeHandler(records)
        library.setLevel(level)
    return lost, [line for line in records.lines if "Failed to renew" in line], old, new, status


#: What the stock client logs when its Renew meets the fault for a subscription that is gone.
RESOURCE_UNKNOWN = ("(subcodes:{http://www.onvif.org/ver10/error}InvalidArgVal,"
                    "{http://www.onvif.org/ver10/error}ResourceUnknown)")


def test_stock_pull_point_manager_resubscribes_after_a_device_restart_evt_4_gen_2(tmp_path: Path) -> None:
    """EVT-4, GEN-2: a device restart ends its pull points; onvif-zeep-async's PullPointManager renews, gets
    the ResourceUnknown fault it expects, calls its subscription-lost callback once and creates a new pull
    point on the restarted device, which then answers PullMessages."""
    data = tmp_path / "device"
    seed_device(data)
    port = free_port()
    services = [_start(data, port)]

    def restart() -> None:
        services[0].stop()
        services[0] = _start(data, port)

    try:
        lost, failed, old, new, status = _stock_renewal("127.0.0.1", port, restart)
    finally:
        services[0].stop()
    assert lost == 1
    assert len(failed) == 1 and failed[0].endswith(RESOURCE_UNKNOWN)  # the fault, not a broken connection
    assert new != old and "/onvif/event_service/subscription/" in new
    assert status == 200


def test_stock_pull_point_manager_resubscribes_through_the_cloud_proxy_evt_4_gen_2(tmp_path: Path) -> None:
    """EVT-4, GEN-2: the same through the cloud's HTTP proxy to a device reached only over its uplink: the
    device restarts, dials again, the stock manager's Renew through the proxy meets ResourceUnknown, and its new
    pull point (an address through the proxy) answers PullMessages."""
    from iec62676_2_33.testing.harness import RunningCloud, RunningDevice, UplinkPki, wait_until
    from iec62676_2_33.testing.harness import seed_device as seed_uplink_device

    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs)
    try:
        seed_uplink_device(tmp_path / "dev", certs, "cam-r", [(cloud.uplink_url(), ("User",))])
        devices = [RunningDevice(tmp_path / "dev", listen=False)]

        def restart() -> None:
            devices[0].stop()
            wait_until(lambda: "cam-r" not in cloud.device_ids(), TIMEOUT, what="the old uplink gone")
            devices[0] = RunningDevice(tmp_path / "dev", listen=False)
            cloud.wait_for("cam-r")

        try:
            cloud.wait_for("cam-r")
            assert cloud.proxy_url is not None
            base = f"{cloud.proxy_url}/devices/cam-r"
            lost, failed, old, new, status = _stock_renewal(f"{base}/onvif/device_service#",
                                                            int(urlsplit(cloud.proxy_url).port or 80), restart)
        finally:
            devices[0].stop()
    finally:
        cloud.stop()
    assert lost == 1
    assert len(failed) == 1 and failed[0].endswith(RESOURCE_UNKNOWN)
    assert new != old and new.startswith(base + "/onvif/event_service/subscription/")
    assert status == 200


def test_stock_notification_manager_through_the_cloud_proxy_evt_10_gen_2(
        tmp_path: Path, consumer: Consumer) -> None:  # noqa: F811
    """EVT-10, GEN-2: onvif-zeep-async's NotificationManager, unmodified, through the cloud's HTTP proxy to a
    device reached only over its uplink: it bootstraps (GetCapabilities' XAddrs point back through the proxy),
    subscribes, parses the Notify the device pushes to its consumer and unsubscribes at shutdown. The library
    builds ``http://host:port/onvif/device_service`` itself, so the host it is given ends with ``#`` to keep
    the proxy's ``/devices/<id>`` prefix (docs/interop.md)."""
    with uplinked_registry(tmp_path, "cam-s", sample) as (cloud, _registry):
        assert cloud.proxy_url is not None
        host = f"{cloud.proxy_url}/devices/cam-s/onvif/device_service#"
        port = int(urlsplit(cloud.proxy_url).port or 80)
        seen = asyncio.run(_stock_notification_manager(host, port, consumer))
    assert seen == [("Initialized", "tns1:Resource/MediaProfile", "dev7:prof1"),
                    ("Initialized", "tns1:Resource/MediaProfile", "dev7:prof2"),
                    ("Initialized", "tns1:Resource/VideoSource", "dev7:vs1"),
                    ("Initialized", "tns1:Resource/MediaProfile", "dev8:prof1")]
