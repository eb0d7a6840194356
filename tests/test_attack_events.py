"""EVT-2, EVT-4, EVT-10, RQ-8: what a client can send the event service of a running device, and what the
device must not do with it — raw SOAP 1.2 on loopback against ``device serve`` (the ``device`` fixture) and,
for base notification, a real consumer server that the device POSTs its ``wsnt:Notify`` to.

* EVT-10: a consumer that answers a Notify a byte at a time is cut off (otherwise each such consumer keeps a
  worker thread for ever, beyond MaxNotificationProducers once its subscription ends, until the device's
  pool is spent and it answers no one); a ConsumerReference whose port is out of range is refused at
  Subscribe (otherwise delivery fails with a traceback every 0.2 s and the subscription never ends), and a
  host name that cannot be encoded ends the subscription after its retries, like an unreachable consumer.
* EVT-4: a subscription operation whose ``wsa:To`` is no URL gets the ResourceUnknown fault, not a bare 500.
* EVT-2: a fault about a huge topic expression echoes a short excerpt, in its Reason and in its Detail.
* RQ-8: a scope filter is bounded (entries, characters), and its scopes, a client's text, are not kept in
  the process-wide cache of the resources' parsed scopes after the subscription ends.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningDevice
from helpers import fault_chain, soap_post, soap_post_raw
from hostile_http import HostileServer
from lxml import etree
from test_events_deviations import with_headers
from test_events_service import NS, envelope, event_url, registry, topic  # noqa: F401 - registry: a fixture

from iec62676_2_33.domain import filters
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import Resource

WSA = "http://www.w3.org/2005/08/addressing"
WSRF_BF = "http://docs.oasis-open.org/wsrf/bf-2"
#: The bound of each SOAP POST to the device here.
POST_TIMEOUT = 20.0


def push_subscribe(device: RunningDevice, consumer: str) -> tuple[int, etree._Element]:
    return soap_post(event_url(device), envelope(
        f'<wsnt:Subscribe xmlns:wsa="{WSA}"><wsnt:ConsumerReference><wsa:Address>{consumer}</wsa:Address>'
        "</wsnt:ConsumerReference><wsnt:InitialTerminationTime>PT60S</wsnt:InitialTerminationTime></wsnt:Subscribe>"),
        timeout=POST_TIMEOUT)


class DripConsumer(HostileServer):
    """A Notify consumer that reads the POST, then answers ``HTTP/1.1 200 OK`` and a header one byte every
    0.2 s, for ever; ``cut`` is set when the device closes such a connection."""

    def __init__(self) -> None:
        self.posted = threading.Event()
        self.cut = threading.Event()
        super().__init__(self._drip, "/notify")

    def _drip(self, conn: socket.socket, stop: threading.Event, _request: bytes) -> None:
        self.posted.set()
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.wait(0.2):
                readable, _, _ = select.select([conn], [], [], 0)
                if readable and not conn.recv(65536):
                    break  # the device shut the connection down
                conn.sendall(b"a")
        except OSError:
            pass
        if not stop.is_set():
            self.cut.set()


@pytest.fixture
def drip() -> Iterator[DripConsumer]:
    consumer = DripConsumer()
    try:
        yield consumer
    finally:
        consumer.close()


def test_a_consumer_answering_a_byte_at_a_time_is_cut_off_evt_10(
        device: RunningDevice, registry: ResourceRegistry, drip: DripConsumer) -> None:  # noqa: F811
    """EVT-10: the device pushes the resource to the consumer and gives up on an answer that never ends
    (its POST has a deadline, not only a timeout per read): the consumer sees its connection closed."""
    registry.upsert_many([Resource("dev1:prof1", "MediaProfile", "Gate")])
    status, _root = push_subscribe(device, drip.url)
    assert status == 200
    assert drip.posted.wait(20), "no Notify arrived"
    assert drip.cut.wait(30), "the device kept reading an endless answer of its consumer"


def test_a_consumer_port_out_of_range_is_refused_at_subscribe_evt_10(device: RunningDevice) -> None:
    """EVT-10: a ConsumerReference the device can never POST to (port 99999) is the Subscribe fault
    SubscribeCreationFailed, not a subscription whose every delivery fails."""
    status, root = push_subscribe(device, "http://127.0.0.1:99999/notify")
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:SubscribeCreationFailed"])


def test_a_wsa_to_that_is_no_url_gets_the_resource_unknown_fault_evt_4(device: RunningDevice) -> None:
    """EVT-4: Unsubscribe at the event service with a ``wsa:To`` that does not parse as a URL names no
    subscription: the ResourceUnknown fault, as for any other address."""
    status, root = soap_post(event_url(device), with_headers("<wsnt:Unsubscribe/>", "<wsa:To>http://[abc/x</wsa:To>"),
                             timeout=POST_TIMEOUT)
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:ResourceUnknown"])


def test_a_fault_echoes_a_short_excerpt_of_a_huge_topic_expression_evt_2(device: RunningDevice) -> None:
    """EVT-2: a 200,000-character topic expression is refused (InvalidTopicExpression) with at most a short
    excerpt of it, in env:Reason and in the WS-BaseFaults Description of env:Detail alike."""
    expression = "tns1:" + "A" * 200_000 + " x"
    status, body = soap_post_raw(event_url(device), envelope(
        f"<tev:CreatePullPointSubscription><tev:Filter>{topic(expression)}</tev:Filter>"
        "</tev:CreatePullPointSubscription>"), timeout=POST_TIMEOUT)
    root = etree.fromstring(body)
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidTopicExpression"])
    description = root.findtext(f".//{{{WSRF_BF}}}Description")
    assert description is not None and description.startswith("'tns1:AAAA")
    assert len(description) <= 301
    assert len(body) < 4096


def _scope_filter(scopes: list[str]) -> str:
    return "<tt:ScopeFilter>" + "".join(f"<tt:Scope>{s}</tt:Scope>" for s in scopes) + "</tt:ScopeFilter>"


def _create(device: RunningDevice, filter_xml: str) -> tuple[int, etree._Element]:
    return soap_post(event_url(device), envelope(
        f"<tev:CreatePullPointSubscription><tev:Filter>{filter_xml}</tev:Filter></tev:CreatePullPointSubscription>"),
        timeout=POST_TIMEOUT)


@pytest.mark.parametrize("scopes", [[f"onvif://www.onvif.org/name/n{i}" for i in range(17)],
                                    ["onvif://www.onvif.org/name/" + "n" * 1000]])
def test_a_scope_filter_is_bounded_rq_8(device: RunningDevice, scopes: list[str]) -> None:
    """RQ-8: a scope filter of 17 entries, or with a Scope of over 1,024 characters, is an InvalidFilter
    fault (each entry is evaluated against every resource of the query)."""
    status, root = _create(device, _scope_filter(scopes))
    assert (status, fault_chain(root)) == (400, ["env:Sender", "ter:InvalidArgVal", "ter:InvalidFilter"])


def _pull(address: str) -> etree._Element:
    status, body = soap_post_raw(address, envelope("<tev:PullMessages><tev:Timeout>PT0S</tev:Timeout>"
                                                   "<tev:MessageLimit>10</tev:MessageLimit></tev:PullMessages>"),
                                 timeout=POST_TIMEOUT)
    assert status == 200, body[:300]
    return etree.fromstring(body)


def test_filter_scopes_are_not_kept_in_the_resource_scope_cache_rq_8(device: RunningDevice,
                                                                     registry: ResourceRegistry) -> None:  # noqa: F811
    """RQ-8: 16 filter scopes that all match (authority case variants) select the resource, and after the
    pull the process-wide cache of parsed scopes holds no more entries than before: a client's scopes are not
    kept there (each such entry outlived its subscription, up to 65,536 of up to a request's size)."""
    scope = "onvif://www.onvif.org/name/gate"
    registry.upsert_many([Resource("dev1:prof1", "MediaProfile", "Gate", scopes=(scope,))])
    status, root = _create(device, _scope_filter([scope]))
    assert status == 200
    _pull(root.findtext(f".//{{{WSA}}}Address") or "")  # the resource's own scope is in the cache now
    variants = ["onvif://" + "".join(c.upper() if (i >> n) & 1 else c for n, c in enumerate("www")) + "."
                + "".join(c.upper() if (i >> n) & 1 else c for n, c in enumerate("onvif", 3)) + ".org/name/gate"
                for i in range(1, 17)]
    assert len(set(variants)) == 16
    before = filters._parse_rfc3986.cache_info().currsize
    status, root = _create(device, _scope_filter(variants))
    assert status == 200
    tokens = [m.get("Value") for m in _pull(root.findtext(f".//{{{WSA}}}Address") or "").iterfind(
        ".//tt:Source/tt:SimpleItem", NS)]
    assert tokens == ["dev1:prof1"]
    assert filters._parse_rfc3986.cache_info().currsize == before


@pytest.fixture
def idna_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' loopback guard refuses every other host name before the real ``getaddrinfo`` would encode it
    with IDNA; encode first, as the real one does (a label of more than 63 characters, or an empty one, fails)."""
    guarded = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str):
            host.encode("idna")
        return guarded(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_consumer_host_no_connection_can_be_made_to_ends_the_subscription_evt_10(
        device: RunningDevice, registry: ResourceRegistry, idna_first: None,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    """EVT-10: a consumer host name IDNA cannot encode (``a..b``) fails each Notify like an unreachable
    consumer: after its retries the subscription ends, without a traceback in the log at each try."""
    caplog.set_level(logging.INFO, logger="iec62676_2_33.services.events")
    registry.upsert_many([Resource("dev1:prof1", "MediaProfile", "Gate")])
    status, root = push_subscribe(device, "http://a..b/notify")
    assert status == 200
    address = root.findtext(f".//{{{WSA}}}Address") or ""
    ended = False
    for _ in range(100):  # the retries take 1 s + 2 s
        status, _body = soap_post_raw(address, envelope("<tev:SetSynchronizationPoint/>"), timeout=POST_TIMEOUT)
        if status != 200:
            ended = True
            break
        time.sleep(0.2)
    assert ended, "the subscription outlived its failing consumer"
    assert not [r for r in caplog.records if r.name == "iec62676_2_33.services.events" and r.exc_info]


class CountingDrip(DripConsumer):
    """A :class:`DripConsumer` that counts the Notify connections open at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = self.peak = 0
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
        try:
            super()._serve(conn)
        finally:
            with self.lock:
                self.open -= 1


def test_subscribing_in_a_loop_holds_at_most_max_notification_producers_posts_evt_10(
        device: RunningDevice, registry: ResourceRegistry) -> None:  # noqa: F811
    """EVT-10: eight clients subscribe a slow consumer, unsubscribe, and again, for 4 s: the device never
    has more Notify POSTs open at once than MaxNotificationProducers (8), though the POSTs of ended
    subscriptions run on until their deadline (each one holds a worker thread of the device)."""
    registry.upsert_many([Resource("dev1:prof1", "MediaProfile", "Gate")])
    consumer = CountingDrip()
    until = time.monotonic() + 4

    def churn() -> None:
        while time.monotonic() < until:
            try:
                status, root = push_subscribe(device, consumer.url)
                if status != 200:  # MaxNotificationProducers subscriptions are alive
                    time.sleep(0.05)
                    continue
                time.sleep(0.3)
                soap_post_raw(root.findtext(f".//{{{WSA}}}Address") or "", envelope("<wsnt:Unsubscribe/>"),
                              timeout=POST_TIMEOUT)
            except OSError:
                return  # the device stopped answering
    clients = [threading.Thread(target=churn) for _ in range(8)]
    try:
        for client in clients:
            client.start()
        for client in clients:
            client.join(60)
    finally:
        consumer.close()
    assert consumer.posted.is_set()
    assert consumer.peak <= 8
