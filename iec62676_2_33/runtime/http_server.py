"""Layer 4: direct (non-uplink) HTTP/1.1 and h2c access to the device's WSGI app, and the
listening-socket helpers the device, the cloud's proxy and the test auth server share.

The server is the library's own (:mod:`.httpd`): the same hardened HTTP/2
role and limits as the uplink, HTTP/1.1 on h11, bodies streamed under a
budget. The blocking Spyne/SQLite work runs in the given executor (by
default the loop's, which the device sets to its bounded pool).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from ..errors import ConfigurationError
from .asgi_handler import AsgiApp, AsgiHandler
from .httpd import HttpSettings, serve
from .wsgi_handler import WsgiApp, WsgiHandler


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:8080``) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]"), int(port)


def bind_listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one); a clear error when it cannot bind. ``::`` is
    every address, IPv4 too (dual stack, whatever the system's default for IPv6 sockets)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


async def serve_wsgi(app: WsgiApp, sock: socket.socket, shutdown: Callable[[], Awaitable[Any]], *,
                     executor: Executor | None = None, settings: HttpSettings | None = None) -> None:
    """Serve the WSGI ``app`` on the listening ``sock`` (HTTP/1.1 and h2c) until ``shutdown()`` returns."""
    await serve(WsgiHandler(app, executor=executor), sock, shutdown, settings=settings)


async def serve_asgi(app: AsgiApp, sock: socket.socket, shutdown: Callable[[], Awaitable[Any]], *,
                     settings: HttpSettings | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
    """Serve the ASGI ``app`` (``http`` scope) on ``sock``, over TLS with ``ssl_context``, until
    ``shutdown()`` returns."""
    await serve(AsgiHandler(app), sock, shutdown, settings=settings, ssl_context=ssl_context)


async def wait_event(event: asyncio.Event) -> None:
    await event.wait()
