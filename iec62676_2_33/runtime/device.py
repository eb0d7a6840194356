"""Layer 4: the device process — its web services over direct HTTP and over every
configured uplink (UPL-10), on one event loop with one bounded thread pool for
the blocking Spyne/SQLite work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..domain.registry import REGISTRY_FILE, ResourceRegistry
from ..security.oauth import AccessTokenProvider
from ..services.app import UPLINK_PATH, build_device_app
from ..services.events import EventServiceContext
from ..services.uplink import UplinkServiceContext
from ..store import DeviceStore
from ..uplinkconfig import UplinkCapabilities
from .agent import AgentSettings, UplinkAgent
from .dial import supported_protocols
from .http_server import bind_listen, parse_listen, serve_wsgi, wait_event

#: Worker threads for the services (Spyne and SQLite block). A waiting PullMessages holds
#: one thread for up to its Timeout, and up to MaxPullPoints (32) may wait at once, so the
#: pool leaves room for them beside the other requests.
WORKERS = 64

#: How often the registry's change log is checked for changes (also those of other processes).
RESOURCE_POLL_INTERVAL = 0.2

log = logging.getLogger(__name__)


async def follow_resource_changes(events: EventServiceContext, executor: ThreadPoolExecutor,
                                  stop: asyncio.Event, interval: float = RESOURCE_POLL_INTERVAL) -> None:
    """RQ-4, RQ-5: wake waiting PullMessages when the resource change log moves (any process)."""
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            try:
                await loop.run_in_executor(executor, events.poll_changes)
            except Exception:
                log.exception("following the resource change log failed")
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
    finally:
        events.close()  # waiting pulls answer now, so no worker thread outlives the server


def device_capabilities() -> UplinkCapabilities:
    """CFG-5: what this device implements — the protocols are the registered dialers."""
    return UplinkCapabilities(protocols=supported_protocols(), authorization_modes=("mTLS", "AccessToken"))


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
    registry = ResourceRegistry(Path(data_dir) / REGISTRY_FILE)
    events = EventServiceContext.create(registry)
    executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="device")
    # One pool for everything: the direct port's WSGI calls run on the loop's default executor.
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        context = UplinkServiceContext(store=store, capabilities=device_capabilities())
        app = build_device_app(context, events=events)
        tokens = AccessTokenProvider(store)  # UPL-14: OAuth2 client credentials
        agent = UplinkAgent(store, app, executor=executor, settings=settings,
                            auth_headers=tokens.auth_headers, auth_refresh=tokens.refresh)
        tasks = [asyncio.create_task(follow_resource_changes(events, executor, stop), name="resource changes")]
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
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed part stops the device with its reason
        finally:
            stop.set()  # the other parts end before the store and the pool go away
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if sock is not None and sock.fileno() != -1:
            sock.close()
        events.close()
        executor.shutdown(wait=False, cancel_futures=True)
        registry.close()
        store.close()
