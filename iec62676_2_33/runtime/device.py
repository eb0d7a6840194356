"""Layer 4: the device process — its web services over direct HTTP and over every
configured uplink (UPL-10), on one event loop with one bounded thread pool for
the blocking Spyne/SQLite work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..services.app import UPLINK_PATH, build_device_app
from ..services.uplink import UplinkServiceContext
from ..store import DeviceStore
from ..uplinkconfig import UplinkCapabilities
from .agent import AgentSettings, UplinkAgent
from .dial import supported_protocols
from .http_server import bind_listen, parse_listen, serve_wsgi, wait_event

#: Worker threads for the services (Spyne and SQLite block).
WORKERS = 16


def device_capabilities() -> UplinkCapabilities:
    """CFG-5: what this device implements — the protocols are the registered dialers."""
    return UplinkCapabilities(protocols=supported_protocols())


async def run_device(data_dir: str | Path, listen: str | None, stop: asyncio.Event,
                     announce: Callable[[str], None] = lambda _text: None, *,
                     settings: AgentSettings | None = None, uplinks: bool = True) -> None:
    """Serve the device until ``stop`` is set; ``listen=None`` runs the uplinks only,
    ``uplinks=False`` the direct services only."""
    sock = None
    if listen is not None:
        host, port = parse_listen(listen)
        sock = bind_listen(host, port)
    store = DeviceStore(data_dir)
    executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="device")
    try:
        context = UplinkServiceContext(store=store, capabilities=device_capabilities())
        app = build_device_app(context)
        agent = UplinkAgent(store, app, executor=executor, settings=settings)
        tasks = []
        if uplinks:
            context.status = agent.status
            context.changed = agent.changed
            tasks.append(asyncio.create_task(agent.run(stop), name="uplink agent"))
        if sock is not None:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            announce(f"device serving http://{shown}:{port}{UPLINK_PATH}")
            tasks.append(asyncio.create_task(serve_wsgi(app, sock, lambda: wait_event(stop)), name="http"))
        else:
            announce(f"device running {len(store.list_uplinks())} uplink(s)")
        await asyncio.gather(*tasks)
    finally:
        if sock is not None and sock.fileno() != -1:
            sock.close()
        executor.shutdown(wait=False, cancel_futures=True)
        store.close()
