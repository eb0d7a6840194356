"""Layer 4: direct (non-uplink) HTTP/1.1 and h2c access to the device's WSGI app.

Hypercorn serves the app on the same event loop as the uplink agent; the
blocking Spyne/SQLite work runs in its thread pool. Its request cap per
connection is lifted (it closes after 1,000 requests by default).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from ..errors import ConfigurationError

log = logging.getLogger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:8080``) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def bind_listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one); a clear error when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def hypercorn_config(sock: socket.socket, *, max_body: int = 1 << 20) -> Config:
    """Hypercorn settings for one pre-bound socket (the socket's descriptor is handed over)."""
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.keep_alive_max_requests = 1 << 62
    config.wsgi_max_body_size = max_body
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    return config


async def serve_wsgi(app: Callable[..., Any], sock: socket.socket,
                     shutdown: Callable[[], Awaitable[None]]) -> None:
    """Serve ``app`` on the listening ``sock`` (HTTP/1.1 and h2c) until ``shutdown()`` returns."""
    await serve(app, hypercorn_config(sock), shutdown_trigger=shutdown, mode="wsgi")  # type: ignore[arg-type]


async def wait_event(event: asyncio.Event) -> None:
    await event.wait()
