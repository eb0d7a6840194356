"""Layer 4: serve a WSGI application (PEP 3333) on an :class:`~.exchange.Exchange` (UPL-16).

One code path for the device's direct port (HTTP/1.1 and h2c) and its
uplinks (:mod:`.wsgi_bridge`). The application runs in the given bounded
executor (Spyne and SQLite block) -- or, for the requests it declares quick,
on the event loop itself.

Theory of operation
-------------------
* ``wsgi.input`` is a :class:`~.body.WsgiInput` on the exchange's streaming
  body: ``read(n)`` blocks the worker thread until bytes arrive, and only what
  the application took is acknowledged to the client (HTTP/2 WINDOW_UPDATE,
  HTTP/1.1 further socket reads). ``CONTENT_LENGTH`` is set only when the
  client declared one; ``wsgi.input_terminated`` is True (reading to ``b""`` is
  always safe).
* The application starts as soon as the request head arrived, before its
  body; a request whose stream was reset before a worker picked it up is not
  run at all.
* The response is handed to the loop in pieces of at least :data:`CHUNK`
  bytes (a typical SOAP answer: one hand-over with head, body and end, so it
  gets a ``content-length``); each hand-over but the last returns when the
  connection can take more, so a client that does not read holds the worker,
  not memory. The last piece (at most about :data:`CHUNK` bytes) travels with
  the worker's "done": the worker is free at once and the loop writes it.
* **Two thread hand-overs per request, fewer in a burst.** The worker is given
  the request with ``executor.submit`` and tells the loop once, through the
  handler's inbox, with the last piece of the response (or the application's
  exception); one ``call_soon_threadsafe`` wakes the loop for everything that
  reaches the inbox before the loop empties it. Measured reason: on a 2-core VM
  each cross-thread wake-up cost about 100-150 us of CPU (futex, GIL hand-over,
  cache), and ``run_in_executor`` plus a waited hand-over per response plus a
  body-consumption report made five of them per SOAP call
  (``bench/bench_edge.py``, docs/benchmarks.md "Service edge").
* **Inline, by the application's choice.** An application object with a
  ``runs_inline(environ) -> bool`` method (or the ``inline`` argument) is asked,
  on the event loop, about each request whose body is already complete and at
  most :data:`~.body.DEFERRED_REPORT` bytes; when it says True the application runs
  right there, on the loop, with no thread hand-over at all, and its response is
  collected whole. Only for operations that never block (no waiting for events,
  no disk writes) and answer briefly: the loop serves every connection. The
  predicate gets the very environ the application will get, inline or in a
  worker; if it reads ``wsgi.input`` (to parse the body once), it must leave
  what it read, or its parse, in the environ for the application.
* A client that goes away while the application reads or writes shows as a
  :class:`~.body.BodyError` / :class:`~.exchange.ClientDisconnected`
  (``OSError``) in the application; it is logged at debug level, never with a
  traceback. A failure of the application itself is logged with its
  traceback and answered 500 (or the stream/connection is aborted when the
  response had started).
* Header names with ``_`` are not passed: ``X_Forwarded_Host`` and
  ``X-Forwarded-Host`` would both become ``HTTP_X_FORWARDED_HOST``. A
  repeated field is joined with commas, ``Content-Type`` too: a second one
  must not silently replace the first (the SOAP reader refuses the joined
  value rather than take either, so a front that reads the other one cannot
  disagree with the device about the charset).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from typing import Any
from urllib.parse import unquote

from .body import DEFERRED_REPORT, BodyError, WsgiInput
from .exchange import ClientDisconnected, Exchange

__all__ = ["CHUNK", "InlinePredicate", "WsgiApp", "WsgiHandler"]

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: ``environ -> True`` to run the application on the event loop (see the module docstring).
InlinePredicate = Callable[[dict[str, Any]], bool]
#: A response head as the worker hands it over: status, reason phrase, headers.
_Head = tuple[int, bytes, list[tuple[str, str]]]
#: What the worker's "done" carries: the head (unless already handed over) and the last bytes.
_Final = tuple[_Head | None, bytes]

#: Response bytes collected in the worker before they are handed to the loop.
CHUNK = 64 * 1024


class WsgiHandler:
    """Serves exchanges with ``app`` (an :data:`~.exchange.Handler`).

    ``extra_environ()`` adds keys to every environ (the uplink adds its
    UserLevel); ``executor`` is where the application runs (``None``: the
    loop's default executor); ``inline`` picks the requests that run on the
    loop instead (default: the application's ``runs_inline`` method, if any).
    """

    def __init__(self, app: WsgiApp, *, executor: Executor | None = None,
                 extra_environ: Callable[[], Mapping[str, Any]] | None = None,
                 inline: InlinePredicate | None = None) -> None:
        self.app = app
        self.executor = executor
        self.extra_environ = extra_environ
        self.inline: InlinePredicate | None = inline if inline is not None else getattr(app, "runs_inline", None)
        self._inbox: _Inbox | None = None

    async def __call__(self, ex: Exchange) -> None:
        try:
            final = await self._dispatch(ex)
            if final is not None:
                await _deliver(ex, final[0], final[1], True)
        except (BodyError, ClientDisconnected) as exc:
            log.debug("%s: %s", ex.describe(), exc)
            status = exc.status if isinstance(exc, BodyError) else None
            await _answer_error(ex, status or 400, str(exc))
        except Exception:
            log.exception("the application failed on %s", ex.describe())
            await _answer_error(ex, 500, "internal error")

    async def _dispatch(self, ex: Exchange) -> _Final | None:
        """Run the application (inline or in a worker); returns the response's last piece."""
        loop = asyncio.get_running_loop()
        if ex.gone:
            return None  # reset before it started: do not run the application at all
        body = ex.body
        environ: dict[str, Any] | None = None
        if self.inline is not None and body.complete and body.buffered <= DEFERRED_REPORT:
            environ = self.environ(ex)
            if self.inline(environ):
                return _Responder(ex, loop, inline=True).run(self.app, environ)
        inbox = self._inbox
        if inbox is None or inbox.loop is not loop:
            inbox = self._inbox = _Inbox(loop)
        done: asyncio.Future[_Final | None] = loop.create_future()
        if self.executor is not None:
            self.executor.submit(self._work, ex, inbox, done, environ)
        else:  # the default executor has no public handle: its own future is left alone
            loop.run_in_executor(None, self._work, ex, inbox, done, environ)
        return await done

    def environ(self, ex: Exchange) -> dict[str, Any]:
        host = next((v for k, v in ex.headers if k == "host"), "")
        name, _, port = host.rpartition(":") if host.rsplit(":", 1)[-1].isdigit() else (host, "", "")
        server = ex.server or ("", 0)
        env: dict[str, Any] = {
            "REQUEST_METHOD": ex.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(ex.path, encoding="latin-1"),
            "QUERY_STRING": ex.query,
            "SERVER_NAME": (name or host or server[0]).strip("[]"),
            "SERVER_PORT": port or str(server[1] or (443 if ex.scheme == "https" else 80)),
            "SERVER_PROTOCOL": "HTTP/2" if ex.http_version == "2" else f"HTTP/{ex.http_version}",
            "REMOTE_ADDR": ex.client[0] if ex.client else "",
            "REMOTE_PORT": str(ex.client[1]) if ex.client else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": ex.scheme,
            "wsgi.input": WsgiInput(ex.body),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if ex.body.length is not None:
            env["CONTENT_LENGTH"] = str(ex.body.length)
        for name, value in ex.headers:
            if name != "content-length" and "_" not in name:
                key = "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_")
                env[key] = f"{env[key]},{value}" if key in env else value
        if self.extra_environ is not None:
            env.update(self.extra_environ())
        return env

    # ------------------------------------------------------------------ worker thread

    def _work(self, ex: Exchange, inbox: _Inbox, done: asyncio.Future[_Final | None],
              environ: dict[str, Any] | None) -> None:
        """The worker's whole job: run the application (with the environ the inline predicate saw,
        if it was asked), then one hand-over to the loop."""
        final: _Final | None = None
        error: BaseException | None = None
        try:
            if not ex.gone:  # reset while it waited for a worker: do not run the application
                final = _Responder(ex, inbox.loop, inline=False).run(self.app, environ or self.environ(ex))
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
            error = exc
        inbox.put(done, final, error)


class _Inbox:
    """Outcomes of worker jobs on their way to the loop: one wake-up for all that arrive before
    the loop empties the inbox (a burst of requests finishing in a row wakes it once)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Future[_Final | None], _Final | None, BaseException | None]] = []

    def put(self, done: asyncio.Future[_Final | None], final: _Final | None, error: BaseException | None) -> None:
        """From a worker thread."""
        with self._lock:
            self._items.append((done, final, error))
            first = len(self._items) == 1
        if first:
            try:
                self.loop.call_soon_threadsafe(self._empty)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _empty(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for done, final, error in items:
            if done.done():  # the request's task was cancelled (its connection is over)
                continue
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(final)


class _Responder:
    """One response as the application produces it: ``start_response``, buffering, hand-overs.

    In a worker (``inline=False``) full pieces are handed to the loop and waited
    for (back-pressure); inline everything is collected. :meth:`run` returns the
    last piece either way.
    """

    def __init__(self, ex: Exchange, loop: asyncio.AbstractEventLoop, *, inline: bool) -> None:
        self.ex = ex
        self.loop = loop
        self.inline = inline
        self.head: _Head | None = None
        self.head_handed = False
        self.parts: list[bytes] = []
        self.size = 0

    def run(self, app: WsgiApp, environ: dict[str, Any]) -> _Final:
        result = app(environ, self.start_response)
        try:
            for chunk in result:
                self.write(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if self.head is None:
            raise RuntimeError("the WSGI application returned without calling start_response()")
        return self._take()

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and self.head_handed:
            raise exc_info[1].with_traceback(exc_info[2])
        code, _, reason = status.partition(" ")
        self.head = (int(code), reason.strip().encode("latin-1"), headers)
        return self.write

    def write(self, data: bytes) -> None:
        if self.head is None:
            raise RuntimeError("the WSGI application wrote before calling start_response()")
        if data:
            self.parts.append(bytes(data))
            self.size += len(data)
            if self.size >= CHUNK and not self.inline:
                head, piece = self._take()
                asyncio.run_coroutine_threadsafe(_deliver(self.ex, head, piece, False), self.loop).result()

    def _take(self) -> _Final:
        """The collected bytes, with the head the first time."""
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts, self.size = [], 0
        head = None if self.head_handed else self.head
        self.head_handed = True
        return head, data


async def _deliver(ex: Exchange, head: _Head | None, data: bytes, end: bool) -> None:
    ex.body.report_taken()  # the body bytes the worker read are released before the answer goes out
    if head is not None:
        ex.start_response(head[0], head[2], head[1])
    await ex.write(data, end)


async def _answer_error(ex: Exchange, status: int, text: str) -> None:
    """Answer ``status`` when nothing was sent yet; else the response is cut off."""
    if ex.gone or ex.finished:
        return
    if ex.head_sent:
        ex.abort()
        return
    body = f"{text}\n".encode()
    try:
        await ex.respond(status, [(b"content-type", b"text/plain; charset=utf-8")], body)
    except ClientDisconnected:
        pass
