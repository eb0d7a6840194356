"""Conformance kit: the cases run against a cloud under test; the tool is the device (UPL-1 … UPL-3,
UPL-6 … UPL-8, UPL-13, UPL-15, UPL-16).

Each case dials the cloud afresh as a device would: TLS with the device
certificate (our :func:`~iec62676_2_33.transport.tls.connect_tls` and
:func:`~iec62676_2_33.transport.contexts.client_context`, verification always on),
the native upgrade (:class:`~iec62676_2_33.sansio.upgrade.UpgradeClient`) or,
for a ``wss`` address, the WebSocket handshake with subprotocol ``h2c-reverse``
(:func:`~iec62676_2_33.transport.websocket.websocket_connect`, UPL-4), with
``Authorization: Bearer`` when the engineer gives an access-token source
(:mod:`.tokensource`, UPL-14), then the HTTP/2 *server* role on the ``h2`` library, driven by hand so the
probe sees exactly what the cloud sends and when (the preface, PING ACKs,
requests). Requests are answered with a SOAP 1.2 fault
(``env:Receiver/ter:ActionNotSupported``): the cloud gets a well-formed
answer and the device behind the tool pretends to nothing. A case that needs
the cloud to send a request waits ``wait_request`` seconds and calls the
session's ``trigger`` hook first (a test or a script can make the cloud send
one); without a request it is skipped with that reason. ``CLOUD-HOSTILE``
sends batches of hostile frames of :mod:`.hostile` (those a device can send:
malformed frames and floods) on connections of their own, then checks that
the cloud still takes a well-behaved device.

A cloud under test cannot hold a probe: the upgrade and every ``pump`` --
its writes included, so a cloud that floods frames and reads nothing back
cannot block it -- end at the target's ``timeout`` (a cloud that never
answers the upgrade fails with one line saying so), and a probe keeps at
most :data:`KEEP_EVENTS` h2 events and answered requests.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import ConfigurationError, Iec62676Error, RemoteProtocolError, TransportError
from ..namespaces import SOAP12_CONTENT_TYPE
from ..pki import load_certs_pem
from ..sansio.upgrade import Switched, UpgradeClient, UpgradeRefused, parse_remote_address
from ..soap.fault import SoapFault
from ..transport.base import ByteStream
from ..transport.contexts import client_context
from ..transport.tls import TlsStream, connect_tls
from ..transport.websocket import websocket_connect
from .hostile import BATCHES
from .registry import Evidence, Registry
from .tokensource import TokenSource
from .wire import CLIENT_MAGIC, ERROR_CODES, SETTINGS, FrameScanner

CLOUD_CASES = Registry("cloud")
case = CLOUD_CASES.case

T = TypeVar("T")

#: h2 events, and answered requests, a probe remembers (the oldest are dropped: a cloud may flood frames).
KEEP_EVENTS = 4096

#: The answer to every request the cloud sends.
ANSWER = SoapFault(code="Receiver", subcodes=("ActionNotSupported",),
                   reason="the conformance tool answers no operation").to_envelope()


@dataclass
class CloudTarget:
    url: str  # the uplink address, https://HOST:PORT/PATH or wss://HOST:PORT/PATH
    cert: Path | None  # the device certificate the cloud accepts (None: the cloud takes access tokens only)
    key: Path | None
    ca: Path  # trust anchor(s) for the cloud's server certificate
    wait_request: float = 10.0
    timeout: float = 10.0
    #: Called with nothing once a probe is up and waits for a request (a test makes the cloud send one).
    trigger: Callable[[], None] | None = None
    #: Where the tool's device gets access tokens (UPL-14); None: no token variant.
    token: TokenSource | None = None


class CloudSession:
    def __init__(self, target: CloudTarget) -> None:
        if target.cert is None and target.token is None:
            raise ConfigurationError("give the device certificate (--cert, --key) or an access token source")
        if (target.cert is None) != (target.key is None):
            raise ConfigurationError("--cert and --key go together")
        self.target = target
        self.address = parse_remote_address(target.url)
        pems = [c.public_bytes(Encoding.PEM) for c in load_certs_pem(target.ca)]
        self.anonymous = client_context(cafile_pems=pems)
        self.context = self.anonymous if target.cert is None or target.key is None else client_context(
            cafile_pems=pems, certfile_pem=target.cert.read_bytes(), keyfile_pem=target.key.read_bytes())
        self._token: str | None = None

    @property
    def websocket(self) -> bool:
        """The uplink address is ``wss``: every probe dials with the WebSocket handshake (UPL-4)."""
        return self.address.scheme == "wss"

    async def bearer(self) -> str | None:
        """The access token every probe presents (fetched once per run), or None without a token source."""
        if self.target.token is None:
            return None
        if self._token is None:
            self._token = await self.target.token.fetch(self.target.timeout)
        return self._token

    def run(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run one probe's coroutine on a loop of its own (the cases are sequential code)."""
        return asyncio.run(fn())


