"""Layer 5: one HTTP exchange of the VSS with a lower system reached by URL, bounded as a whole (SEC-1, GEN-1).

Theory of operation
-------------------
httpx's and requests' timeouts bound each read only: a lower system that sends
its answer — the head as much as the body — a byte now and then never trips
them and would hold the VSS's thread as long as it likes. Every exchange of the
VSS with a lower system reached by URL therefore goes through :func:`post`:
the gateway's forwarded operations (:class:`~.gateway.Forwarder`), the
``SerialNumber`` question of ``vss lower add`` (:mod:`.prefix`) and the zeep
clients of the resource mirrors and event forwarders (:class:`BoundedTransport`).

* **One deadline for the whole exchange.** A watchdog
  (:class:`threading.Timer`) runs from the start; when it fires it shuts the
  exchange's socket down, so the read that waits — for the head or the body —
  fails at once, the lower system sees the connection closed, and the
  exchange is :class:`ExchangeTimeout`. The socket is the one httpcore's
  ``trace`` extension reports connected (TCP, then TLS); a watchdog that fired
  before it was connected cuts it as soon as it is.
* **A connection per exchange.** The clients of :func:`lower_client` keep no
  connection alive, so every exchange connects and its socket is its own: a
  cut never hits another thread's exchange (the price is one TCP, or TLS,
  connect per exchange; on loopback a whole small exchange so took 1.7 ms).
* **A bounded answer.** The body is read as it arrives, at most ``max_bytes``
  (:class:`AnswerTooLong` past it: the connection is closed, the rest is
  never read).

httpx offers no whole-exchange timeout for its blocking client, and its async
client under ``asyncio.timeout`` would need an event loop in each caller (WSGI
worker threads, mirror threads, the CLI); hence the watchdog.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import httpx
import requests
from requests.structures import CaseInsensitiveDict
from zeep.transports import Transport

from ..errors import TransportError

__all__ = ["AnswerTooLong", "BoundedTransport", "ExchangeTimeout", "HttpAnswer", "lower_client", "post"]

#: httpcore trace events whose ``return_value`` is the exchange's connected stream (the last one counts).
_CONNECTED = frozenset({"connection.connect_tcp.complete", "connection.start_tls.complete"})


class ExchangeTimeout(TransportError):
    """The whole answer did not arrive within the deadline."""


class AnswerTooLong(TransportError):
    """The answer passed the byte budget."""


@dataclass(frozen=True)
class HttpAnswer:
    """The status, headers and whole body of a lower system's answer."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def lower_client(timeout: float) -> httpx.Client:
    """A client for :func:`post`: per-read ``timeout``, no redirects, no connection kept alive."""
    return httpx.Client(timeout=timeout, follow_redirects=False,
                        limits=httpx.Limits(max_keepalive_connections=0))


class _Watchdog:
    """Shuts the exchange's socket down once ``seconds`` have passed (see the module docstring)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Self:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's ``trace`` extension: note the connected socket (cut it if the deadline already passed)."""
        if event in _CONNECTED and info.get("return_value") is not None:
            with self._lock:
                self._socket = info["return_value"].get_extra_info("socket")
                expired = self.expired
            if expired:
                self._cut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            sock = self._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed: the exchange ended as the deadline passed
                pass


def post(client: httpx.Client, url: str, headers: Sequence[tuple[str, str]] | Mapping[str, str], body: bytes, *,
         timeout: float, max_bytes: int) -> HttpAnswer:
    """POST ``body`` to ``url`` and read the whole answer within ``timeout`` seconds and ``max_bytes`` bytes.

    :class:`ExchangeTimeout`, :class:`AnswerTooLong`, or a :class:`~..errors.TransportError` (cannot connect,
    the answer broke off), each one line."""
    watchdog = _Watchdog(timeout)
    late = ExchangeTimeout(f"no whole answer within {timeout:g} s")
    try:
        with watchdog, client.stream("POST", url, headers=headers, content=body,
                                     extensions={"trace": watchdog.trace}) as response:
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise AnswerTooLong(f"an answer longer than {max_bytes} bytes")
            if watchdog.expired:  # an answer without a length ends at the cut: it is not whole
                raise late
            return HttpAnswer(response.status_code, list(response.headers.multi_items()), bytes(data))
    except httpx.TimeoutException:
        raise late from None
    except httpx.HTTPError as exc:
        if watchdog.expired:
            raise late from None
        if isinstance(exc, httpx.ConnectError):
            raise TransportError(f"cannot connect ({type(exc).__name__})") from None
        raise TransportError(f"the answer broke off ({type(exc).__name__})") from None


class BoundedTransport(Transport):
    """zeep's transport whose answers are read by :func:`post`: within ``timeout`` in all and up to
    ``max_bytes`` (requests' own timeout bounds each read only, and it reads a body whole)."""

    def __init__(self, timeout: float, *, max_bytes: int) -> None:
        super().__init__(timeout=timeout, operation_timeout=timeout)  # type: ignore[no-untyped-call]
        self.max_bytes = max_bytes
        self.client = lower_client(timeout)

    def post(self, address: str, message: Any, headers: Any) -> requests.Response:
        answer = post(self.client, address, dict(headers), message, timeout=self.operation_timeout,
                      max_bytes=self.max_bytes)
        response = requests.Response()
        response.status_code = answer.status
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response.url = address
        response._content = answer.body
        return response
