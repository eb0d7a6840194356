"""Layer 5: one HTTP exchange of a client, bounded as a whole: one deadline, one byte budget.

Theory of operation
-------------------
httpx's and requests' timeouts bound each read only: a server that sends its
answer -- the head as much as the body -- a byte now and then never trips
them and would hold the caller as long as it likes, and requests reads a body
whole, however long. Every exchange of the library's clients with a server
reached by URL therefore goes through :func:`post` (or, on an event loop,
:class:`AsyncBoundedTransport`): the zeep clients of :mod:`..client` and
:mod:`..query` by default, the VSS's forwarded operations
(:class:`~.vss.gateway.Forwarder`), the ``SerialNumber`` question of ``vss
lower add`` (:mod:`.vss.prefix`) and the VSS's resource mirrors and event
forwarders (:class:`BoundedTransport`), and the snapshot relay's GET from the
camera (:func:`request`, :mod:`.services.snapshot`).

* **One deadline for the whole exchange.** A watchdog
  (:class:`threading.Timer`) runs from the start; when it fires it shuts the
  exchange's socket down, so the read that waits -- for the head or the body --
  fails at once, the server sees the connection closed, and the
  exchange is :class:`ExchangeTimeout`. The socket is the one httpcore's
  ``trace`` extension reports connected (TCP, then TLS); a watchdog that fired
  before it was connected cuts it as soon as it is.
* **The caller's URL is the caller's error.** One httpx cannot send to (an IPv6
  host without brackets, a scheme other than http and https) is a
  :class:`~.errors.ConfigurationError` that says so, its user info never shown.
* **A connection per exchange.** The clients of :func:`exchange_client` keep no
  connection alive, so every exchange connects and its socket is its own: a
  cut never hits another thread's exchange (the price is one TCP, or TLS,
  connect per exchange; on loopback a whole small exchange so took 1.7 ms).
* **A bounded answer.** The body is read as it arrives, at most ``max_bytes``
  (:class:`AnswerTooLong` past it: the connection is closed, the rest is
  never read).

httpx offers no whole-exchange timeout for its blocking client, and its async
client under ``asyncio.timeout`` would need an event loop in each caller (WSGI
worker threads, mirror threads, the CLI); hence the watchdog. On an event loop
(:class:`AsyncBoundedTransport`) ``asyncio.timeout`` is that deadline.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import httpx
import requests
from requests.structures import CaseInsensitiveDict
from zeep.transports import AsyncTransport, Transport

from .errors import ConfigurationError, TransportError, shown_url

__all__ = ["AnswerTooLong", "AsyncBoundedTransport", "BoundedTransport", "ExchangeTimeout", "HttpAnswer", "NoAnswer",
           "exchange_client", "fetch", "post", "request"]

#: httpcore trace events whose ``return_value`` is the exchange's connected stream (the last one counts).
_CONNECTED = frozenset({"connection.connect_tcp.complete", "connection.start_tls.complete"})


class NoAnswer(TransportError):
    """No whole answer came: the server could not be reached, the answer broke off, or the deadline passed."""


class ExchangeTimeout(NoAnswer):
    """The whole answer did not arrive within the deadline."""


class AnswerTooLong(TransportError):
    """The answer passed the byte budget."""


@dataclass(frozen=True)
class HttpAnswer:
    """The status, headers and whole body of an answer."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def exchange_client(timeout: float, *, verify: ssl.SSLContext | bool = True, trust_env: bool = True) -> httpx.Client:
    """A client for :func:`post` and :func:`request`: per-read ``timeout``, no redirects, no connection kept alive;
    ``verify`` and ``trust_env`` (proxy variables, ``.netrc``) as httpx takes them (True: certifi's trust
    anchors)."""
    return httpx.Client(timeout=timeout, follow_redirects=False, verify=verify, trust_env=trust_env,
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

    :class:`ExchangeTimeout`, :class:`AnswerTooLong`, or :class:`NoAnswer` (cannot connect, the answer broke
    off), each one line."""
    return request(client, "POST", url, headers, body, timeout=timeout, max_bytes=max_bytes)


def request(client: httpx.Client, method: str, url: str, headers: Sequence[tuple[str, str]] | Mapping[str, str],
            body: bytes = b"", *, timeout: float, max_bytes: int, auth: httpx.Auth | None = None) -> HttpAnswer:
    """:func:`post` for any method, with ``auth`` (httpx's: Digest's second request is inside the same deadline)."""
    watchdog = _Watchdog(timeout)
    late = ExchangeTimeout(f"no whole answer within {timeout:g} s")
    try:
        with watchdog, client.stream(method, url, headers=headers, content=body, auth=auth,
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
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise _unusable(url, exc) from None
    except httpx.HTTPError as exc:
        if watchdog.expired:
            raise late from None
        if isinstance(exc, httpx.ConnectError):
            raise NoAnswer(f"cannot connect ({type(exc).__name__})") from None
        raise NoAnswer(f"the answer broke off ({type(exc).__name__})") from None


def _unusable(url: str, exc: Exception) -> ConfigurationError:
    """The caller's URL, not the server, is wrong: httpx cannot send to it."""
    why = "only http and https" if isinstance(exc, httpx.UnsupportedProtocol) else str(exc)
    return ConfigurationError(f"{shown_url(url)} is not a usable URL ({why}); IPv6 hosts go in brackets, "
                              "e.g. http://[2001:db8::1]/onvif/device_service")


def _naming(address: str, exc: TransportError) -> TransportError:
    """The same failure, its message led by the address (what a client's caller needs; the VSS's faults
    call :func:`post` itself and name the lower system by its prefix instead)."""
    return type(exc)(f"{address}: {exc}")


class BoundedTransport(Transport):
    """zeep's transport whose answers are read by :func:`post`: within ``timeout`` in all and up to
    ``max_bytes`` (requests' own timeout bounds each read only, and it reads a body whole); a failure's
    message names the address."""

    def __init__(self, timeout: float, *, max_bytes: int) -> None:
        super().__init__(timeout=timeout, operation_timeout=timeout)  # type: ignore[no-untyped-call]
        self.max_bytes = max_bytes
        self.client = exchange_client(timeout)

    def post(self, address: str, message: Any, headers: Any) -> requests.Response:
        try:
            answer = post(self.client, address, dict(headers), message, timeout=self.operation_timeout,
                          max_bytes=self.max_bytes)
        except TransportError as exc:
            raise _naming(address, exc) from None
        response = requests.Response()
        response.status_code = answer.status
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response.url = address
        response._content = answer.body
        return response


async def fetch(client: httpx.AsyncClient, method: str, url: str, headers: Sequence[tuple[str, str]] | Mapping[str, str],
                body: bytes = b"", *, timeout: float, max_bytes: int) -> HttpAnswer:
    """:func:`post` on an event loop, for any method: the whole answer within ``timeout`` seconds
    (``asyncio.timeout``) and ``max_bytes`` bytes; the same exceptions, each one line."""
    try:
        async with asyncio.timeout(timeout), \
                client.stream(method, url, content=body or None, headers=headers) as response:
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise AnswerTooLong(f"an answer longer than {max_bytes} bytes")
            return HttpAnswer(response.status_code, list(response.headers.multi_items()), bytes(data))
    except (TimeoutError, httpx.TimeoutException):
        raise ExchangeTimeout(f"no whole answer within {timeout:g} s") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise _unusable(url, exc) from None
    except httpx.ConnectError as exc:
        raise NoAnswer(f"cannot connect ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise NoAnswer(f"the answer broke off ({type(exc).__name__})") from None


class AsyncBoundedTransport(AsyncTransport):
    """zeep's asyncio transport whose answers are read by :func:`fetch`: within ``timeout`` in all and up to
    ``max_bytes``; a failure's message names the address."""

    def __init__(self, timeout: float, *, max_bytes: int) -> None:
        super().__init__(timeout=timeout, operation_timeout=timeout)  # type: ignore[no-untyped-call]
        self.max_bytes = max_bytes
        self.deadline = timeout

    async def post(self, address: str, message: Any, headers: Any) -> httpx.Response:
        try:
            answer = await fetch(self.client, "POST", address, headers, message, timeout=self.deadline,
                                 max_bytes=self.max_bytes)
        except TransportError as exc:
            raise _naming(address, exc) from None
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body,
                              request=httpx.Request("POST", address))