@dataclass
class Probe:
    """One connection to the cloud, as a device."""

    session: CloudSession
    stream: ByteStream | None = None
    tls: TlsStream | None = None
    head: bytes = b""
    after: bytearray = field(default_factory=bytearray)  # bytes after the 101 (bounded)
    conn: h2.connection.H2Connection | None = None
    scanner: FrameScanner = field(default_factory=FrameScanner)
    events: deque[h2.events.Event] = field(default_factory=lambda: deque(maxlen=KEEP_EVENTS))
    answered: deque[str] = field(default_factory=lambda: deque(maxlen=KEEP_EVENTS))

    async def open(self, *, with_certificate: bool = True, token: str | None | Literal["session"] = "session",
                   target: str | None = None) -> None:
        """TLS (with the device certificate unless told otherwise), the upgrade the address asks for (native or
        WebSocket) with ``token`` as ``Authorization: Bearer`` (default: the session's token, if any), then the
        HTTP/2 server role. ``target`` replaces the request target (path and query)."""
        s = self.session
        address = s.address
        bearer = await s.bearer() if token == "session" else token
        headers = [("Authorization", f"Bearer {bearer}")] if bearer else []
        self.tls = await connect_tls(address.host, address.port, s.context if with_certificate else s.anonymous,
                                     server_hostname=address.host, timeout=s.target.timeout)
        self.stream = self.tls
        try:
            await self._upgrade(target, headers)
        except TimeoutError:
            raise TransportError(f"the cloud sent no whole answer to the upgrade within {s.target.timeout:g} s") \
                from None

    async def _upgrade(self, target: str | None, headers: list[tuple[str, str]]) -> None:
        """The upgrade the address asks for, within the target's timeout, then the HTTP/2 server role."""
        s = self.session
        address = s.address
        assert self.tls is not None and self.stream is not None
        trailing = b""
        async with asyncio.timeout(s.target.timeout):
            if s.websocket:
                tap = _HeadTap(self.tls)
                try:
                    self.stream = await websocket_connect(tap, host=address.host_header, target=target or address.target,
                                                          extra_headers=headers, label="the cloud")
                finally:
                    self.head = tap.head()
            else:
                url = s.target.url if target is None else f"https://{address.host_header}{target}"
                client = UpgradeClient(url, extra_headers=headers)
                await self.tls.write(client.initiate())
                raw = bytearray()
                while True:
                    data = await self.tls.read(16384)
                    raw += data[:16384]
                    if not data:
                        client.receive_eof()
                    event = client.receive_data(data)
                    if isinstance(event, Switched):
                        break
                trailing = event.trailing_data
                self.head = bytes(raw[:len(raw) - len(trailing)])
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                         header_encoding="utf-8"))
        self.conn.initiate_connection()
        await self.stream.write(self.conn.data_to_send())
        self._received(trailing)

    def _received(self, data: bytes) -> None:
        assert self.conn is not None
        if len(self.after) < 4096:
            self.after += data[:4096 - len(self.after)]
        if self.after.startswith(CLIENT_MAGIC):
            magic_seen = len(self.after) - len(data)
            self.scanner.feed(data[max(0, len(CLIENT_MAGIC) - magic_seen):], time.monotonic())
        if data:
            for event in self.conn.receive_data(data):
                self.events.append(event)
                if isinstance(event, h2.events.RequestReceived):
                    headers: dict[Any, Any] = dict(event.headers)
                    self.answered.append(f"{headers.get(':method')} {headers.get(':path')}")
                    self.conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", SOAP12_CONTENT_TYPE),
                                                             ("content-length", str(len(ANSWER)))])
                    self.conn.send_data(event.stream_id, ANSWER, end_stream=True)
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    async def pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Read, answer and write until ``until()`` holds (True) or ``timeout`` passes (False). The deadline
        covers the writes too: a cloud that stops reading while it floods cannot hold the probe."""
        assert self.stream is not None and self.conn is not None
        stream, conn = self.stream, self.conn
        try:
            async with asyncio.timeout(timeout):
                while not until():
                    if out := conn.data_to_send():
                        await stream.write(out)
                    data = await stream.read(65536)
                    if not data:
                        return until()
                    self._received(data)
                if out := conn.data_to_send():
                    await stream.write(out)
                return True
        except TimeoutError:
            return until()

    async def close(self, *, goaway: bool = False) -> None:
        if self.stream is None:
            return
        if goaway and self.conn is not None:
            self.conn.close_connection()
            try:
                await self.stream.write(self.conn.data_to_send())
            except Iec62676Error:
                pass
        await self.stream.close()


class _HeadTap:
    """A stream that keeps the first bytes read through it (the cloud's answer head to the WebSocket upgrade,
    which the handshake itself checks and does not hand back)."""

    def __init__(self, inner: ByteStream) -> None:
        self.inner = inner
        self.seen = bytearray()

    async def read(self, max_bytes: int = 65536) -> bytes:
        data = await self.inner.read(max_bytes)
        if len(self.seen) < 16384:
            self.seen += data[:16384 - len(self.seen)]
        return data

    def head(self) -> bytes:
        return bytes(self.seen).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if self.seen else b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _with_probe(s: CloudSession, ev: Evidence, body: Callable[[Probe], Awaitable[None]]) -> None:
    async def go() -> None:
        probe = Probe(s)
        try:
            try:
                await probe.open()
            except UpgradeRefused as exc:
                ev.fail(f"the cloud refused the upgrade: {exc}")
            except RemoteProtocolError as exc:
                ev.note("the cloud's answer to the upgrade", probe.head.decode("latin-1") or "(nothing)")
                ev.fail(f"the cloud's answer to the upgrade is not right: {exc}")
            ev.note("the cloud's answer to the upgrade", probe.head.decode("latin-1"))
            await body(probe)
        finally:
            await probe.close()

    s.run(go)


@case("CLOUD-TLS", "TLS 1.2 or later, a device certificate required", "UPL-6", "UPL-13", "UPL-1")
def tls(s: CloudSession, ev: Evidence) -> None:
    """With the device certificate the cloud switches protocols over TLS 1.2+; without any client
    certificate it must not (refused in TLS, or with 401/403)."""
    async def go() -> None:
        probe = Probe(s)
        await probe.open()
        assert probe.tls is not None
        version = probe.tls.extra("version")
        credentials = " and ".join(x for x in ("the device certificate" if s.target.cert else "",
                                               "an access token" if s.target.token else "") if x)
        ev.note(f"with {credentials}", f"{version}; {probe.head.splitlines()[0].decode('latin-1')}")
        await probe.close()
        ev.check(version in ("TLSv1.2", "TLSv1.3"), f"TLS version {version} is below 1.2")
        stranger = Probe(s)
        try:
            await stranger.open(with_certificate=False, token=None)
        except (Iec62676Error, TimeoutError) as exc:
            ev.note("without a client certificate or token", f"refused: {exc}")
            return
        finally:
            await stranger.close()
        ev.fail("the cloud switched protocols for a device without a client certificate"
                + (" or access token" if s.target.token else ""))

    s.run(go)


@case("CLOUD-101", "the 101 answer of the native upgrade", "UPL-2")
def switching(s: CloudSession, ev: Evidence) -> None:
    """``HTTP/1.1 101`` with ``Upgrade: h2c-reverse`` and ``Connection: Upgrade`` (the WebSocket form of a wss
    address is CLOUD-WSS's)."""
    if s.websocket:
        ev.skip("the address is wss: the 101 of the WebSocket handshake is checked by CLOUD-WSS")

    async def check(probe: Probe) -> None:
        lines = probe.head.decode("latin-1").split("\r\n")
        ev.check(lines[0].startswith("HTTP/1.1 101"), f"status line {lines[0]!r}")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        ev.check(fields.get("upgrade", "").lower() == "h2c-reverse",
                 f"Upgrade header {fields.get('upgrade')!r}, expected 'h2c-reverse'")
        ev.check("upgrade" in fields.get("connection", "").lower(),
                 f"Connection header {fields.get('connection')!r} lacks 'Upgrade'")

    _with_probe(s, ev, check)


@case("CLOUD-PREFACE", "the cloud sends the client preface first", "UPL-3", "UPL-15")
def preface(s: CloudSession, ev: Evidence) -> None:
    """After the 101 the cloud is the HTTP/2 client: the connection preface magic, then SETTINGS."""
    async def check(probe: Probe) -> None:
        await probe.pump(lambda: len(probe.after) >= len(CLIENT_MAGIC) + 9, s.target.timeout)
        ev.note("first bytes after the 101", repr(bytes(probe.after[:80])))
        ev.check(probe.after.startswith(CLIENT_MAGIC),
                 f"the cloud did not start with the HTTP/2 client preface: {bytes(probe.after[:40])!r}")
        frames = list(probe.scanner.frames)
        ev.check(frames and frames[0].type == SETTINGS, "the preface magic is not followed by SETTINGS")

    _with_probe(s, ev, check)


@case("CLOUD-PING", "the cloud answers PING", "UPL-7", "UPL-15")
def ping(s: CloudSession, ev: Evidence) -> None:
    """The device PINGs; the cloud answers PING ACK with the payload."""
    async def check(probe: Probe) -> None:
        opaque, acked = await _ping(probe, s.target.timeout)
        ev.note("PING", f"{opaque.hex()}: {'acknowledged' if acked else 'no ACK'}")
        ev.check(acked, f"no PING ACK with payload {opaque.hex()} within 5 s")

    _with_probe(s, ev, check)


async def _ping(probe: Probe, settings_timeout: float) -> tuple[bytes, bool]:
    """After the cloud's SETTINGS, a PING with a random payload: (the payload, whether its ACK came in 5 s)."""
    assert probe.conn is not None
    opaque = secrets.token_bytes(8)
    await probe.pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in probe.events),
                     settings_timeout)
    probe.conn.ping(opaque)
    acked = await probe.pump(lambda: any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == opaque
                                         for e in probe.events), 5.0)
    return opaque, acked


