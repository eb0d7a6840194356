"""EVT-10, EVT-4, RQ-11: WS-BaseNotification on a running device — Subscribe with a ConsumerReference,
wsnt:Notify pushed to a consumer on loopback, Renew and Unsubscribe on the subscription manager, bounded
retries to a dead consumer.

The consumer is a plain ``http.server`` on loopback recording every POST; every Notify it gets is
validated against the authored XSD.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import ADMIN, RunningDevice, seed_device
from helpers import fault_chain
from lxml import etree
from test_events_service import NS, answer, envelope, event_url, events_of, post, sample, topic

from iec62676_2_33 import schemas
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.namespaces import SOAP_ENV, WSA, WSNT
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.runtime.device import run_device


class Consumer:
    """A notification consumer on loopback: answers ``status`` and queues every request body."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: queue.Queue[bytes] = queue.Queue()
        self.status = status
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(consumer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                consumer.bodies.put(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/consumer"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notify(self, timeout: float = 20) -> etree._Element:
        """The next Notify's Body element (validated), waiting at most ``timeout`` seconds."""
        root = etree.fromstring(self.bodies.get(timeout=timeout))
        notify = root.find(f"{{{SOAP_ENV}}}Body/{{{WSNT}}}Notify")
        assert notify is not None, etree.tostring(root)
        schemas.validate(notify, "events")
        assert root.findtext(f"{{{SOAP_ENV}}}Header/{{{WSA}}}Action") == (
            "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify")
        assert root.findtext(f"{{{SOAP_ENV}}}Header/{{{WSA}}}To") == self.url
        return notify

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry(device: RunningDevice) -> Iterator[ResourceRegistry]:
    with ResourceRegistry(device.data / "resources.db") as reg:
        yield reg


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    made = Consumer()
    yield made
    made.close()


def subscribe(device: RunningDevice, consumer_url: str, filter_xml: str = "") -> tuple[int, etree._Element]:
    flt = f"<wsnt:Filter>{filter_xml}</wsnt:Filter>" if filter_xml else ""
    return post(event_url(device), envelope(
        f"<wsnt:Subscribe><wsnt:ConsumerReference><wsa:Address>{consumer_url}</wsa:Address>"
        f"</wsnt:ConsumerReference>{flt}<wsnt:InitialTerminationTime>PT60S</wsnt:InitialTerminationTime>"
        "</wsnt:Subscribe>", extra_ns=f' xmlns:wsa="{WSA}"'))


def renew(address: str) -> tuple[int, etree._Element]:
    return post(address, envelope("<wsnt:Renew><wsnt:TerminationTime>PT60S</wsnt:TerminationTime></wsnt:Renew>"))


def test_subscribe_pushes_notify_to_the_consumer_then_renew_and_unsubscribe_evt_10_evt_4_rq_11(
        device: RunningDevice, registry: ResourceRegistry, consumer: Consumer) -> None:
    """EVT-10, EVT-4, RQ-11: Subscribe answers a SubscriptionReference; the matching resources and then
    each change reach the consumer as wsnt:Notify; Renew extends, SetSynchronizationPoint re-sends the
    state, Unsubscribe ends the subscription."""
    sample(registry)
    status, root = subscribe(device, consumer.url, topic("tns1:Resource/VideoSource"))
    assert status == 200, etree.tostring(root)
    response = answer(root)
    assert response.tag == f"{{{WSNT}}}SubscribeResponse"
    address = response.findtext("wsnt:SubscriptionReference/wsa:Address", namespaces=NS)
    assert address.startswith(device.base + "/onvif/event_service/subscription/")
    assert events_of(consumer.notify()) == [("Initialized", "tns1:Resource/VideoSource", "dev7:vs1")]
    registry.upsert(Resource("dev7:vs1", "VideoSource", "Sensor (renamed)"))
    notify = consumer.notify()
    assert events_of(notify) == [("Changed", "tns1:Resource/VideoSource", "dev7:vs1")]
    assert notify.findtext("wsnt:NotificationMessage/wsnt:ProducerReference/wsa:Address",
                           namespaces=NS) == event_url(device)
    status, root = renew(address)
    assert status == 200 and answer(root).tag == f"{{{WSNT}}}RenewResponse"
    status, root = post(address, envelope("<tev:SetSynchronizationPoint/>"))
    assert status == 200
    assert events_of(consumer.notify()) == [("Initialized", "tns1:Resource/VideoSource", "dev7:vs1")]
    status, root = post(address, envelope("<tev:PullMessages><tev:Timeout>PT0S</tev:Timeout>"
                                          "<tev:MessageLimit>1</tev:MessageLimit></tev:PullMessages>"))
    assert fault_chain(root) == ["env:Receiver", "ter:ActionNotSupported"]  # it pushes; nobody pulls it
    status, root = post(address, envelope("<wsnt:Unsubscribe/>"))
    assert status == 200 and answer(root).tag == f"{{{WSNT}}}UnsubscribeResponse"
    status, root = renew(address)
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]


def test_dead_consumer_gets_bounded_retries_then_the_subscription_ends_evt_10(
        device: RunningDevice, registry: ResourceRegistry) -> None:
    """EVT-10: a consumer that keeps failing gets the first try and two retries, then the subscription
    ends (Renew faults ResourceUnknown) and nothing more is sent."""
    dead = Consumer(status=500)
    try:
        sample(registry)
        status, root = subscribe(device, dead.url, topic("tns1:Resource/VideoSource"))
        assert status == 200, etree.tostring(root)
        address = answer(root).findtext("wsnt:SubscriptionReference/wsa:Address", namespaces=NS)
        for _ in range(3):
            dead.bodies.get(timeout=20)
        for _ in range(1000):  # bounded: the device ends it right after the third failure's answer
            status, root = renew(address)
            if status != 200:
                break
        assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]
        assert dead.bodies.empty()
    finally:
        dead.close()


