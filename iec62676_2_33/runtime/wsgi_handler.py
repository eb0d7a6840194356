"""Layer 4: serve a WSGI application (PEP 3333) on an :class:`~.exchange.Exchange` (UPL-16).

One code path for the device's direct port (HTTP/1.1 and h2c) and its
uplinks (:mod:`.wsgi_bridge`). The application runs in the given bounded
executor (Spyne and SQLite block); the event loop only moves bytes.

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
  gets a ``content-length``); each hand-over returns when the connection can
  take more, so a client that does not read holds the worker, not memory.
* A client that goes away while the application reads or writes shows as a
  :class:`~.body.BodyError` / :class:`~.exchange.ClientDisconnected`
  (``OSError``) in the application; it is logged at debug level, never with a
  traceback. A failure of the application itself is logged with its
  traceback and answered 500 (or the stream/connection is aborted when the
  response had started).
* Header names with ``_`` are not passed: ``X_Forwarded_Host`` and
  ``X-Forwarded-Host`` would both become ``HTTP_X_FORWARDED_HOST``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from typing import Any
from urllib.parse import unquote

from .body import BodyError, WsgiInput
from .exchange import ClientDisconnected, Exchange

__all__ = ["CHUNK", "WsgiApp", "WsgiHandler"]

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: Response bytes collected in the worker before they are handed to the loop.
CHUNK = 64 * 1024


class WsgiHandler:
    """Serves exchanges with ``app`` (an :data:`~.exchange.Handler`).

    ``extra_environ()`` adds keys to every environ (the uplink adds its
    UserLevel); ``executor`` is where the application runs (``None``: the
    loop's default executor).
    """

    def __init__(self, app: WsgiApp, *, executor: Executor | None = None,
                 extra_environ: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.app = app
        self.executor = executor
        self.extra_environ = extra_environ

    async def __call__(self, ex: Exchange) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self._run, ex, loop)
        except (BodyError, ClientDisconnected) as exc:
            log.debug("%s: %s", ex.describe(), exc)
            status = exc.status if isinstance(exc, BodyError) else None
            await _answer_error(ex, status or 400, str(exc))
        except Exception:
            log.exception("the application failed on %s", ex.describe())
            await _answer_error(ex, 500, "internal error")

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
            if name == "content-type":
                env["CONTENT_TYPE"] = value
            elif name != "content-length" and "_" not in name:
                key = "HTTP_" + name.upper().replace("-", "_")
                env[key] = f"{env[key]},{value}" if key in env else value
        if self.extra_environ is not None:
            env.update(self.extra_environ())
        return env

    # ------------------------------------------------------------------ worker thread

    def _run(self, ex: Exchange, loop: asyncio.AbstractEventLoop) -> None:
        if ex.gone:
            return  # reset before a worker was free: do not run the application at all
        out = _Responder(ex, loop)
        result = self.app(self.environ(ex), out.start_response)
        try:
            for chunk in result:
                out.write(chunk)
            out.finish()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


class _Responder:
    """The worker thread's side of one response: ``start_response``, buffering, hand-over."""

    def __init__(self, ex: Exchange, loop: asyncio.AbstractEventLoop) -> None:
        self.ex = ex
        self.loop = loop
        self.head: tuple[int, bytes, list[tuple[str, str]]] | None = None
        self.head_handed = False
        self.parts: list[bytes] = []
        self.size = 0

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
            if self.size >= CHUNK:
                self._hand(end=False)

    def finish(self) -> None:
        if self.head is None:
            raise RuntimeError("the WSGI application returned without calling start_response()")
        self._hand(end=True)

    def _hand(self, *, end: bool) -> None:
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts, self.size = [], 0
        head = None if self.head_handed else self.head
        self.head_handed = True
        asyncio.run_coroutine_threadsafe(_deliver(self.ex, head, data, end), self.loop).result()


async def _deliver(ex: Exchange, head: tuple[int, bytes, list[tuple[str, str]]] | None,
                   data: bytes, end: bool) -> None:
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