@case("CLOUD-REQUEST", "requests arrive over the uplink and take answers", "UPL-16", "UPL-15")
def requests(s: CloudSession, ev: Evidence) -> None:
    """The cloud sends a request on the reversed connection; the tool answers it; the cloud keeps the uplink."""
    async def check(probe: Probe) -> None:
        await probe.pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in probe.events),
                         s.target.timeout)
        if s.target.trigger is not None:
            await asyncio.get_running_loop().run_in_executor(None, s.target.trigger)
        got = await probe.pump(lambda: bool(probe.answered), s.target.wait_request)
        if not got:
            ev.skip(f"the cloud sent no request within {s.target.wait_request:g} s (make it call the device, or "
                    "raise --wait-request)")
        ev.note("requests answered", "\n".join(probe.answered))
        await probe.pump(lambda: False, 0.3)  # the answer goes out; a reset or GOAWAY would show now
        resets = [e for e in probe.events if isinstance(e, (h2.events.StreamReset, h2.events.ConnectionTerminated))]
        ev.check(not resets, f"the cloud reset after the answer: {resets[0]!r}" if resets else "")

    _with_probe(s, ev, check)


@case("CLOUD-RECONNECT", "the cloud takes the device back after GOAWAY", "UPL-8", "UPL-3")
def reconnect(s: CloudSession, ev: Evidence) -> None:
    """The device sends GOAWAY and closes, then dials again at once: the cloud switches protocols and sends
    its preface again."""
    async def go() -> None:
        first = Probe(s)
        await first.open()
        await first.pump(lambda: len(first.after) >= len(CLIENT_MAGIC), s.target.timeout)
        await first.close(goaway=True)
        ev.note("first connection", "GOAWAY sent and closed")
        second = Probe(s)
        try:
            try:
                await second.open()
            except UpgradeRefused as exc:
                ev.fail(f"the cloud refused the reconnection: {exc}")
            await second.pump(lambda: len(second.after) >= len(CLIENT_MAGIC), s.target.timeout)
            ev.note("reconnection", second.head.decode("latin-1"))
            ev.check(second.after.startswith(CLIENT_MAGIC), "no HTTP/2 preface on the reconnection")
        finally:
            await second.close()

    s.run(go)


