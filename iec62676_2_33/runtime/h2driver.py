"""Layer 4: drive one sans-IO HTTP/2 role over one byte stream (both uplink ends).

The driver owns no protocol logic. It

* feeds bytes read from the stream (first the bytes read past the ``101``,
  UPL-3) to the role and hands the events to the owner's callback;
* writes what the role produces, one ``await stream.write`` at a time, so a
  peer that does not read slows us down instead of growing our memory;
* runs the link monitor's timers (UPL-7, UPL-8): PING when idle, close when
  nothing arrived for too long; the clock is the event loop's.

``kick()`` is called by the owner after it changed the role (a response, a
request, a PING) to wake the writer. ``run()`` may be awaited by the
connection's own handler (the cloud does: one task fewer per uplink); with a
``cancel_reason`` a cancelled run says GOAWAY before it closes the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import TransportError
from ..http2.role import ConnectionTerminated, Event, H2Role, PingAcknowledged
from ..sansio.link import CloseLink, LinkMonitor, SendPing
from ..transport.base import ByteStream
from .lazy_event import LazyEvent

log = logging.getLogger(__name__)

#: Bytes asked of the stream per read: all the TLS layer buffers at most (READ_HIGH_WATER).
READ_SIZE = 256 * 1024
#: Bytes (whole frames) taken from the role and written before the writer waits for the
#: stream to drain: what one write adds to the transport's buffer at most.
WRITE_SIZE = 256 * 1024


class H2Driver:
    """Bytes ↔ role ↔ events for one connection; ``run()`` returns when the connection is over."""

    def __init__(self, stream: ByteStream, role: H2Role, on_event: Callable[[Event], None], *,
                 monitor: LinkMonitor | None = None, name: str = "uplink",
                 on_progress: Callable[[], None] | None = None, cancel_reason: str | None = None) -> None:
        self.stream = stream
        self.role = role
        self.on_event = on_event
        self.monitor = monitor
        self.name = name
        self.on_progress = on_progress or (lambda: None)
        self.close_reason: str | None = None
        #: When set, a cancelled ``run()`` first ends the connection with GOAWAY and this reason.
        self.cancel_reason = cancel_reason
        self._loop = asyncio.get_running_loop()
        self._wake = LazyEvent()
        self._done = False
        self._timer: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return self._loop.time()

    def kick(self) -> None:
        """The role has (or may have) output: wake the writer."""
        self._wake.set()

    def close(self, reason: str, error_code: int = 0) -> None:
        """End the connection with GOAWAY; ``run()`` then returns."""
        if self.close_reason is None:
            self.close_reason = reason
        self.role.close(error_code, reason)
        self._done = True
        self.kick()

    async def run(self, initial: bytes = b"") -> str:
        """Serve the connection; returns why it ended."""
        self.role.initiate()
        self._arm_timer()
        writer = asyncio.create_task(self._writer(), name=f"{self.name} writer")
        reader: asyncio.Task[None] | None = None
        try:
            if initial:
                self._feed(initial)
            reader = asyncio.create_task(self._reader(), name=f"{self.name} reader")
            # The writer ends first only after close() (its GOAWAY is written) or when a write
            # failed: then the connection is over even if the peer keeps it open and silent.
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()
            elif writer.exception() is not None:
                raise writer.exception()  # type: ignore[misc]
        except TransportError as exc:
            self.close_reason = self.close_reason or str(exc)
        except asyncio.CancelledError:
            if self.cancel_reason is not None and not self._done:
                self.close(self.cancel_reason)  # the writer flushes the GOAWAY below
            raise
        finally:
            self._done = True
            self._wake.set()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if reader is not None and not reader.done():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            try:
                await asyncio.wait_for(writer, 5.0)
            except (TimeoutError, TransportError):
                writer.cancel()
            await self.stream.close()
        return self.close_reason or "connection closed"

    def _feed(self, data: bytes) -> None:
        now = self.now()
        if self.monitor is not None:
            self.monitor.data_received(now)
        for event in self.role.receive_data(data, now):
            if isinstance(event, PingAcknowledged) and self.monitor is not None:
                self.monitor.ping_acked(event.opaque, now)
            elif isinstance(event, ConnectionTerminated):
                self.close_reason = self.close_reason or (
                    f"HTTP/2 connection ended ({'by us' if event.local else 'by the peer'}):"
                    f" error {event.error_code} {event.reason}".rstrip())
                self._done = True
            self.on_event(event)
        self.on_progress()
        if self.role.outbound_pending or self._done:
            self.kick()  # only when there is something to write: no idle writer wake-up per read

    async def _reader(self) -> None:
        while not self._done:
            data = await self.stream.read(READ_SIZE)
            if not data:
                self.close_reason = self.close_reason or "the peer closed the connection"
                return
            self._feed(data)

    def _arm_timer(self) -> None:
        """Schedule the link monitor's next deadline (lazily: data arriving only moves it later,
        so a timer that fires early finds nothing due and re-arms; no per-read timeout)."""
        if self.monitor is None or self._done:
            return
        deadline = self.monitor.next_deadline()
        if deadline is not None and deadline != float("inf"):
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        assert self.monitor is not None
        self._timer = None
        if self._done:
            return
        for action in self.monitor.on_timer(self.now()):
            if isinstance(action, SendPing):
                if not self.role.is_closed:
                    self.role.ping(action.opaque)
                    self.kick()
            elif isinstance(action, CloseLink):
                log.info("%s: %s", self.name, action.reason)
                self.close(action.reason)
        self._arm_timer()

    async def _writer(self) -> None:
        while True:
            parts = self.role.data_to_send_parts(WRITE_SIZE)
            if parts:
                self.stream.writelines(parts)  # one flush for all frames, none joined first
                await self.stream.drain()
                self.on_progress()
                continue
            if self._done:
                return
            self._wake.clear()
            if self.role.outbound_pending:
                continue
            await self._wake.wait()
