"""Layer 4: the cloud side of the uplink — accept devices, authenticate them, and call
their services over the reversed HTTP/2 connection (UPL-2, UPL-3, UPL-4, UPL-11 … UPL-14,
UPL-15, UPL-16).

A device dials in over TLS; the listener reads its upgrade request (deadline
and 16 KiB cap), authenticates it (mTLS identity from the client certificate;
the access-token authenticator of :mod:`iec62676_2_33.security.jwt_auth`
plugs in the same way, and :class:`EitherAuthenticator` enables both on one
listener), answers ``101`` and becomes the HTTP/2 *client* on that
connection, sending the preface first. One port takes both upgrades: native
``Upgrade: h2c-reverse`` and ``Upgrade: websocket`` with subprotocol
``h2c-reverse`` (UPL-4), whose HTTP/2 bytes then travel in WebSocket binary
frames (:mod:`iec62676_2_33.transport.websocket`). The
device must answer with its SETTINGS before a deadline. A reconnect of the
same identity replaces the old channel.

VMS code calls :meth:`CloudListener.request` (or uses the zeep transport of
:mod:`.zeep_transport`) and watches :meth:`CloudListener.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import (
    AuthenticationError,
    Iec62676Error,
    LocalProtocolError,
    ProtocolError,
    TransportError,
)
from ..http2.client import H2ClientRole
from ..http2.limits import DEFAULT_LIMITS, H2Limits
from ..http2.role import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from ..sansio.admission import DEFAULT_ADMISSION, AdmissionLimits
from ..sansio.link import LinkMonitor
from ..sansio.upgrade import BadUpgradeRequest, UpgradeRequest, UpgradeServer
from ..transport.base import ByteStream
from ..transport.identity import peer_identity
from ..transport.tls import report_authenticated
from ..transport.websocket import check_websocket_request, websocket_accept
from .h2driver import H2Driver
from .lazy_event import LazyEvent

log = logging.getLogger(__name__)


class UnknownDevice(TransportError):
    """No device with that identity is connected (the proxy answers 404)."""


class AnswerTooLarge(TransportError):
    """The device's answer passed the caller's ``max_body`` (its stream was reset)."""


class UpgradeRejected(Iec62676Error):
    """The authenticator refused a device: ``status`` and a short public ``reason``."""

    def __init__(self, status: int, reason: str, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = list(headers)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


@dataclass(frozen=True)
class DeviceInfo:
    """What the cloud knows of a connected device (the proxy's ``GET /devices``)."""

    device_id: str
    peer: str
    connected_since: float
    auth_mode: str

    def as_json(self) -> dict[str, object]:
        return {"id": self.device_id, "peer": self.peer,
                "connected_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.connected_since)),
                "auth_mode": self.auth_mode}


@dataclass(frozen=True)
class DeviceEvent:
    kind: str  # "connected" | "disconnected"
    device: DeviceInfo
    reason: str | None = None


class Authenticator(Protocol):
    """Decides who a connecting device is (UPL-11 … UPL-14): ``(device_id, auth_mode)`` or raise."""

    async def authenticate(self, stream: ByteStream, request: UpgradeRequest) -> tuple[str, str]: ...


class MtlsAuthenticator:
    """UPL-13: the device is the subject of its verified client certificate (cn, serial or san)."""

    def __init__(self, identity: str = "cn") -> None:
        if identity not in ("cn", "serial", "san"):
            raise ValueError(f"identity must be cn, serial or san, not {identity!r}")
        self.identity = identity

    async def authenticate(self, stream: ByteStream, request: UpgradeRequest) -> tuple[str, str]:
        device_id = peer_identity(stream, self.identity)  # type: ignore[arg-type]
        if not device_id:
            raise UpgradeRejected(401, "a client certificate is required")
        return device_id, "mTLS"


class EitherAuthenticator:
    """mTLS and access tokens on one listener (UPL-13, UPL-14).

    A request that carries a bearer token (``Authorization`` or, for
    WebSocket, ``access_token``) is judged by *token* alone — a bad token is
    refused even when a client certificate came too; otherwise a verified
    client certificate is judged by *mtls*; with neither the answer is 401.
    The TLS server must then ask for client certificates without requiring
    them (``CERT_OPTIONAL``).
    """

    def __init__(self, mtls: Authenticator, token: Authenticator) -> None:
        self.mtls = mtls
        self.token = token

    async def authenticate(self, stream: ByteStream, request: UpgradeRequest) -> tuple[str, str]:
        query = urllib.parse.parse_qs(request.query, keep_blank_values=True)
        if request.authorization is not None or "access_token" in query:
            return await self.token.authenticate(stream, request)
        if stream.extra("peercert"):
            return await self.mtls.authenticate(stream, request)
        raise UpgradeRejected(401, "a client certificate or an access token is required",
                              headers=[("WWW-Authenticate", 'Bearer realm="iec62676-uplink"')])


@dataclass
class _Pending:
    future: asyncio.Future[tuple[int, list[tuple[str, str]]]]
    chunks: asyncio.Queue[bytes | BaseException | None] = field(default_factory=asyncio.Queue)
    status: int = 0
    sending: bool = True  # the device still takes request body bytes on this stream


class DeviceChannel:
    """One connected device: the HTTP/2 client role on its uplink.

    A request goes out in three steps, each a bounded wait: :meth:`open_stream` sends the
    head, :meth:`send` the body chunk by chunk under HTTP/2 flow control, :meth:`response`
    waits for the answer's head, whose body :meth:`body` then yields. :meth:`open` and
    :meth:`request` do the steps for a body held whole in memory.
    """

    def __init__(self, info: DeviceInfo, stream: ByteStream, *, limits: H2Limits, monitor: LinkMonitor,
                 settings_timeout: float | None = None,
                 on_ready: Callable[[DeviceChannel], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.info = info
        self.role = H2ClientRole(now=loop.time(), limits=limits)
        # Set after every read and write of the uplink (the role frames queued body bytes then)
        # and whenever a stream stops taking a body: wakes the senders waiting in send().
        self._progress = LazyEvent()
        self.driver = H2Driver(stream, self.role, self._on_event, monitor=monitor, name=f"device {info.device_id}",
                               on_progress=self._progress.set, cancel_reason="cloud shutting down")
        self.settings_seen = LazyEvent()
        # The device's first SETTINGS (UPL-15) is due within settings_timeout of run(); it calls on_ready.
        self._settings_timeout = settings_timeout
        self._settings_deadline: asyncio.TimerHandle | None = None
        self._on_ready = on_ready
        self._pending: dict[int, _Pending] = {}
        self._acks: dict[int, deque[int]] = {}
        self._capacity = LazyEvent()  # set whenever a stream of ours ends: a waiting request may go
        self._closed = False

    @property
    def device_id(self) -> str:
        return self.info.device_id

    @property
    def held_bytes(self) -> int:
        """Response bytes received from the device and not yet taken by their readers (each
        stream holds at most its HTTP/2 receive window of them)."""
        return sum(sum(queue) for queue in self._acks.values())

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RemoteSettingsChanged):
            if not self.settings_seen.is_set():
                self._ready()
        elif isinstance(event, ResponseReceived):
            pending = self._pending.get(event.stream_id)
            if pending is not None and not pending.future.done():
                status = int(dict(event.headers).get(":status", "0"))
                pending.future.set_result((status, [(k, v) for k, v in event.headers if not k.startswith(":")]))
        elif isinstance(event, DataReceived):
            pending = self._pending.get(event.stream_id)
            if pending is not None:
                pending.chunks.put_nowait(event.data)
            # Flow control: handed back when the consumer takes the chunk (see _take).
            if pending is None:
                self.role.acknowledge(event.stream_id, event.flow_controlled_length)
            else:
                self._unacked(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, StreamEnded):
            pending = self._pending.get(event.stream_id)
            if pending is not None:
                pending.chunks.put_nowait(None)
                self._stop_sending(pending)
                self._capacity.set()
        elif isinstance(event, StreamReset):
            self._fail(event.stream_id, TransportError(
                f"device {self.device_id} reset the stream (HTTP/2 error {event.error_code})" if event.remote else
                f"the answer of device {self.device_id} passed {self.role.limits.max_body_size} bytes "
                "(H2Limits.max_body_size); the stream was reset"))
        elif isinstance(event, ConnectionTerminated):
            self._fail_all(TransportError(f"uplink of device {self.device_id} ended: {event.reason or event.error_code}"))

    def _ready(self) -> None:
        """The device's first SETTINGS arrived: the uplink is up."""
        self.settings_seen.set()
        if self._settings_deadline is not None:
            self._settings_deadline.cancel()
            self._settings_deadline = None
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self)

    def _unacked(self, stream_id: int, n: int) -> None:
        self._acks.setdefault(stream_id, deque()).append(n)

    def _take_ack(self, stream_id: int) -> None:
        queue = self._acks.get(stream_id)
        if queue:
            self.role.acknowledge(stream_id, queue.popleft())
            if self.role.outbound_pending:  # h2 sends WINDOW_UPDATE only now and then
                self.driver.kick()

    def _stop_sending(self, pending: _Pending) -> None:
        """The device takes no more of this request's body (answered, reset or gone)."""
        pending.sending = False
        self._progress.set()

    def cancel(self, stream_id: int) -> None:
        """Forget a request: drop what is queued for it and reset its stream if still open."""
        pending = self._pending.pop(stream_id, None)
        if pending is not None:
            self._stop_sending(pending)
        self._acks.pop(stream_id, None)
        if not self.role.is_closed:
            self.role.reset_stream(stream_id)
            self.driver.kick()
        self._capacity.set()

    def _fail(self, stream_id: int, exc: BaseException) -> None:
        pending = self._pending.get(stream_id)
        if pending is None:
            return
        if not pending.future.done():
            pending.future.set_exception(exc)
        pending.chunks.put_nowait(exc)
        self._stop_sending(pending)
        self._capacity.set()

    def _fail_all(self, exc: BaseException) -> None:
        self._closed = True
        for stream_id in list(self._pending):
            self._fail(stream_id, exc)

    async def run(self, trailing: bytes) -> str:
        """Drive the uplink until it ends (``trailing``: the bytes read past the upgrade); returns why.

        Without the device's SETTINGS within ``settings_timeout`` the uplink is closed. A cancelled
        run still sends GOAWAY before the connection closes.
        """
        if self._settings_timeout is not None and not self.settings_seen.is_set():
            self._settings_deadline = asyncio.get_running_loop().call_later(
                self._settings_timeout, self.close, "no HTTP/2 SETTINGS from the device before the deadline")
        try:
            return await self.driver.run(trailing)
        finally:
            if self._settings_deadline is not None:
                self._settings_deadline.cancel()
                self._settings_deadline = None
            self._on_ready = None
            self._fail_all(TransportError(f"uplink of device {self.device_id} closed"))

    def close(self, reason: str) -> None:
        self.driver.close(reason)

    async def open_stream(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (), *,
                          end_stream: bool = False, content_length: int | None = None,
                          authority: str | None = None, timeout: float = 30.0,
                          protocol: str | None = None) -> int:
        """Send a request head (HEADERS); returns the stream id.

        ``end_stream`` ends the request with its head (no body); otherwise the body follows
        with :meth:`send`. ``content_length`` is declared unless ``headers`` have one. Waits,
        bounded, while all the streams the device allows are in use. ``protocol`` makes it an
        RFC 8441 extended CONNECT (``method`` CONNECT).
        """
        fields = list(headers)
        if content_length is not None and not any(k.lower() == "content-length" for k, _ in fields):
            fields.append(("content-length", str(content_length)))
        async with asyncio.timeout(timeout):
            while True:
                if self._closed or self.role.is_closed:
                    raise TransportError(f"uplink of device {self.device_id} is closed")
                self._capacity.clear()  # before trying, so an end in between is not missed
                try:
                    stream_id = self.role.send_request(method, path, fields, None, end_stream=end_stream,
                                                       authority=authority or self.device_id, protocol=protocol)
                    break
                except LocalProtocolError as exc:
                    if exc.status_hint != 503:
                        raise
                    await self._capacity.wait()
        self._pending[stream_id] = _Pending(future=asyncio.get_running_loop().create_future())
        self.driver.kick()
        return stream_id

    async def send(self, stream_id: int, data: bytes, *, end_stream: bool = False, timeout: float = 30.0) -> bool:
        """Send request body bytes on a stream of :meth:`open_stream`, under HTTP/2 flow control.

        The role queues ``data`` (referenced, not copied) and frames it as the device's stream
        and connection windows and the uplink's outbound buffer allow; this returns once all
        of it is framed (bounded wait), so a caller sending chunk by chunk holds one chunk per
        stream. False when the device takes no more body on the stream -- it answered
        completely, reset the stream (RFC 9113 §8.1: RST_STREAM NO_ERROR after an early
        answer) or the uplink ended: stop sending and read the :meth:`response`.
        """
        pending = self._pending.get(stream_id)
        if pending is None or not pending.sending:
            return False
        self.role.send_data(stream_id, data, end_stream)
        self.driver.kick()
        async with asyncio.timeout(timeout):
            while pending.sending and self.role.queued_outbound(stream_id):
                self._progress.clear()
                await self._progress.wait()
        return pending.sending

    async def response(self, stream_id: int, *, timeout: float = 30.0) -> tuple[int, list[tuple[str, str]]]:
        """The (status, headers) of the answer on an open stream (bounded wait); :meth:`body` yields its body.

        A failure (device reset the stream, uplink ended, deadline) resets the stream.
        """
        pending = self._pending.get(stream_id)
        if pending is None:
            raise TransportError(f"stream {stream_id} to device {self.device_id} is not open")
        try:
            async with asyncio.timeout(timeout):
                return await pending.future
        except BaseException:
            self.cancel(stream_id)
            raise

    async def open(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
                   body: bytes = b"", *, authority: str | None = None,
                   timeout: float = 30.0) -> tuple[int, int, list[tuple[str, str]]]:
        """Send a request whose body is in memory; returns (stream id, status, headers) once the
        response head is in (``timeout`` bounds the whole)."""
        async with asyncio.timeout(timeout):
            stream_id = await self.open_stream(method, path, headers, end_stream=not body,
                                               content_length=len(body) if body else None,
                                               authority=authority, timeout=timeout)
            try:
                if body:
                    await self.send(stream_id, body, end_stream=True, timeout=timeout)
                status, head = await self.response(stream_id, timeout=timeout)
            except BaseException:
                self.cancel(stream_id)
                raise
            return stream_id, status, head

    async def body(self, stream_id: int, *, timeout: float = 30.0) -> AsyncGenerator[bytes, None]:
        """The response body of an open stream, chunk by chunk (flow control follows the reader)."""
        pending = self._pending[stream_id]
        chunks = pending.chunks
        try:
            while True:
                # Chunks already queued are taken without a wait (one read of the uplink
                # often delivers several DATA frames); only an empty queue arms the timeout.
                if chunks.empty():
                    async with asyncio.timeout(timeout):
                        item = await chunks.get()
                else:
                    item = chunks.get_nowait()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                self._take_ack(stream_id)
                yield item
        finally:
            self.cancel(stream_id)

    async def open_rtsp(self, media_token: str) -> ByteStream:
        """An RTSP session to one media source through the uplink (STR-1): write the player's
        bytes, read the camera's (RTSP over WebSocket or over HTTP, see :mod:`.rtsp_front`)."""
        from .rtsp_front import open_rtsp_stream  # the tunnel module builds on this one

        return await open_rtsp_stream(self, media_token)

    async def request(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                      *, timeout: float = 30.0, max_body: int | None = None) -> HttpResponse:
        """One whole exchange within ``timeout`` seconds in all, head and body (a device that trickles its
        answer cannot hold the caller: :class:`TimeoutError`); an answer longer than ``max_body`` bytes
        resets the stream and raises :class:`AnswerTooLarge` as soon as it passes the limit (nothing more is
        buffered). Whatever ``max_body``, no answer passes ``H2Limits.max_body_size`` (16 MiB)."""
        async with asyncio.timeout(timeout):
            stream_id, status, head = await self.open(method, path, headers, body, timeout=timeout)
            parts, size = [], 0
            async with contextlib.aclosing(self.body(stream_id, timeout=timeout)) as chunks:  # closing cancels
                async for chunk in chunks:
                    size += len(chunk)
                    if max_body is not None and size > max_body:
                        raise AnswerTooLarge(f"the device's answer to {method} {path[:120]} exceeded {max_body} "
                                             "bytes")
                    parts.append(chunk)
        return HttpResponse(status=status, headers=head, body=b"".join(parts))


@dataclass
class ListenerSettings:
    """Deadlines and caps of every pre-HTTP/2 phase, and the cloud's link monitoring."""

    handshake_timeout: float = 10.0
    #: A client that sends no byte (no ClientHello) is dropped sooner: a ClientHello lost
    #: twice still arrives within 3 s (TCP retransmits after 1 s, then 2 s more).
    first_byte_timeout: float = 4.0
    #: Who may start a TLS handshake (per-source limits, known devices first): see its module.
    admission: AdmissionLimits = DEFAULT_ADMISSION
    upgrade_timeout: float = 10.0
    preface_timeout: float = 10.0
    max_head_bytes: int = 16384
    idle_ping_after: float = 20.0
    dead_after: float = 60.0
    limits: H2Limits = DEFAULT_LIMITS


class CloudListener:
    """Accepts uplinks and keeps a registry of live device channels."""

    def __init__(self, authenticator: Authenticator | None = None, *, settings: ListenerSettings | None = None,
                 path: str | None = None) -> None:
        self.authenticator: Authenticator = authenticator or MtlsAuthenticator()
        self.settings = settings or ListenerSettings()
        self.path = path
        self._channels: dict[str, DeviceChannel] = {}
        self._subscribers: set[asyncio.Queue[DeviceEvent]] = set()
        #: Called with every connect/disconnect event as it happens (the cluster registry's hook).
        self.observers: list[Callable[[DeviceEvent], None]] = []
        self._changed = LazyEvent()  # pulsed (set, then cleared) whenever a device comes or goes
        self.stats = {"upgrades": 0, "rejected": 0, "replaced": 0}

    # -- API for VMS code --------------------------------------------------------
    def devices(self) -> list[DeviceInfo]:
        return sorted((c.info for c in self._channels.values()), key=lambda d: d.device_id)

    def channel(self, device_id: str) -> DeviceChannel:
        channel = self._channels.get(device_id)
        if channel is None:
            raise UnknownDevice(f"device {device_id!r} is not connected")
        return channel

    async def request(self, device_id: str, method: str, path: str, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"", *, timeout: float = 30.0, max_body: int | None = None) -> HttpResponse:
        """Call the device over its uplink (UPL-16); ``max_body``: see :meth:`DeviceChannel.request`."""
        return await self.channel(device_id).request(method, path, headers, body, timeout=timeout,
                                                     max_body=max_body)

    async def open_rtsp(self, device_id: str, media_token: str) -> ByteStream:
        """An interleaved RTSP session to a media source of a connected device (STR-1):
        a byte stream; the RTSP requests may name any URL ending in ``/<media_token>``."""
        return await self.channel(device_id).open_rtsp(media_token)

    async def wait_for(self, device_id: str, *, timeout: float = 30.0) -> DeviceInfo:
        """Until the device is connected (bounded)."""
        async with asyncio.timeout(timeout):
            while device_id not in self._channels:
                await self._changed.wait()
        return self._channels[device_id].info

    async def events(self) -> AsyncIterator[DeviceEvent]:
        """Connect/disconnect events from now on."""
        queue: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def close_all(self, reason: str = "cloud shutting down") -> None:
        for channel in list(self._channels.values()):
            channel.close(reason)

    # -- the connection handler (pass to a TLS server) -------------------------
    async def handle(self, stream: ByteStream) -> None:
        peer = _peer(stream)
        accepted = await self._accept(stream, peer)
        if accepted is None:
            return
        # The upgrade's state (h11 connection, request head) went with _accept's frame: an
        # uplink holds only what it needs from here on.
        stream, device_id, mode, trailing = accepted
        loop = asyncio.get_running_loop()
        info = DeviceInfo(device_id=device_id, peer=peer, connected_since=time.time(), auth_mode=mode)
        monitor = LinkMonitor(loop.time(), idle_ping_after=self.settings.idle_ping_after,
                              dead_after=self.settings.dead_after)
        # The handler drives the uplink itself: no task of its own for the channel, none for the
        # SETTINGS wait (the channel registers itself through _register when they arrive).
        channel = DeviceChannel(info, stream, limits=self.settings.limits, monitor=monitor,
                                settings_timeout=self.settings.preface_timeout, on_ready=self._register)
        reason = "cloud shutting down"  # what stands if this handler is cancelled while waiting
        try:
            reason = await channel.run(trailing)
        except Exception as exc:
            log.exception("the uplink of device %s failed", device_id)
            reason = f"internal error: {exc}"
        finally:
            if channel.settings_seen.is_set():
                self._unregister(channel, reason)
            else:
                log.info("device %s from %s: %s", device_id, peer, reason)

    async def _accept(self, stream: ByteStream, peer: str) -> tuple[ByteStream, str, str, bytes] | None:
        """Read, authenticate and answer the upgrade (UPL-2, UPL-4, UPL-11 … UPL-14): the stream the
        HTTP/2 bytes travel on, the device's identity and auth mode, the bytes read past the
        upgrade; None when the device was refused (answered and closed)."""
        try:
            server, request = await self._read_upgrade(stream)
            websocket = check_websocket_request(request) if request.kind == "websocket" else None
            device_id, mode = await self.authenticator.authenticate(stream, request)
            self._check_identity(device_id, mode)
        except UpgradeRejected as exc:
            self.stats["rejected"] += 1
            log.info("upgrade from %s refused: %s %s", peer, exc.status, exc)
            await _send_and_close(stream, UpgradeServer().reject(exc.status, str(exc), headers=exc.headers,
                                                                 body=f"{exc}\n".encode()))
            return None
        except BadUpgradeRequest as exc:
            self.stats["rejected"] += 1
            log.info("bad upgrade request from %s: %s", peer, exc)
            await _send_and_close(stream, UpgradeServer().reject_error(exc))
            return None
        except (ProtocolError, AuthenticationError, TransportError, TimeoutError) as exc:
            self.stats["rejected"] += 1
            log.info("upgrade from %s failed: %s", peer, exc or "deadline passed")
            await stream.close()
            return None
        report_authenticated(stream)  # its source is a known device's now: admitted ahead of strangers
        if websocket is not None:  # UPL-4: the HTTP/2 bytes travel in binary frames
            stream = await websocket_accept(stream, websocket, trailing=server.trailing_data,
                                            label=f"device {device_id} at {peer}")
            trailing = b""
        else:
            await stream.write(server.accept())
            trailing = server.trailing_data
        return stream, device_id, mode, trailing

    def _check_identity(self, device_id: str, mode: str) -> None:
        """A reconnect replaces a channel only when it proves the identity the same way (UPL-13, UPL-14):
        a token whose subject equals a certificate's CN must not take that device's place."""
        current = self._channels.get(device_id)
        if current is not None and current.info.auth_mode != mode:
            raise UpgradeRejected(409, f"device identity {device_id!r} is connected with {current.info.auth_mode}; "
                                       f"it cannot be taken over with {mode}")

    async def _read_upgrade(self, stream: ByteStream) -> tuple[UpgradeServer, UpgradeRequest]:
        server = UpgradeServer(max_head_bytes=self.settings.max_head_bytes,
                               accepted_paths=None if self.path is None else (lambda p: p == self.path))
        async with asyncio.timeout(self.settings.upgrade_timeout):
            while True:
                data = await stream.read(self.settings.max_head_bytes + 1)
                if not data:
                    server.receive_eof()
                request = server.receive_data(data)
                if request is not None:
                    break
        self.stats["upgrades"] += 1
        return server, request

    def _register(self, channel: DeviceChannel) -> None:
        old = self._channels.get(channel.device_id)
        if old is not None:
            self.stats["replaced"] += 1
            old.close("replaced by a new connection of the same device")
        self._channels[channel.device_id] = channel
        log.info("device %s connected from %s (%s)", channel.device_id, channel.info.peer, channel.info.auth_mode)
        self._publish(DeviceEvent("connected", channel.info))
        self._changed.set()
        self._changed.clear()

    def _unregister(self, channel: DeviceChannel, reason: str) -> None:
        if self._channels.get(channel.device_id) is channel:
            del self._channels[channel.device_id]
        log.info("device %s disconnected: %s", channel.device_id, reason)
        self._publish(DeviceEvent("disconnected", channel.info, reason))
        self._changed.set()
        self._changed.clear()

    def _publish(self, event: DeviceEvent) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
        for observer in self.observers:
            observer(event)


def _peer(stream: ByteStream) -> str:
    peer = stream.extra("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "?")


async def _send_and_close(stream: ByteStream, data: bytes) -> None:
    try:
        await stream.write(data)
    except TransportError:
        pass
    await stream.close()
