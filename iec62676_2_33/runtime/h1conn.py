"""Layer 4: one HTTP/1.1 server connection on h11, with the limits a public port needs (issue 8).

Theory of operation
-------------------
h11 keeps the protocol state; this module moves bytes and enforces bounds:

* **Heads.** A request head (request line and headers) is at most
  ``max_head_size`` bytes (h11's ``max_incomplete_event_size``: 431, or 414
  when the request line alone did not end), its request line at most
  ``max_request_line`` bytes (414) and it has at most ``max_header_count``
  fields (431). A declared ``Content-Length`` over ``max_body_size`` is
  answered 413 before anything runs; a chunked body that grows past it fails
  the body (the application answers, 413 when nothing was sent yet).
* **Deadlines** (:class:`~.deadlines.Deadlines`): a head must be complete
  ``header_timeout`` seconds after the connection opened or the head began
  (slow-loris: 408, then close), the next request must begin within
  ``idle_timeout`` of the last answer (close), and the client must take what
  we write within ``send_timeout`` (disconnect). Body bytes the application
  waits for must come within ``body_timeout``, and the whole body within
  ``body_deadline`` of the head (the pipe's read fails with 408).
* **Bodies stream** (Content-Length or chunked) into the exchange's
  :class:`~.body.BodyPipe`: the socket is read for the body only while the
  pipe is below its capacity and the server's body budget has room, or the
  application waits for bytes. ``Expect: 100-continue`` is answered only when
  the application first asks for the body, so an early 413 costs no upload.
* **Keep-alive and pipelining.** One request at a time; the socket is not
  read while a request is served, so pipelined requests wait in the kernel
  (at most one read, 64 KiB, sits in h11's buffer). A request without a
  body, or whose body was read to its end before the response head went
  out, keeps the connection; otherwise the head says ``Connection: close``
  and, after the response, up to :data:`LINGER_BYTES` of the unread body are
  read and dropped (for at most :data:`LINGER_TIME`) so that closing does not
  reset the connection under the client before it read the answer.
* **Upgrade.** ``Upgrade: h2c`` is declined: the request is answered on
  HTTP/1.1 (RFC 9113 deprecates the h2c upgrade; HTTP/2 clients use prior
  knowledge, which :mod:`.httpd` detects).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import h11

from ..errors import TransportError
from ..transport.base import ByteStream
from .body import READ_CHUNK, BodyBudget, BodyPipe, body_deadline
from .deadlines import Deadlines
from .exchange import ClientDisconnected, Exchange, Handler, RawHeaders, format_addr, reason_phrase

if TYPE_CHECKING:
    from .httpd import HttpSettings

__all__ = ["LINGER_BYTES", "LINGER_TIME", "H1Connection", "H1Exchange"]

log = logging.getLogger(__name__)

#: Unread request-body bytes dropped after an early answer before the connection is closed.
LINGER_BYTES = 1 << 20
#: Seconds spent dropping them at most.
LINGER_TIME = 2.0

_CLOSE = (b"connection", b"close")


class H1Exchange(Exchange):
    """The request being served on an :class:`H1Connection`."""

    def __init__(self, conn: H1Connection, **request: Any) -> None:
        super().__init__(**request)
        self.conn = conn

    async def _send_head(self, status: int, reason: bytes, headers: RawHeaders, body: bytes, end: bool) -> None:
        conn = self.conn
        if conn.draining or not self.body.complete:
            headers = [*headers, _CLOSE]
        parts = [conn.h11.send(h11.Response(status_code=status, headers=headers, reason=reason))]
        await conn.write([*parts, *self._framed(body, end)], self)

    async def _send_body(self, data: bytes, end: bool) -> None:
        await self.conn.write(self._framed(data, end), self)

    def _framed(self, data: bytes, end: bool) -> list[Any]:
        conn = self.conn.h11
        parts: list[Any] = list(conn.send_with_data_passthrough(h11.Data(data=data)) or ()) if data else []
        if end:
            parts.append(conn.send(h11.EndOfMessage()))
        return parts

    def abort(self) -> None:
        self.conn.stream.abort()
        self.lose("the response was aborted")


class H1Connection:
    """Serves the requests of one HTTP/1.1 connection (see the module docstring)."""

    def __init__(self, stream: ByteStream, handler: Handler, *, settings: HttpSettings, budget: BodyBudget,
                 client: tuple[str, int] | None, server: tuple[str, int] | None, scheme: str,
                 peercert_chain: tuple[bytes, ...] | None = None) -> None:
        self.stream = stream
        self.peercert_chain = peercert_chain
        self.handler = handler
        self.settings = settings
        self.budget = budget
        self.client = client
        self.server = server
        self.scheme = scheme
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=settings.max_head_size)
        self.loop = asyncio.get_running_loop()
        self.deadlines = Deadlines(self.loop, self._expired)
        self.draining = False
        self.exchange: H1Exchange | None = None
        self._head_started = False
        self._broken = False
        self._sent_continue = False
        self._pump: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the request loop

    async def run(self, initial: bytes, head_due: float | None = None) -> None:
        """Serve requests until the connection should close; ``initial`` are bytes already read, ``head_due``
        the loop time by which the first head must be complete (default: ``header_timeout`` from now): the
        server that read ``initial`` already spent part of that time."""
        try:
            due = self.settings.header_timeout if head_due is None else max(0.0, head_due - self.loop.time())
            self.deadlines.arm("head", due)
            if initial:
                self._head_started = True
                self.h11.receive_data(initial)
            while not self.draining:
                request = await self._next_request()
                if request is None:
                    return
                ex = await self._admit(request)
                if ex is None or not await self._serve(ex) or self.draining:
                    return
                self.h11.start_next_cycle()
                self._head_started = False
                self.deadlines.arm("idle", self.settings.idle_timeout)
        finally:
            self.deadlines.close()

    def drain(self) -> None:
        """The server stops: close now when idle, else after the current response."""
        self.draining = True
        if self.exchange is None:
            self._close_soon()

    async def _next_request(self) -> h11.Request | None:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                await self._refuse(self._head_error_status(exc), f"bad request: {exc}")
                return None
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.read(READ_CHUNK)
                except TransportError:
                    return None
                if data and not self._head_started:
                    self._head_started = True
                    self.deadlines.clear("idle")
                    self.deadlines.arm("head", self.settings.header_timeout)
                self.h11.receive_data(data)
                continue
            self.deadlines.clear("head")
            self.deadlines.clear("idle")
            return event if isinstance(event, h11.Request) else None  # else ConnectionClosed

    def _head_error_status(self, exc: h11.RemoteProtocolError) -> int:
        if exc.error_status_hint == 431 and b"\n" not in self.h11.trailing_data[0]:
            return 414  # the request line alone filled the head limit
        return exc.error_status_hint

    async def _admit(self, request: h11.Request) -> H1Exchange | None:
        """The exchange for ``request``, or ``None`` after a refusal (then the connection closes)."""
        settings = self.settings
        target = request.target
        if len(request.method) + len(target) + 11 > settings.max_request_line:
            await self._refuse(414, f"request line over {settings.max_request_line} bytes")
            return None
        if len(request.headers) > settings.max_header_count:
            await self._refuse(431, f"more than {settings.max_header_count} header fields")
            return None
        # h11 applies max_incomplete_event_size only while a head is incomplete: a whole head
        # that arrived in one read is measured here.
        if len(target) + sum(len(n) + len(v) + 4 for n, v in request.headers) > settings.max_head_size:
            await self._refuse(431, f"request head over {settings.max_head_size} bytes")
            return None
        headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in request.headers]
        declared = next((v for n, v in headers if n == "content-length"), None)
        length = int(declared) if declared is not None else None  # h11 checked it is one number
        if length is not None and length > settings.max_body_size:
            await self._refuse(413, f"request body over {settings.max_body_size} bytes")
            if not _expects_continue(headers):
                await self._linger()
            return None
        if declared is not None and any(n == "transfer-encoding" for n, _ in headers):
            # h11 frames such a body by its chunks; a front that went by Content-Length would read another request
            # into it (RFC 9112 §6.3: a server may refuse it, and must not keep the connection)
            await self._refuse(400, "Content-Length and Transfer-Encoding together")
            return None
        if not target.startswith(b"/") and target != b"*":
            origin = _origin_form(target, next((v for n, v in headers if n == "host"), None))
            if origin is None:
                await self._refuse(400, "a request target is a path, or an absolute URL naming the Host")
                return None
            target = origin
        path, _, query = target.decode("latin-1").partition("?")
        method = request.method.decode("latin-1")
        pipe = BodyPipe(self.loop, self.budget, length=length, timeout=settings.body_timeout,
                        deadline=body_deadline(method, path, settings.body_deadline))
        return H1Exchange(self, method=method, path=path, query=query, headers=headers,
                          http_version=request.http_version.decode("latin-1"), scheme=self.scheme,
                          client=self.client, server=self.server, body=pipe, peercert_chain=self.peercert_chain)

    async def _serve(self, ex: H1Exchange) -> bool:
        """Run the handler; ``True`` when the connection can take the next request."""
        self.exchange = ex
        self._sent_continue = False
        if self._body_events(ex.body):
            self._pump = self.loop.create_task(self._read_body(ex))
        try:
            await self.handler(ex)
        finally:
            ex.body.discard()
            self.exchange = None
            pump, self._pump = self._pump, None
            if pump is not None and not pump.done():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
        if ex.gone or self.h11.our_state not in (h11.DONE, h11.MUST_CLOSE):
            return False  # the response did not complete: nothing to protect
        if self.h11.their_state is not h11.DONE:  # the body was not read to its end
            if self._sent_continue or not _expects_continue(ex.headers):
                await self._linger()
            return False
        return self.h11.our_state is h11.DONE and not self._broken

    # ------------------------------------------------------------------ the request body

    def _body_events(self, pipe: BodyPipe) -> bool:
        """Hand the body events h11 has to the pipe; ``True`` when more bytes must be read."""
        try:
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    return True
                if isinstance(event, h11.Data):
                    pipe.feed(bytes(event.data))
                    if pipe.received > self.settings.max_body_size:
                        self._broken = True
                        pipe.fail(f"the request body is over {self.settings.max_body_size} bytes", status=413)
                        return False
                elif isinstance(event, h11.EndOfMessage):
                    pipe.end()
                    return False
                else:
                    raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in the request body")
        except h11.RemoteProtocolError as exc:
            self._broken = True
            pipe.fail(f"bad request body: {exc}", status=400)
            return False

    async def _read_body(self, ex: H1Exchange) -> None:
        """Read the socket for the body as the pipe wants it (a task beside the handler)."""
        pipe = ex.body
        conn = self.h11
        try:
            while True:
                await self.budget.wait(lambda: pipe.wants_more)
                if pipe.closed:
                    return
                if conn.they_are_waiting_for_100_continue:
                    await self.budget.wait(lambda: pipe.starving or pipe.closed)
                    if pipe.closed:
                        return
                    if conn.they_are_waiting_for_100_continue:
                        self._sent_continue = True
                        continue_ = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                        await self.write([conn.send(continue_)], ex)
                data = await self.stream.read(pipe.room)
                conn.receive_data(data)
                if not self._body_events(pipe):
                    return
        except (TransportError, ClientDisconnected) as exc:
            self._broken = True
            pipe.fail(f"reading the request body failed: {exc}")

    async def _linger(self) -> None:
        """Drop unread body bytes for a bounded time and amount before closing. Over plain TCP our
        side is shut down first, so a client that sent everything sees the end and closes at once."""
        self.deadlines.arm("linger", LINGER_TIME)
        dropped = 0
        try:
            half_close = getattr(self.stream, "write_eof", None)
            if half_close is not None:
                half_close()
            while dropped < LINGER_BYTES:
                data = await self.stream.read(READ_CHUNK)
                if not data:
                    break
                dropped += len(data)
        except (TransportError, OSError):  # the client reset the connection first (ENOTCONN)
            pass
        finally:
            self.deadlines.clear("linger")

    # ------------------------------------------------------------------ writing

    async def write(self, parts: list[Any], ex: Exchange) -> None:
        """Write and wait for the transport to drain, under the send deadline."""
        try:
            self.stream.writelines(parts)
            self.deadlines.arm("send", self.settings.send_timeout)
            await self.stream.drain()
        except TransportError as exc:
            ex.lose(str(exc))
            raise ClientDisconnected(f"{ex.describe()}: {exc}") from None
        finally:
            self.deadlines.clear("send")

    def _error_response(self, status: int, text: str) -> list[bytes]:
        """The bytes of a plain-text error answer that closes the connection (h11 allows one even
        in the middle of a head, or after the client broke the protocol)."""
        body = f"{text}\n".encode("utf-8", "replace")
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                   _CLOSE]
        log.debug("HTTP/1.1 client %s: %d %s", format_addr(self.client), status, text)
        try:
            return [self.h11.send(h11.Response(status_code=status, headers=headers, reason=reason_phrase(status))),
                    body]
        except h11.LocalProtocolError:
            return []

    async def _refuse(self, status: int, text: str) -> None:
        """Answer an unusable request (then the connection closes)."""
        try:
            self.stream.writelines(self._error_response(status, text))
            self.deadlines.arm("send", self.settings.send_timeout)
            await self.stream.drain()
        except TransportError:
            pass
        finally:
            self.deadlines.clear("send")

    # ------------------------------------------------------------------ deadlines

    def _expired(self, name: str) -> None:
        if name == "head":
            if self._head_started:
                try:
                    self.stream.writelines(self._error_response(408, "request head not complete in time"))
                except TransportError:
                    pass
            self._close_soon()
        elif name in ("idle", "linger"):
            self._close_soon()
        else:  # "send": the client does not read
            log.debug("HTTP/1.1 client %s: took nothing for %g s", format_addr(self.client), self.settings.send_timeout)
            if self.exchange is not None:
                self.exchange.lose("the client does not read")
            self.stream.abort()

    def _close_soon(self) -> None:
        """Close gracefully (what was written still goes out); pending reads see the end."""
        if self._closing is None:
            self._closing = self.loop.create_task(self.stream.close())


def _expects_continue(headers: list[tuple[str, str]]) -> bool:
    """The client waits for ``100 Continue`` before it sends the body."""
    return any(n == "expect" and v.lower() == "100-continue" for n, v in headers)


#: RFC 9112 §3.2.2 absolute-form: a scheme, ``://``, the authority, then the path and query (maybe none).
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)([^#]*)")


def _origin_form(target: bytes, host: str | None) -> bytes | None:
    """An absolute-form ``target`` as the path (and query) it names, when its authority is the ``Host``
    (RFC 9112 §3.2.2 lets the target's authority win; here a request that names two hosts is refused, so
    routing by ``Host`` and by the target cannot disagree); ``None`` for anything else that is no path
    (``/onvif://x/...`` is a path, not an absolute URL)."""
    found = _ABSOLUTE_FORM.fullmatch(target)
    if found is None or (host is not None and found.group(1).decode("latin-1").lower() != host.strip().lower()):
        return None
    rest = found.group(2)
    return rest if rest.startswith(b"/") else b"/" + rest
