"""Layer 4: the device process — its web services over direct HTTP (and, with the
uplink agent, over every configured uplink) on one event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ..services.app import UPLINK_PATH, build_device_app
from ..services.uplink import UplinkServiceContext
from ..store import DeviceStore
from ..uplinkconfig import UplinkCapabilities
from .http_server import bind_listen, parse_listen, serve_wsgi, wait_event


async def run_device(data_dir: str | Path, listen: str, stop: asyncio.Event,
                     announce: Callable[[str], None] = lambda _text: None) -> None:
    """Serve the device until ``stop`` is set."""
    host, port = parse_listen(listen)
    store = DeviceStore(data_dir)
    try:
        context = UplinkServiceContext(store=store, capabilities=UplinkCapabilities())
        app = build_device_app(context)
        sock = bind_listen(host, port)
        port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        announce(f"device serving http://{shown}:{port}{UPLINK_PATH}")
        await serve_wsgi(app, sock, lambda: wait_event(stop))
    finally:
        store.close()
