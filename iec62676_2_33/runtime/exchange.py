"""Layer 4: one HTTP request and its response, whatever the connection (HTTP/1.1 or HTTP/2).

An :class:`Exchange` is what the connection code (:mod:`.h1conn`,
:mod:`.h2conn`) hands to an application adapter (:mod:`.wsgi_handler`,
:mod:`.asgi_handler`): the request head, its body as a streaming
:class:`~.body.BodyPipe`, and a response API that applies back-pressure.
The adapters are written once against it; the connections implement
``_send_head``/``_send_body``/``abort``.

Response head rules, applied here for both protocols:

* the head is held back until the first body bytes (or the end) are written,
  so a response written in one piece gets a ``content-length`` instead of
  chunked framing;
* hop-by-hop headers (``connection``, ``transfer-encoding``, ...) from the
  application are dropped: framing is the connection's business;
* the reason phrase is the application's, else the standard one for the
  status (``http.HTTPStatus``), never empty: ``h2load --h1`` counts a status
  line without a phrase as a failed request;
* a response to HEAD, or with status 204 or 304, carries no body bytes;
  only final responses (200-999) are sent.
"""

from __future__ import annotations

import asyncio
import http
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable

from ..errors import LocalProtocolError, TransportError
from .body import BodyPipe

__all__ = ["ClientDisconnected", "Exchange", "Handler", "RawHeaders", "format_addr", "reason_phrase"]

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
                        b"te", b"http2-settings"})


class ClientDisconnected(TransportError, OSError):
    """The client is gone (its stream was reset or its connection closed): nobody to answer."""


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of ``status`` (``b"Unknown"`` for an unregistered code)."""
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


class Exchange(ABC):
    """One request/response (see the module docstring).

    Request: ``method``, ``path`` (raw, as sent, without the query),
    ``query`` (raw), ``headers`` (lower-case names, ``host`` included, no
    HTTP/2 pseudo-headers), ``http_version`` (``"1.0"``, ``"1.1"``, ``"2"``),
    ``scheme``, ``client``/``server`` addresses, ``body``; ``peercert_chain``:
    ``None`` when the connection is not TLS, else the client's verified
    certificate chain (DER, the client's own first; empty without one).
    """

    def __init__(self, *, method: str, path: str, query: str, headers: list[tuple[str, str]],
                 http_version: str, scheme: str, client: tuple[str, int] | None,
                 server: tuple[str, int] | None, body: BodyPipe,
                 peercert_chain: tuple[bytes, ...] | None = None) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.http_version = http_version
        self.scheme = scheme
        self.client = client
        self.server = server
        self.body = body
        self.peercert_chain = peercert_chain
        #: The response head went out.
        self.head_sent = False
        #: The response is complete.
        self.finished = False
        #: Nobody to answer any more: the stream was reset or the connection is gone.
        self.gone = False
        self._status = 0
        self._reason = b""
        self._head: RawHeaders = []
        self._started = False
        self._done: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ for adapters

    def start_response(self, status: int, headers: Iterable[tuple[bytes | str, bytes | str]],
                       reason: bytes | str = b"") -> None:
        """Set the response head; it goes out with the first :meth:`write`."""
        if self.head_sent:
            raise LocalProtocolError("the response head was already sent")
        if not 200 <= status <= 999:
            raise LocalProtocolError(f"status {status}: only final responses (200-999) can be sent")
        self._status = status
        self._reason = _raw(reason) or reason_phrase(status)
        self._head = [(name, _raw(value)) for name, value in ((_raw(n).lower(), v) for n, v in headers)
                      if name not in HOP_BY_HOP]
        self._started = True

    @property
    def response_started(self) -> bool:
        return self._started

    async def write(self, data: bytes, end: bool = False) -> None:
        """Send body bytes (the head first); returns when the connection can take more."""
        if self.gone:
            raise ClientDisconnected(f"{self.describe()}: the client is gone")
        if self.finished:
            raise LocalProtocolError("the response is already complete")
        if not self._started:
            raise LocalProtocolError("start_response() must come before the body")
        if self._no_body():
            data = b""
        if not self.head_sent:
            head = self._head
            if end and not self._no_body() and not any(name == b"content-length" for name, _ in head):
                head.append((b"content-length", str(len(data)).encode()))
            self.head_sent = True
            await self._send_head(self._status, self._reason, head, data, end)
        elif data or end:
            await self._send_body(data, end)
        if end:
            self._finish()

    async def respond(self, status: int, headers: Iterable[tuple[bytes | str, bytes | str]],
                      body: bytes) -> None:
        """A whole response at once."""
        self.start_response(status, headers)
        await self.write(body, end=True)

    async def wait_over(self) -> None:
        """Wait until the response is complete or the client is gone (ASGI ``http.disconnect``)."""
        if self.finished or self.gone:
            return
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._done)

    def describe(self) -> str:
        return f"{self.method} {self.path} from {format_addr(self.client)}"

    # ------------------------------------------------------------------ for connections

    def lose(self, reason: str) -> None:
        """The client went away: fail the body, wake whoever waits for the end."""
        if self.gone:
            return
        self.gone = True
        self.body.fail(reason)
        self._wake()

    def _finish(self) -> None:
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _no_body(self) -> bool:
        return self.method == "HEAD" or self._status in (204, 304)

    @abstractmethod
    async def _send_head(self, status: int, reason: bytes, headers: RawHeaders, body: bytes, end: bool) -> None:
        """Put the head (and ``body``) on the wire; wait while the connection is saturated."""

    @abstractmethod
    async def _send_body(self, data: bytes, end: bool) -> None:
        """Put body bytes on the wire; wait while the connection is saturated."""

    @abstractmethod
    def abort(self) -> None:
        """The response cannot be completed: reset the stream or close the connection."""


def format_addr(addr: tuple[str, int] | None) -> str:
    """``host:port`` (``[v6]:port``) for messages; ``?`` when unknown."""
    if addr is None:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: Serves one exchange to its end (the response complete, or the exchange aborted).
Handler = Callable[[Exchange], Awaitable[None]]