#: The batches of :mod:`.hostile` a device can send a cloud (the HTTP/2 client): the rest open streams.
CLOUD_BATCHES = ("DATA on stream 0", "SETTINGS of 5 bytes", "20,000 SETTINGS frames", "20,000 PING frames")
#: Seconds the tool waits for the cloud's reaction to a batch.
HOSTILE_WINDOW = 3.0


async def _play(probe: Probe, data: bytes) -> tuple[bool, str]:
    """Send ``data`` raw on the probe's connection, then read for :data:`HOSTILE_WINDOW` seconds: (whether the
    cloud ended the connection, its GOAWAY as far as h2 could read it)."""
    assert probe.stream is not None and probe.conn is not None
    goaway = "none"
    try:
        async with asyncio.timeout(HOSTILE_WINDOW):
            for start in range(0, len(data), 65536):
                await probe.stream.write(data[start:start + 65536])
    except (TimeoutError, Iec62676Error, OSError):
        pass
    deadline = time.monotonic() + HOSTILE_WINDOW
    parsing = True
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            while chunk := await probe.stream.read(65536):
                if not parsing:
                    continue
                try:
                    for event in probe.conn.receive_data(chunk):
                        if isinstance(event, h2.events.ConnectionTerminated):
                            goaway = ERROR_CODES.get(event.error_code or 0, str(event.error_code))
                except h2.exceptions.H2Error:
                    parsing = False  # our h2 does not know what we sent: stop reading frames, keep reading bytes
        return True, goaway
    except (TimeoutError, Iec62676Error, OSError) as exc:
        return not isinstance(exc, TimeoutError), goaway


