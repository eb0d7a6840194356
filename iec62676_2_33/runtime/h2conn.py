"""Layer 4: serve the requests of one :class:`~..http2.server.H2ServerRole` (UPL-16, UPL-15).

One code path for every HTTP/2 server connection of the library: the
device's uplinks (:class:`~.wsgi_bridge.WsgiOnH2`, driven by the agent) and
the direct h2c ports (:class:`H2cConnection`, run by :mod:`.httpd`). The role
enforces the flood limits (rapid reset, PING/SETTINGS floods, ... see
:mod:`..http2.limits`); this module turns its events into
:class:`~.exchange.Exchange`\\ s for a :data:`~.exchange.Handler`.

Theory of operation
-------------------
* **Start early, skip the reset.** A handler starts on ``RequestReceived``,
  not at the end of the body, in a task of its own; the task begins after
  every event of the same read was handled, so a HEADERS + RST_STREAM pair
  never runs the application.
* **Bodies stream; budgets are the windows.** DATA goes into the exchange's
  :class:`~.body.BodyPipe` and is acknowledged (WINDOW_UPDATE) only when the
  application took it. So a stream holds at most ``initial_window_size``
  unread bytes and a connection at most ``connection_window_size`` (per-stream
  and per-connection budgets; ``budget`` counts them, ``peak`` included); a
  peer that sends beyond a window breaks flow control and h2 ends the
  connection (FLOW_CONTROL_ERROR). Padding is acknowledged on arrival.
* **Early answers.** When the handler is done before the body is complete,
  the rest is discarded without buffering (acknowledged on arrival), and once
  the response's END_STREAM is framed the stream is reset with NO_ERROR
  (RFC 9113 §8.1) so the client stops uploading.
* **Back-pressure out.** A response write returns once the stream has at
  most :data:`SEND_LOW_WATER` bytes queued in the role (the role frames as the
  peer's windows allow). A peer that keeps a stream's window shut for
  ``send_timeout`` seconds gets that stream reset (CANCEL), and an application
  waits at most ``body_timeout`` for body bytes, and at most ``body_deadline``
  (when given: the direct ports) for the whole body (408): a worker thread is
  never held forever by a client that stops reading, stops sending, or trickles.

:class:`H2cConnection` adds what a port open to anyone needs: a server-wide body
budget (the connection stops reading its socket while the budget is spent
and none of its applications waits for body bytes: TCP back-pressure does
the rest), a server-wide answer budget (see below), an idle deadline (GOAWAY
NO_ERROR after ``idle_timeout`` without a live request), and a send deadline (a
client that does not read its socket is disconnected).

**The answer budget.** An answer waits in the role while its client keeps the
stream's window shut (up to :data:`SEND_LOW_WATER` a stream for ``send_timeout``)
or does not read its socket (up to ``max_outbound_buffer`` a connection). Each
of those is bounded, but their product over every stream of every connection
was not: 128 streams on each of 1,024 connections held about 1.2 GiB of
GetServices answers. The connections of one server therefore charge what waits
in their roles to one answer budget (a :class:`~.body.BodyBudget`). While it is
spent, a connection that holds at least its share of it (``answer_share``: the
budget over the server's connection limit) has each new request stream refused
with RST_STREAM REFUSED_STREAM (RFC 9113 §8.7: not processed, safe to retry),
its application never run; a connection holding less is served, so a few
clients that take nothing cannot refuse everyone else. Answers already started
finish or meet their send deadline, which gives the budget back. A connection
keeps reading meanwhile: the WINDOW_UPDATEs that drain its answers arrive there.
Past the budget, each connection can add its share and what the requests of
one read produce before it is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from h2.errors import ErrorCodes

from ..errors import TransportError
from ..http2.limits import H2Limits
from ..http2.role import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from ..http2.server import H2ServerRole
from ..transport.base import ByteStream
from .body import READ_TIMEOUT, BodyBudget, BodyPipe, body_deadline
from .deadlines import Deadlines
from .exchange import ClientDisconnected, Exchange, Handler, RawHeaders, format_addr
from .h2driver import H2Driver

__all__ = ["SEND_LOW_WATER", "H2Exchange", "H2Streams", "H2cConnection"]

log = logging.getLogger(__name__)

#: A response write returns once at most this many bytes of its stream wait in the role.
SEND_LOW_WATER = 64 * 1024
#: Seconds a stream's response may wait for the peer's window before the stream is reset.
SEND_TIMEOUT = 30.0


class H2Exchange(Exchange):
    """One stream's request and response."""

    def __init__(self, streams: H2Streams, stream_id: int, **request: Any) -> None:
        super().__init__(**request)
        self.streams = streams
        self.stream_id = stream_id
        #: ``:protocol`` of an extended CONNECT (RFC 8441), else None.
        self.protocol: str | None = None

    async def _send_head(self, status: int, reason: bytes, headers: RawHeaders, body: bytes, end: bool) -> None:
        self.streams.role.send_response(self.stream_id, status, headers, body or None, end_stream=end)
        await self.streams.sent(self)

    async def _send_body(self, data: bytes, end: bool) -> None:
        self.streams.role.send_data(self.stream_id, data, end_stream=end)
        await self.streams.sent(self)

    def abort(self) -> None:
        self.streams.role.reset_stream(self.stream_id, ErrorCodes.INTERNAL_ERROR)
        self.streams.kick()
        self.lose("the response was aborted")


