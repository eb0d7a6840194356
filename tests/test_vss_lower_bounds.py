"""SEC-1 (every wait a deadline, every buffer a budget) on the VSS's exchanges with a lower system reached by URL:
a lower system that trickles its answer's head a byte at a time is cut off at the one deadline of the whole
exchange — for a forwarded operation and a merged list (ANX-B-1) and for the SerialNumber question of
``vss lower add`` (ADR-4) —
and the event-service client of the resource mirrors and event forwarders (EVT-1, ANX-B-4) refuses an answer over
the gateway's budget without reading it whole.

Real sockets on loopback: each lower system is a small server thread that records what it saw."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree
from vss_env import NS, add_lower, answer, seed, soap, start_vss

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.errors import ConfigurationError, TransportError
from iec62676_2_33.soap.fault import SoapFault
from iec62676_2_33.vss.gateway import MAX_ANSWER, Forwarder, VssContext
from iec62676_2_33.vss.lower import LowerStore, LowerSystem
from iec62676_2_33.vss.prefix import default_prefix
from iec62676_2_33.vss.runtime import VssOptions, lower_query_client

#: Bytes of head a trickling lower system sends at most (one every TRICKLE seconds) before it gives up itself.
TRICKLE_BYTES = 100
TRICKLE = 0.05
#: The answer of the oversized lower system: twice the gateway's budget.
HUGE = 2 * MAX_ANSWER
OWN = MediaSource(token="lobby", name="Lobby camera", rtsp_url="rtsp://127.0.0.1:9/lobby")


@dataclass
class Lower:
    """A hostile lower system on loopback: ``url`` and what it saw of its clients."""

    url: str
    closed_by_client: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    sent: int = 0


def _serve(mode: str) -> Iterator[Lower]:
    server = socket.create_server(("127.0.0.1", 0))
    lower = Lower(f"http://127.0.0.1:{server.getsockname()[1]}/onvif/event_service")

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(TRICKLE_BYTES):  # each byte well inside any per-read timeout, the whole head never
            readable, _, _ = select.select([conn], [], [], TRICKLE)
            if readable and not conn.recv(4096):
                lower.closed_by_client.set()
                return
            conn.sendall(b"X")

    def huge(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nContent-Length: %d\r\n\r\n" % HUGE)
        chunk = b" " * 65536
        while lower.sent < HUGE:
            conn.sendall(chunk)
            lower.sent += len(chunk)

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            try:
                conn.recv(65536)  # the request (small: one read)
                (trickle if mode == "trickle" else huge)(conn)
            except OSError:  # the client closed the connection while bytes were on their way
                lower.closed_by_client.set()
            finally:
                lower.done.set()

    stopping = threading.Event()
    handlers: list[threading.Thread] = []

    def run() -> None:  # every connection (a VSS also runs a mirror and a forwarder against its lower systems)
        server.settimeout(0.2)
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            handlers.append(threading.Thread(target=handle, args=(conn,), daemon=True))
            handlers[-1].start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield lower
    finally:
        stopping.set()
        thread.join(15)
        server.close()
        for handler in handlers:
            handler.join(15)


@pytest.fixture
def trickling() -> Iterator[Lower]:
    yield from _serve("trickle")


@pytest.fixture
def oversized() -> Iterator[Lower]:
    yield from _serve("huge")


def test_a_trickled_head_ends_the_forwarded_call_at_its_deadline(tmp_path: Path, trickling: Lower) -> None:
    """SEC-1, ANX-B-1, GEN-1: a lower system sending its answer's head a byte at a time (each read in time)
    gets Receiver/Action/LowerSystemTimeout for the forwarded operation, and its connection is closed."""
    lowers = LowerStore(tmp_path)
    context = VssContext(lowers, timeout=0.5)
    forwarder = Forwarder(context)
    lower = LowerSystem(prefix="slow", url=trickling.url.replace("event_service", "device_service"))
    operation = etree.Element("{http://www.onvif.org/ver20/media/wsdl}GetProfiles")
    try:
        with pytest.raises(SoapFault) as raised:
            forwarder.call(lower, "/onvif/media2_service", operation, ["vss"])
    finally:
        forwarder.close()
        context.close()
        lowers.close()
    assert raised.value.subcodes == ("Action", "LowerSystemTimeout")
    assert raised.value.reason == "lower system slow did not answer within 0.5 s"
    assert trickling.done.wait(10)
    assert trickling.closed_by_client.is_set()


def test_a_trickled_head_ends_the_prefix_question_at_its_deadline(trickling: Lower) -> None:
    """SEC-1, ADR-4: ``vss lower add`` without ``--prefix`` asking a lower system that trickles its head is
    one line asking for ``--prefix`` once the deadline passed, and the connection is closed."""
    with pytest.raises(ConfigurationError) as raised:
        default_prefix(url=trickling.url.replace("event_service", "device_service"), timeout=0.5)
    assert "no whole answer within 0.5 s" in str(raised.value)
    assert str(raised.value).endswith("pass --prefix P")
    assert "\n" not in str(raised.value)
    assert trickling.done.wait(10)
    assert trickling.closed_by_client.is_set()


def test_the_mirror_client_refuses_an_answer_over_the_budget(tmp_path: Path, oversized: Lower) -> None:
    """SEC-1, EVT-1, ANX-B-4: the event-service client of a lower system's resource mirror and event forwarder
    refuses a CreatePullPointSubscription answer of twice ``MAX_ANSWER`` bytes with one line, and closes the
    connection before the lower system could send it whole."""
    lowers = LowerStore(tmp_path)
    context = VssContext(lowers, timeout=5)
    try:
        client = lower_query_client(context, LowerSystem(prefix="big", url=oversized.url))
        with pytest.raises(TransportError, match=f": an answer longer than {MAX_ANSWER} bytes$"):
            client.subscribe()
    finally:
        context.close()
        lowers.close()
    assert oversized.done.wait(10)
    assert oversized.closed_by_client.is_set()
    assert oversized.sent < HUGE


def test_a_trickling_lower_system_is_left_out_of_a_merged_list(tmp_path: Path, trickling: Lower) -> None:
    """SEC-1, ANX-B-1, GEN-1: Media2 GetProfiles on a VSS whose lower system trickles its head answers the VSS's
    own profiles, the lower system left out once the one deadline of its call passed (connection closed)."""
    seed(tmp_path / "vss", sources=(OWN,))
    add_lower(tmp_path / "vss", LowerSystem(prefix="slow", url=trickling.url.replace("event_service",
                                                                                     "device_service")))
    vss, base = start_vss(tmp_path / "vss", VssOptions(timeout=0.5))
    try:
        status, root = soap(base, "/onvif/media2_service", "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>")
    finally:
        vss.stop()
    assert status == 200
    assert [p.get("token") for p in answer(root).findall("tr2:Profiles", NS)] == ["lobby"]
    assert trickling.closed_by_client.wait(10)
