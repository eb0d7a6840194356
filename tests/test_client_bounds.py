"""The library's SOAP clients bound every exchange with a server as a whole (RQ-10 for the pulls, PROV-1 for
the enrolment).

A server that trickles its answer a byte at a time, or floods it, would hold a
client built on requests or httpx for as long as it likes (their timeouts bound
each read only) or fill its memory (requests reads a body whole). The default
transports of :class:`UplinkClient`, :class:`AsyncUplinkClient` and
:class:`ResourceQueryClient` give each exchange one deadline and a byte budget;
what a client gets is one line. The hostile servers here are real sockets on
loopback, each bounded in time.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hostile_http import Behaviour, HostileServer
from lxml import etree

from iec62676_2_33.bounded_http import AnswerTooLong, ExchangeTimeout
from iec62676_2_33.client import MAX_ANSWER, AsyncUplinkClient, UplinkClient
from iec62676_2_33.enroll import enroll
from iec62676_2_33.errors import TransportError
from iec62676_2_33.pki import make_ca
from iec62676_2_33.query import QuerySubscription, ResourceQueryClient, ServerDead, parse_message

#: No hostile answer here lasts longer than this, whatever the client does.
SERVER_BOUND = 30.0


def _answer(mode: str) -> Behaviour:
    """Trickle (``"drip"``: the head, then a byte every 50 ms of a long body) or flood (``"flood"``: a body far
    over the clients' budget, as fast as the client reads), for at most SERVER_BOUND seconds."""

    def behaviour(conn: socket.socket, stop: threading.Event, _request: bytes) -> None:
        end = time.monotonic() + SERVER_BOUND
        size = 64 * MAX_ANSWER if mode == "flood" else 1_000_000
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml; charset=utf-8\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        sent = 0
        while sent < size and time.monotonic() < end and not stop.is_set():
            if mode == "flood":
                conn.sendall(b" " * 65536)
                sent += 65536
            else:
                conn.sendall(b" ")
                sent += 1
                time.sleep(0.05)

    return behaviour


@contextmanager
def hostile(mode: str) -> Iterator[str]:
    """A :class:`HostileServer` answering every request as :func:`_answer` ``mode`` says; yields its URL."""
    with HostileServer(_answer(mode), "/onvif/service") as server:
        yield server.url


def test_uplink_client_gives_up_on_a_trickled_answer_at_its_deadline() -> None:
    """An answer trickled a byte every 50 ms never trips a per-read timeout; the client's one deadline
    for the whole exchange (1 s) ends it with one line."""
    with hostile("drip") as url, pytest.raises(ExchangeTimeout, match="no whole answer within 1 s"):
        UplinkClient(url, timeout=1.0).get_uplinks()


def test_uplink_client_stops_reading_a_flood_at_its_budget() -> None:
    """A 256 MiB answer is not read whole: the client stops at MAX_ANSWER bytes."""
    with hostile("flood") as url, pytest.raises(AnswerTooLong, match=f"longer than {MAX_ANSWER} bytes"):
        UplinkClient(url, timeout=10.0).get_uplinks()


def test_async_uplink_client_is_bounded_the_same_way() -> None:
    """The asyncio client has the same deadline and budget as the blocking one."""

    async def call(url: str, timeout: float) -> None:
        client = AsyncUplinkClient(url, timeout=timeout)
        try:
            await client.get_uplinks()
        finally:
            await client.aclose()

    with hostile("drip") as url, pytest.raises(ExchangeTimeout, match="no whole answer within 1 s"):
        asyncio.run(call(url, 1.0))
    with hostile("flood") as url, pytest.raises(AnswerTooLong, match=f"longer than {MAX_ANSWER} bytes"):
        asyncio.run(call(url, 10.0))


def test_a_pull_that_is_trickled_is_a_dead_server_rq_10() -> None:
    """RQ-10: a PullMessages whose answer is trickled past ``pull_timeout + grace`` is ServerDead, raised at
    that deadline rather than after the trickle ends."""
    with hostile("drip") as url:
        client = ResourceQueryClient(url, timeout=1.0, pull_timeout=0.5, grace=0.5)
        with pytest.raises(ServerDead, match="got no answer: .*no whole answer within 1 s"):
            QuerySubscription(client, url).pull()


def test_a_malformed_location_in_a_resource_event_is_one_line_rq_3() -> None:
    """RQ-3: a resource event whose GeoLocation is not numbers is a TransportError naming it, not a
    ValueError from deep inside the client."""
    message = etree.fromstring(
        '<tt:Message xmlns:tt="http://www.onvif.org/ver10/schema" UtcTime="2026-01-01T00:00:00Z">'
        '<tt:Source><tt:SimpleItem Name="Token" Value="cam1"/></tt:Source>'
        '<tt:Data><tt:ElementItem Name="Location"><tt:GeoLocation lon="east" lat="1"/></tt:ElementItem></tt:Data>'
        "</tt:Message>")
    with pytest.raises(TransportError, match="malformed GeoLocation"):
        parse_message("tns1:Resource/VideoSource", message)


def test_enrolment_gives_up_on_a_device_that_trickles_its_answer_prov_1() -> None:
    """PROV-1: ``enroll`` (``cloud enroll``, the conformance kit's first SetUplink) asks the device its clock
    first; a device that trickles that answer ends the enrolment at its timeout with one line."""
    with hostile("drip") as url, pytest.raises(ExchangeTimeout, match="no whole answer within 1 s"):
        enroll(url, username="admin", password="pw", ca=make_ca(), remote_address="https://cloud.example/",
               timeout=1.0)