class H2Streams:
    """Dispatches the events of one server role to ``handler`` (see the module docstring).

    ``on_event``, ``writable`` (the driver's ``on_progress``) and ``cancel``
    (the connection is over) are called by whoever drives the role;
    ``kick()`` must wake that driver's writer. ``idle_changed(idle)`` is told
    when the last live request ends and when the first one starts. With
    ``answers``, what waits in the role is charged to that server-wide budget,
    and while it is spent new request streams are refused once this connection
    holds ``answer_share`` bytes of it.
    """

    def __init__(self, role: H2ServerRole, handler: Handler, *, kick: Callable[[], None],
                 client: tuple[str, int] | None = None, server: tuple[str, int] | None = None,
                 scheme: str = "https", budget: BodyBudget | None = None, send_timeout: float = SEND_TIMEOUT,
                 body_timeout: float = READ_TIMEOUT, body_deadline: float | None = None,
                 idle_changed: Callable[[bool], None] | None = None,
                 peercert_chain: tuple[bytes, ...] | None = None, answers: BodyBudget | None = None,
                 answer_share: int = 0) -> None:
        self.role = role
        self.handler = handler
        self.kick = kick
        self.client = client
        self.server = server
        self.scheme = scheme
        self.peercert_chain = peercert_chain
        #: In-flight request-body bytes of this connection (or of the server it belongs to).
        self.budget = budget if budget is not None else BodyBudget(role.limits.connection_window_size)
        self.send_timeout = send_timeout
        self.body_timeout = body_timeout
        self.body_deadline = body_deadline
        self.idle_changed = idle_changed
        self.answers = answers
        self.answer_share = answer_share
        #: What this connection has charged to ``answers``.
        self._charged = 0
        self._loop = asyncio.get_running_loop()
        self._exchanges: dict[int, H2Exchange] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: dict[int, asyncio.Future[None]] = {}
        self._pending_reset: set[int] = set()

    # ------------------------------------------------------------------ state

    @property
    def active(self) -> int:
        """Requests being served."""
        return len(self._tasks)

    @property
    def starving(self) -> bool:
        """An application of this connection waits for body bytes."""
        return any(ex.body.starving for ex in self._exchanges.values())

    @property
    def buffered(self) -> int:
        """Request-body bytes of this connection received and not yet read by an application."""
        return sum(ex.body.buffered for ex in self._exchanges.values())

    # ------------------------------------------------------------------ driver hooks

    def on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._start(event.stream_id, event.headers)
        elif isinstance(event, DataReceived):
            ex = self._exchanges.get(event.stream_id)
            padding = event.flow_controlled_length - len(event.data)
            if ex is None:
                padding = event.flow_controlled_length
            elif event.data:
                ex.body.feed(event.data)
            if padding:
                self.role.acknowledge(event.stream_id, padding)
        elif isinstance(event, StreamEnded):
            ex = self._exchanges.get(event.stream_id)
            if ex is not None:
                ex.body.end()
        elif isinstance(event, StreamReset):
            ex = self._exchanges.pop(event.stream_id, None)
            if ex is not None:
                if not event.remote and event.error_code == ErrorCodes.NO_ERROR:
                    # The role answered 413 itself: the body grew past max_body_size.
                    ex.body.fail("the request body is over the size limit", status=413)
                ex.lose("the stream was reset")
                self._wake_writer(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            self._lose_all("the connection ended")

    def writable(self) -> None:
        """The driver moved bytes: release waiting writers, reset finished uploads."""
        self._charge()
        role = self.role
        for stream_id in list(self._writers):
            if role.queued_outbound(stream_id) <= SEND_LOW_WATER or role.is_closed:
                self._wake_writer(stream_id)
        if self._pending_reset:
            self._reset_finished()

    def cancel(self) -> None:
        """The connection is over: every request loses its client; ASGI handlers are cancelled."""
        self._lose_all("the connection is closed")
        for task in list(self._tasks):
            task.cancel()
        if self.answers is not None:
            self.answers.release(self._charged)
            self._charged = 0

    def _charge(self) -> None:
        """Bring this connection's share of the answer budget up to date with its role."""
        if self.answers is not None:
            waiting = self.role.queued_outbound() + self.role.outbound_pending
            if waiting > self._charged:
                self.answers.charge(waiting - self._charged)
            elif waiting < self._charged:
                self.answers.release(self._charged - waiting)
            self._charged = waiting

    # ------------------------------------------------------------------ requests

    def _start(self, stream_id: int, headers: Sequence[tuple[str, str]]) -> None:
        if self.answers is not None and not self.answers.has_room and self._charged >= self.answer_share:
            log.debug("HTTP/2 stream %d refused: %d answer bytes wait for their clients, %d of them for this one",
                      stream_id, self.answers.used, self._charged)
            self.role.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self.kick()
            return
        pseudo: dict[str, str] = {}
        fields: list[tuple[str, str]] = []
        for name, value in headers:
            if name.startswith(":"):
                pseudo[name] = value
            else:
                fields.append((name, value))
        authority = pseudo.get(":authority")
        if authority and not any(name == "host" for name, _ in fields):
            fields.append(("host", authority))
        length = next((v for k, v in fields if k == "content-length"), None)
        method = pseudo.get(":method", "GET")
        path, _, query = pseudo.get(":path", "/").partition("?")
        pipe = BodyPipe(self._loop, self.budget, lambda n: self._acknowledge(stream_id, n),
                        length=int(length) if length is not None and length.isdigit() else None,
                        capacity=self.role.limits.initial_window_size, timeout=self.body_timeout,
                        deadline=body_deadline(method, path, self.body_deadline))
        # The scheme is the connection's, as on HTTP/1.1: a client's :scheme (any text) would otherwise
        # name the transport, and start every URL the application builds for it (XAddrs, references).
        ex = H2Exchange(self, stream_id, method=method, path=path, query=query,
                        headers=fields, http_version="2", scheme=self.scheme,
                        client=self.client, server=self.server, body=pipe, peercert_chain=self.peercert_chain)
        ex.protocol = pseudo.get(":protocol")
        self._exchanges[stream_id] = ex
        task = self._loop.create_task(self._serve(ex))
        self._tasks.add(task)
        if len(self._tasks) == 1 and self.idle_changed is not None:
            self.idle_changed(False)

    async def _serve(self, ex: H2Exchange) -> None:
        try:
            if not ex.gone:  # a reset in the same read as the request: never run it
                await self.handler(ex)
        finally:
            ex.body.discard()
            self._exchanges.pop(ex.stream_id, None)
            if ex.finished and not ex.gone and not ex.body.complete:
                self._pending_reset.add(ex.stream_id)
                self._reset_finished()
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            if not self._tasks and self.idle_changed is not None:
                self.idle_changed(True)

    def _acknowledge(self, stream_id: int, n: int) -> None:
        self.role.acknowledge(stream_id, n)
        self.kick()

    def _reset_finished(self) -> None:
        """RST_STREAM NO_ERROR for answered streams whose upload is unfinished, once END_STREAM is
        framed: nothing of the stream is queued and the role's outbound buffer was below its cap
        after its last pump (the pump frames a bare END_STREAM whenever it is below the cap)."""
        role = self.role
        if role.outbound_pending >= role.limits.max_outbound_buffer:
            return
        for stream_id in list(self._pending_reset):
            if role.queued_outbound(stream_id) == 0:
                self._pending_reset.discard(stream_id)
                role.reset_stream(stream_id, ErrorCodes.NO_ERROR)
                self.kick()

    async def sent(self, ex: H2Exchange) -> None:
        """After a response write: wait until the stream's queue is low (bounded by send_timeout)."""
        self.kick()
        self._charge()
        stream_id = ex.stream_id
        if self.role.queued_outbound(stream_id) <= SEND_LOW_WATER or self.role.is_closed:
            return
        waiter = self._writers[stream_id] = self._loop.create_future()
        try:
            await asyncio.wait_for(waiter, self.send_timeout)
        except TimeoutError:
            log.info("HTTP/2 stream %d: the peer took nothing for %g s; resetting it", stream_id, self.send_timeout)
            self.role.reset_stream(stream_id, ErrorCodes.CANCEL)
            self.kick()
            ex.lose("the peer did not read the response")
        finally:
            self._writers.pop(stream_id, None)
        if ex.gone:
            raise ClientDisconnected(f"{ex.describe()}: the client is gone")

    def _wake_writer(self, stream_id: int) -> None:
        waiter = self._writers.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lose_all(self, reason: str) -> None:
        for ex in self._exchanges.values():
            ex.lose(reason)
        self._exchanges.clear()
        self._pending_reset.clear()
        for stream_id in list(self._writers):
            self._wake_writer(stream_id)


# --------------------------------------------------------------------------- direct h2c port


class _GatedStream:
    """The connection's byte stream, read only while the server's body budget allows
    (or an application of this connection starves), written under a send deadline."""

    def __init__(self, stream: ByteStream, streams: H2Streams, deadlines: Deadlines, send_timeout: float) -> None:
        self._stream = stream
        self._streams = streams
        self._deadlines = deadlines
        self._send_timeout = send_timeout

    def _may_read(self) -> bool:
        return self._streams.budget.has_room or self._streams.starving or self._streams.role.is_closed

    async def read(self, max_bytes: int = 65536) -> bytes:
        if not self._may_read():
            await self._streams.budget.wait(self._may_read)
        return await self._stream.read(max_bytes)

    async def write(self, data: bytes) -> None:
        self._stream.write_nowait(data)
        await self.drain()

    def write_nowait(self, data: bytes) -> None:
        self._stream.write_nowait(data)

    def writelines(self, parts: Sequence[bytes]) -> None:
        self._stream.writelines(parts)

    async def drain(self) -> None:
        self._deadlines.arm("send", self._send_timeout)
        try:
            await self._stream.drain()
        finally:
            self._deadlines.clear("send")

    async def close(self) -> None:
        await self._stream.close()

    def abort(self) -> None:
        self._stream.abort()

    def extra(self, name: str, default: Any = None) -> Any:
        return self._stream.extra(name, default)

    @property
    def at_eof(self) -> bool:
        return self._stream.at_eof


class H2cConnection:
    """One direct HTTP/2 connection (prior knowledge): role, driver, deadlines."""

    def __init__(self, stream: ByteStream, handler: Handler, *, limits: H2Limits, budget: BodyBudget,
                 answers: BodyBudget, answer_share: int,
                 idle_timeout: float, send_timeout: float, body_timeout: float, body_deadline: float | None,
                 client: tuple[str, int] | None,
                 server: tuple[str, int] | None, scheme: str,
                 peercert_chain: tuple[bytes, ...] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.role = H2ServerRole(now=loop.time(), limits=limits)
        self.idle_timeout = idle_timeout
        self.draining = False
        self.over = False
        self.deadlines = Deadlines(loop, self._expired)
        self.streams = H2Streams(self.role, handler, kick=self._kick, client=client, server=server, scheme=scheme,
                                 budget=budget, send_timeout=send_timeout, body_timeout=body_timeout,
                                 body_deadline=body_deadline,
                                 idle_changed=self._idle_changed, peercert_chain=peercert_chain, answers=answers,
                                 answer_share=answer_share)
        self.stream = _GatedStream(stream, self.streams, self.deadlines, send_timeout)
        #: The role cut the connection off for flooding (GOAWAY ENHANCE_YOUR_CALM).
        self.flooded = False
        self.driver = H2Driver(self.stream, self.role, self._on_event, name=f"h2c {format_addr(client)}",
                               on_progress=self.streams.writable)

    async def run(self, initial: bytes) -> str:
        """Serve until the connection ends; returns why it ended."""
        self.deadlines.arm("idle", self.idle_timeout)
        try:
            return await self.driver.run(initial)
        except TransportError as exc:
            return str(exc)
        finally:
            self.over = True
            self.deadlines.close()
            self.streams.cancel()

    def drain(self) -> None:
        """The server stops: GOAWAY once no request is live."""
        self.draining = True
        if not self.streams.active:
            self.driver.close("the server is shutting down")

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ConnectionTerminated) and event.local and event.error_code == ErrorCodes.ENHANCE_YOUR_CALM:
            self.flooded = True
        self.streams.on_event(event)

    def _kick(self) -> None:
        self.driver.kick()

    def _idle_changed(self, idle: bool) -> None:
        if self.over:
            return
        if not idle:
            self.deadlines.clear("idle")
        elif self.draining:
            self.driver.close("the server is shutting down")
        else:
            self.deadlines.arm("idle", self.idle_timeout)

    def _expired(self, name: str) -> None:
        if name == "idle":
            self.driver.close(f"idle for {self.idle_timeout:g} s")
        else:  # "send": the client does not read its socket
            log.info("%s: the client took nothing for a while; disconnecting", self.driver.name)
            self.stream.abort()

