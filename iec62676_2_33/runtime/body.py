"""Layer 4: request bodies streamed from a connection to an application, with back-pressure
(UPL-16; issue 8: bounded bodies end to end).

Theory of operation
-------------------
A :class:`BodyPipe` carries one request body from the connection (producer,
always on the event loop) to the application (consumer: a WSGI worker thread
through :class:`WsgiInput`, or an ASGI coroutine through :meth:`BodyPipe.read_async`).
Nothing buffers a whole body:

* the producer :meth:`~BodyPipe.feed`\\ s bytes as the connection hands them
  over; the pipe charges them to a :class:`BodyBudget` (the in-flight bytes
  of a connection or of a whole server);
* the consumer takes bytes; only then does the pipe report them consumed
  (``on_consumed(n)``, on the loop): HTTP/2 acknowledges them (WINDOW_UPDATE),
  so a stream never holds more than its receive window; HTTP/1.1 reads the
  socket again only while the pipe is below its ``capacity``;
* when the application is done, :meth:`~BodyPipe.discard` drops whatever it did
  not read and reports it consumed; bytes that still arrive are reported at once
  and never stored;
* a worker thread that takes bytes of a body that is already *complete* does not
  wake the loop to report them: nothing more can arrive, so the report would
  change nothing but the counters. Up to :data:`DEFERRED_REPORT` such bytes are
  reported with the worker's next hand-over of response bytes
  (:meth:`~BodyPipe.report_taken`, so they are released before the answer goes
  out), by :meth:`~BodyPipe.discard`, or with the worker's next report; more are
  reported at once. Measured reason: each ``call_soon_threadsafe`` from a worker
  is a loop wake-up and a GIL hand-over, and a typical SOAP request (one complete
  body, read whole) paid one (``bench/bench_edge.py``, docs/benchmarks.md
  "Service edge").

The budget does not refuse bytes (a peer may send what its window allows);
the *readers* consult it: a connection reads more body bytes only while its
budget has room or while one of its consumers is waiting on an empty pipe
(:attr:`BodyPipe.starving`). The exemption keeps a running application from
waiting forever for bytes stuck behind a full budget held by requests whose
applications have not started yet; it costs at most one read per starving
consumer beyond the budget.

A consumer that waits ``timeout`` seconds on an empty pipe gets
:class:`BodyError` with status 408: a client that stops sending its body
holds a worker thread for at most that long (HTTP/1.1 and HTTP/2 alike).
A pipe made with a ``deadline`` also fails its consumer's read with 408 once
the body is not complete that many seconds after the request began: a client
that trickles a byte every few seconds never trips the per-read timeout, and
would otherwise hold a worker (and a stream) for as long as it likes. The
public ports set it (:func:`body_deadline`); the uplink's requests come from
the cloud's proxy, which bounds its clients itself. Only the POST channel of
RTSP over HTTP (a POST on the tunnel path, :func:`tunnel_channel`) is exempt: the
proxy counts every request on that path against its client's tunnel cap, so an
exempt body never escapes both bounds (a content type alone exempts nothing). A
server whose tunnels live on other paths (a VSS's ``/relay/<id>``) lifts the
deadline of a POST channel once its handler admitted it (:meth:`BodyPipe.lift_deadline`).
A failed pipe (the stream was reset, the connection is gone, the body grew
past its limit) makes the consumer's next read raise :class:`BodyError`, an
:class:`OSError` as WSGI servers conventionally raise for a broken input, with
``status`` hinting the answer (413, 408, or 400) when there is still somebody
to answer.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from ..errors import TransportError
from ..sansio.rtsp_tunnel import TUNNEL_PATH

__all__ = ["BODY_DEADLINE", "BodyBudget", "BodyError", "BodyPipe", "WsgiInput", "body_deadline",
           "tunnel_channel"]

#: Most bytes one read hands to the application (ASGI chunks are at most this size).
READ_CHUNK = 64 * 1024
#: Seconds a consumer waits for the next body bytes before its read fails with 408.
READ_TIMEOUT = 30.0
#: Seconds a whole request body may take on a public port (16 MiB, the largest body, in 60 s
#: needs 280 KB/s; a SOAP request is at most 1 MiB).
BODY_DEADLINE = 60.0
#: Bytes of a complete body a worker thread may take before it reports them to the loop. Only a
#: running application holds such bytes, so all of them are at most this many per worker thread
#: (64 workers on a device: 1 MiB of the 32 MiB body budget); a SOAP request is far smaller.
DEFERRED_REPORT = 16 * 1024


class BodyError(TransportError, OSError):
    """The request body cannot be read to its end (see ``status`` and the message)."""

    def __init__(self, msg: str, *, status: int | None = None) -> None:
        super().__init__(msg)
        self.status = status


def tunnel_channel(path: str) -> bool:
    """Whether a request path (after the proxy's ``/devices/<id>`` prefix, as the device sees it) is an
    RTSP-over-HTTP channel (STR-2): the proxy's per-client tunnel cap and :func:`body_deadline` both ask this."""
    return path.startswith(TUNNEL_PATH)


def body_deadline(method: str, path: str, seconds: float | None) -> float | None:
    """The whole-body deadline of a request (``seconds``), or ``None`` for the POST channel of RTSP over
    HTTP (STR-2: a POST on the tunnel path, :func:`tunnel_channel`): its body lasts as long as the session,
    the RTSP relay answers an unpaired one at once, and the proxy counts it against its client's tunnel
    cap (per-read ``timeout`` still applies). The content type decides nothing: a slow POST elsewhere that
    claims ``application/x-rtsp-tunnelled`` gets its deadline like any other (SEC-1)."""
    if seconds is None or (method == "POST" and tunnel_channel(path)):
        return None
    return seconds


class BodyBudget:
    """Body bytes held for others by one connection or server: request bodies received and not yet
    consumed, or (the HTTP server's answer budget, :mod:`.h2conn`) HTTP/2 answers waiting for clients
    that take nothing.

    ``used`` and ``peak`` are live counters for tests and operators.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a body budget must be at least 1 byte")
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def has_room(self) -> bool:
        return self.used < self.limit

    def charge(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        self.used -= n
        if self.used < self.limit:
            self.wake()

    def wake(self) -> None:
        """Let every waiter re-check its condition (room, a starving consumer, a closed pipe)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, ready: Callable[[], bool]) -> None:
        """Return once ``ready()`` holds; it is re-checked whenever the budget changes."""
        while not ready():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