@pytest.mark.parametrize("address", ["ftp://127.0.0.1/x", "not a url", "http:///nohost"])
def test_consumer_reference_must_be_an_http_url_evt_10(device: RunningDevice, address: str) -> None:
    """EVT-10: a ConsumerReference that is not an http(s) URL with a host is refused (SubscribeCreationFailed)."""
    status, root = subscribe(device, address)
    assert status == 400
    assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:SubscribeCreationFailed"]


def test_capabilities_announce_the_push_limit_evt_10(device: RunningDevice) -> None:
    """EVT-10: MaxNotificationProducers announces how many base-notification subscriptions exist at once."""
    status, root = post(event_url(device), envelope("<tev:GetServiceCapabilities/>", user=None))
    assert status == 200
    assert answer(root).find("tev:Capabilities", NS).get("MaxNotificationProducers") == "8"


async def _stock_notification_manager(host: str, port: int, consumer: Consumer) -> list[tuple[str, str, str]]:
    import onvif
    from onvif import ONVIFCamera

    wsdl_dir = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
    cam = ONVIFCamera(host, port, *ADMIN, wsdl_dir, no_cache=True, adjust_time=True)
    try:
        await asyncio.wait_for(cam.update_xaddrs(), 20)
        lost: list[int] = []
        manager = await asyncio.wait_for(
            cam.create_notification_manager(consumer.url, timedelta(seconds=60), lambda: lost.append(1)), 20)
        body = await asyncio.get_running_loop().run_in_executor(None, consumer.bodies.get, True, 20)
        parsed = manager.process(body)
        seen = []
        for message in parsed.NotificationMessage:
            payload = message.Message._value_1
            token = {item.Name: item.Value for item in payload.Source.SimpleItem}["Token"]
            seen.append((payload.PropertyOperation, message.Topic._value_1, token))
        await asyncio.wait_for(manager.shutdown(), 20)
        assert lost == []
        return seen
    finally:
        await cam.close()


def test_onvif_zeep_async_notification_manager_works_unmodified_evt_10_gen_2(
        device: RunningDevice, registry: ResourceRegistry, consumer: Consumer) -> None:
    """EVT-10, GEN-2: onvif-zeep-async's NotificationManager (Subscribe with its own WSDLs, then its parser
    of Notify, then Unsubscribe at shutdown) works against the service unmodified."""
    sample(registry)
    parts = urlsplit(device.base)
    seen = asyncio.run(_stock_notification_manager(str(parts.hostname), int(parts.port or 80), consumer))
    assert seen == [("Initialized", "tns1:Resource/MediaProfile", "dev7:prof1"),
                    ("Initialized", "tns1:Resource/MediaProfile", "dev7:prof2"),
                    ("Initialized", "tns1:Resource/VideoSource", "dev7:vs1"),
                    ("Initialized", "tns1:Resource/MediaProfile", "dev8:prof1")]


def test_device_restart_ends_subscriptions_cleanly_evt_4_evt_10(tmp_path: Path, consumer: Consumer) -> None:
    """EVT-4, EVT-10: after a device restart its pull points and push subscriptions are gone: Renew and
    PullMessages get ResourceUnknown (the fault a client expects before it subscribes again), never an
    empty answer."""
    data = tmp_path / "device"
    seed_device(data)

    def start() -> tuple[BackgroundService, str]:
        service = BackgroundService(lambda stop, announce: run_device(data, "127.0.0.1:0", stop, announce,
                                                                      uplinks=False), name="device").start()
        match = re.search(r"(http://\S+)/onvif/", service.messages[0])
        assert match, service.messages
        return service, match.group(1)

    service, base = start()
    try:
        status, root = post(base + "/onvif/event_service", envelope("<tev:CreatePullPointSubscription/>"))
        pull_path = urlsplit(answer(root).findtext("tev:SubscriptionReference/wsa:Address", namespaces=NS)).path
        status, root = post(base + "/onvif/event_service", envelope(
            f"<wsnt:Subscribe><wsnt:ConsumerReference><wsa:Address>{consumer.url}</wsa:Address>"
            "</wsnt:ConsumerReference></wsnt:Subscribe>", extra_ns=f' xmlns:wsa="{WSA}"'))
        assert status == 200, etree.tostring(root)
        push_path = urlsplit(answer(root).findtext("wsnt:SubscriptionReference/wsa:Address", namespaces=NS)).path
    finally:
        service.stop()
    service, base = start()
    try:
        for path in (pull_path, push_path):
            status, root = renew(base + path)
            assert status == 400
            assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]
        status, root = post(base + pull_path, envelope("<tev:PullMessages><tev:Timeout>PT1S</tev:Timeout>"
                                                       "<tev:MessageLimit>10</tev:MessageLimit></tev:PullMessages>"))
        assert fault_chain(root) == ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"]
    finally:
        service.stop()