@case("CLOUD-HOSTILE", "survives hostile HTTP/2 frames from a device and takes the next one", "UPL-3", "UPL-15",
      "UPL-8")
def hostile(s: CloudSession, ev: Evidence) -> None:
    """Malformed frames (the cloud must end the connection, RFC 9113 §5.4.1) and SETTINGS and PING floods, each
    on a connection of its own; after every batch a well-behaved device connects and its PING is answered."""
    problems: list[str] = []
    batches = [b for b in BATCHES if b.name in CLOUD_BATCHES]

    async def go() -> None:
        for batch in batches:
            probe = Probe(s)
            try:
                await probe.open()
                closed, goaway = await _play(probe, batch.build())
            finally:
                await probe.close()
            ev.note(batch.name, f"{'the cloud ended the connection' if closed else 'still open'} within "
                                f"{HOSTILE_WINDOW:g} s; GOAWAY: {goaway}")
            if batch.must_close and not closed:
                problems.append(f"{batch.name}: the cloud did not end the connection within {HOSTILE_WINDOW:g} s "
                                "(a connection error, RFC 9113 §5.4.1)")
            legit = Probe(s)
            try:
                try:
                    await legit.open()
                except (UpgradeRefused, Iec62676Error, TimeoutError, OSError) as exc:
                    ev.fail(f"after {batch.name}: the cloud no longer takes a device ({type(exc).__name__}: "
                            f"{str(exc)[:200]})")
                _, acked = await _ping(legit, s.target.timeout)
                if not acked:
                    ev.fail(f"after {batch.name}: the cloud took a device but did not answer its PING within 5 s")
            finally:
                await legit.close()

    s.run(go)
    ev.check(not problems, "; ".join(problems))