class BodyPipe:
    """One request body between a connection and an application (see the module docstring).

    ``length`` is the declared length (``None`` when unknown); ``capacity`` is
    how much an HTTP/1.1 connection reads ahead of the consumer (HTTP/2 is
    bounded by the stream's window instead); ``on_consumed(n)``, when given,
    runs on the loop for every ``n`` bytes the consumer took or :meth:`discard`
    dropped (HTTP/2 acknowledges them; HTTP/1.1 needs no hook: the budget's
    wake-up tells its reader); ``timeout`` is how long a read waits for bytes;
    ``deadline`` (seconds from now, ``None``: none) is when the whole body must be in.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        budget: BodyBudget,
        on_consumed: Callable[[int], None] | None = None,
        *,
        length: int | None = None,
        capacity: int = READ_CHUNK,
        timeout: float = READ_TIMEOUT,
        deadline: float | None = None,
    ) -> None:
        self.loop = loop
        self.budget = budget
        self.on_consumed = on_consumed
        self.length = length
        self.capacity = capacity
        self.timeout = timeout
        self.deadline = deadline
        # loop.time() is time.monotonic() (asyncio's clock), which the worker threads read too.
        self._due = math.inf if deadline is None else loop.time() + deadline
        self.received = 0
        self.peak = 0
        self._lock = threading.Lock()
        # Made by the first consumer that has to wait (most bodies are complete before the
        # application reads them): a Condition per request cost more than the rest of the pipe.
        self._ready: threading.Condition | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._charged = 0  # fed and not yet reported consumed (loop side; lags _buffered by a hand-over)
        self._unreported = 0  # taken by a worker from a complete body, not yet reported (lock held)
        self._ended = False
        self._error: BodyError | None = None
        self._discarding = False
        self._starving = False
        self._async_waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ state

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken by the consumer."""
        return self._buffered

    @property
    def complete(self) -> bool:
        """The whole body arrived (it may not all have been read yet)."""
        return self._ended

    @property
    def closed(self) -> bool:
        """Nothing more will arrive: the body ended, failed, or is being discarded."""
        return self._ended or self._error is not None or self._discarding

    @property
    def error(self) -> BodyError | None:
        """Why the body cannot be read to its end, once it cannot."""
        return self._error

    @property
    def starving(self) -> bool:
        """The consumer waits on an empty pipe."""
        return self._starving

    @property
    def wants_more(self) -> bool:
        """An HTTP/1.1 connection should read more of the body now (module docstring)."""
        if self.closed:
            return True  # let the reader notice and stop
        if self._starving:
            return self.room > 0
        # Read ahead only for a quarter of the capacity at least: refilling every few bytes the
        # consumer took made reads (and the body's pieces) tiny.
        return self.room >= self.capacity // 4 and self.budget.has_room

    @property
    def room(self) -> int:
        """Bytes an HTTP/1.1 connection may read ahead now: ``capacity`` less what is charged (taken
        bytes stay charged until their hand-over to the loop ran, so the budget never lags)."""
        return self.capacity - self._charged

    # ------------------------------------------------------------------ producer (loop)

    def feed(self, data: bytes) -> None:
        n = len(data)
        if not n:
            return
        self.received += n
        if self._discarding or self._error is not None:
            self._report(n)
            return
        with self._lock:
            self._chunks.append(data)
            self._buffered += n
            self.peak = max(self.peak, self._buffered)
            self._starving = False
            self._notify()
        self._charged += n
        self.budget.charge(n)
        self._wake_async()

    def end(self) -> None:
        with self._lock:
            self._ended = True
            self._notify()
        self._wake_async()

    def fail(self, reason: str, *, status: int | None = None) -> None:
        """Nothing more will come: the consumer's next read raises :class:`BodyError`."""
        if self._ended or self._error is not None:
            return
        with self._lock:
            self._error = BodyError(reason, status=status)
            self._notify()
        self._wake_async()
        self.budget.wake()

    def lift_deadline(self) -> None:
        """No whole-body deadline from now on (the per-read ``timeout`` stays): for a handler that admitted
        the POST channel of RTSP over HTTP on a path :func:`body_deadline` does not know (a VSS's relay
        paths), whose body lasts as long as its session. Call it before reading."""
        with self._lock:
            self._due = math.inf

    def discard(self) -> None:
        """The application is done: drop what it did not read; later bytes are dropped on arrival."""
        with self._lock:
            self._discarding = True
            dropped, self._buffered = self._buffered, 0
            dropped += self._unreported
            self._unreported = 0
            self._chunks.clear()
            self._starving = False
            self._notify()
        self._wake_async()
        if dropped:
            self._consumed(dropped)
        else:
            self.budget.wake()

    def report_taken(self) -> None:
        """Report what a worker took from the complete body without telling the loop (on the loop)."""
        with self._lock:
            taken, self._unreported = self._unreported, 0
        if taken:
            self._consumed(taken)

    # ------------------------------------------------------------------ consumer

    def read(self, max_bytes: int = READ_CHUNK) -> bytes:
        """Up to ``max_bytes`` bytes, blocking (worker thread); ``b""`` at the end of the body."""
        with self._lock:
            deadline = min(time.monotonic() + self.timeout, self._due)
            while not self._chunks:
                data = self._final()
                if data is not None:
                    return data
                if not self._starving:
                    self._starving = True
                    self.loop.call_soon_threadsafe(self.budget.wake)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._time_out()
                if self._ready is None:
                    self._ready = threading.Condition(self._lock)
                self._ready.wait(left)
            data = self._take(max_bytes)
            report = self._unreported + len(data)
            if self._ended and report <= DEFERRED_REPORT:
                self._unreported, report = report, 0  # discard() reports it (module docstring)
            else:
                self._unreported = 0
        if report:
            self.loop.call_soon_threadsafe(self._consumed, report)
        return data

    async def read_async(self, max_bytes: int = READ_CHUNK) -> bytes:
        """Up to ``max_bytes`` bytes (event loop); ``b""`` at the end of the body."""
        while not self._chunks:
            data = self._final()
            if data is not None:
                return data
            if not self._starving:
                self._starving = True
                self.budget.wake()
            wait = min(self.timeout, self._due - self.loop.time())
            if wait <= 0:
                with self._lock:
                    raise self._time_out()
            self._async_waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self._async_waiter, wait)
            except TimeoutError:
                with self._lock:
                    raise self._time_out() from None
            finally:
                self._async_waiter = None
        with self._lock:
            data = self._take(max_bytes)
        self._consumed(len(data))
        return data

    def _notify(self) -> None:
        """Wake a consumer waiting in :meth:`read` (lock held)."""
        if self._ready is not None:
            self._ready.notify()

    def _time_out(self) -> BodyError:
        """The consumer waited ``timeout`` for bytes, or the ``deadline`` passed (lock held): the body
        fails with 408."""
        if time.monotonic() >= self._due:
            self._error = BodyError(f"the request body was not complete within {self.deadline:g} s", status=408)
        else:
            self._error = BodyError(f"no request body bytes for {self.timeout:g} s", status=408)
        self._starving = False
        return self._error

    def _final(self) -> bytes | None:
        """What a read returns on an empty pipe: ``b""`` at the end, an error, or ``None`` (wait)."""
        if self._error is not None:
            raise self._error
        if self._ended or self._discarding:
            return b""
        return None

    def _take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` from the front (lock held); pieces are joined only when several fit."""
        chunks = self._chunks
        first = chunks.popleft()
        if len(first) > max_bytes:
            data, rest = first[:max_bytes], first[max_bytes:]
            chunks.appendleft(rest)
        elif not chunks or len(first) == max_bytes:
            data = first
        else:
            parts, size = [first], len(first)
            while chunks and size < max_bytes:
                piece = chunks.popleft()
                if size + len(piece) > max_bytes:
                    chunks.appendleft(piece[max_bytes - size:])
                    piece = piece[:max_bytes - size]
                parts.append(piece)
                size += len(piece)
            data = b"".join(parts)
        self._buffered -= len(data)
        return data

    def _consumed(self, n: int) -> None:
        self._charged -= n
        self.budget.release(n)
        self._report(n)

    def _report(self, n: int) -> None:
        if self.on_consumed is not None:
            self.on_consumed(n)

    def _wake_async(self) -> None:
        waiter = self._async_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class WsgiInput:
    """``wsgi.input``: a file-like view of a :class:`BodyPipe`, read from the worker thread."""

    def __init__(self, pipe: BodyPipe) -> None:
        self._pipe = pipe
        self._pending = b""  # what readline() read past a line end

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._pending]
            self._pending = b""
            while chunk := self._pipe.read():
                parts.append(chunk)
            return b"".join(parts)
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        return self._pipe.read(size) if size else b""

    def readline(self, size: int | None = -1) -> bytes:
        limit = READ_CHUNK if size is None or size < 0 else size
        line = self._pending
        self._pending = b""
        while b"\n" not in line and len(line) < limit:
            chunk = self._pipe.read(READ_CHUNK)
            if not chunk:
                break
            line += chunk
        end = line.find(b"\n")
        cut = min(limit, end + 1 if end >= 0 else len(line))
        line, self._pending = line[:cut], line[cut:]
        return line

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line
