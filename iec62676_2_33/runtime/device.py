"""Layer 4: the device process — its web services over direct HTTP and over every
configured uplink (UPL-10), on one event loop with one bounded thread pool for
the blocking Spyne/SQLite work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from ..domain.ptz import NoHeads
from ..domain.recordings import IndexedRecordingStore, RecordingStore
from ..domain.registry import REGISTRY_FILE, ResourceRegistry
from ..security.keystore import DEVICE_KEYSTORE_LIMITS, KeystoreLimits
from ..security.oauth import AccessTokenProvider
from ..services.app import UPLINK_PATH, DeviceApplication, build_device_app
from ..services.events import EventServiceContext, UplinkStatusEvents
from ..services.uplink import UplinkServiceContext
from ..store import DeviceStore
from ..uplinkconfig import UplinkCapabilities
from .agent import AgentSettings, UplinkAgent
from .dial import supported_protocols
from .exchange import Handler
from .http_server import bind_listen, parse_listen, wait_event
from .httpd import serve
from .lanes import LaneExecutor
from .recording_files import FolderRecordingStore, load_recording_configs
from .replay_server import ReplayServer, start_replay_server
from .wsgi_handler import WsgiHandler

#: Worker threads for the services (Spyne and SQLite block). A waiting PullMessages holds
#: one thread for up to its Timeout, and up to MaxPullPoints (32) may wait at once, so the
#: pool leaves room for them beside the other requests.
WORKERS = 64
#: Jobs that compute at once (they hold the GIL: more only trade it between CPUs) ...
LANES = 1
#: ... besides those running for longer than this many seconds (they wait: see runtime.lanes).
LANE_GRACE = 0.01

#: How often the registry's change log is checked for changes (also those of other processes).
RESOURCE_POLL_INTERVAL = 0.2

log = logging.getLogger(__name__)


async def follow_resource_changes(events: EventServiceContext, executor: Executor,
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
            except TimeoutError:
                pass
    finally:
        events.close()  # waiting pulls answer now, so no worker thread outlives the server


#: How often the uplinks' Status is looked at for ``tns1:Monitoring/Uplink/Status`` events.
UPLINK_STATUS_INTERVAL = 0.5
#: How often base-notification subscriptions are checked for messages to push (EVT-10).
PUSH_INTERVAL = 0.2


async def deliver_notifications(events: EventServiceContext, executor: Executor, stop: asyncio.Event,
                                interval: float = PUSH_INTERVAL) -> None:
    """EVT-10: push what base-notification subscriptions queued to their consumers (``PushDelivery``).

    Each due subscription's delivery runs in the pool on its own, so a slow consumer holds one thread.
    """
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            for sub_id in await loop.run_in_executor(executor, events.push.due):
                loop.run_in_executor(executor, events.push.deliver, sub_id)  # logs its own failures
        except Exception:
            log.exception("pushing notifications failed")
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass


async def publish_uplink_status(watcher: UplinkStatusEvents, agent: UplinkAgent, store: DeviceStore,
                                executor: Executor, stop: asyncio.Event,
                                interval: float = UPLINK_STATUS_INTERVAL) -> None:
    """EVT-5, EVT-6: every change of an uplink's Status (the agent's status hook) as a generic event."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            configs = await loop.run_in_executor(executor, store.list_uplinks)
            watcher.update({cfg.remote_address: agent.status(cfg.remote_address) for cfg in configs})
        except Exception:
            log.exception("publishing the uplink status failed")
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass


def device_capabilities(keystore: KeystoreLimits = DEVICE_KEYSTORE_LIMITS) -> UplinkCapabilities:
    """CFG-5: what this device implements — the protocols are the registered dialers."""
    # PROV-2: AccessToken only while the Security service takes authorization server configurations.
    modes = ("mTLS", "AccessToken") if keystore.max_auth_servers > 0 else ("mTLS",)
    return UplinkCapabilities(protocols=supported_protocols(), authorization_modes=modes)


async def run_device(data_dir: str | Path, listen: str | None, stop: asyncio.Event,
                     announce: Callable[[str], None] = lambda _text: None, *,
                     settings: AgentSettings | None = None, uplinks: bool = True,
                     ready: Callable[[UplinkServiceContext, str | None], None] | None = None,
                     compose: Callable[[DeviceApplication, EventServiceContext], None] | None = None,
                     replay_listen: str = "127.0.0.1:0", forwarding: bool = False,
                     http: Callable[[Handler], Handler] | None = None) -> None:
    """Serve the device until ``stop`` is set; ``listen=None`` runs the uplinks only,
    ``uplinks=False`` the direct services only. ``ready`` is called once everything runs, with the
    uplink service's context (live Status/Error) and the URL of the direct services (or ``None``).
    ``compose`` may wrap the app's routes and publish on its event service before anything is served
    (a VSS adds its gateway and forwards its lower systems' events so). When ``<data>/recordings.json``
    lists recordings (ANX-B-3), Recording Search and Replay serve them, replayed by the RTSP server
    started on ``replay_listen`` (:func:`.replay_server.start_replay_server`). With ``forwarding`` (a VSS)
    PTZ, Recording Search and Replay are served even without heads or recordings of its own: the system
    answers as one with none, and ``compose`` forwards what names a lower system. ``http`` wraps the direct
    port's exchange handler (a VSS serves RTSP over HTTP there beside the WSGI app)."""
    sock = None
    replay: ReplayServer | None = None
    if listen is not None:
        host, port = parse_listen(listen)
        sock = bind_listen(host, port)
    store = DeviceStore(data_dir)
    registry = ResourceRegistry(Path(data_dir) / REGISTRY_FILE)
    events = EventServiceContext.create(registry)
    # One pool for the services, the uplinks and the background work (runtime.lanes: a burst of
    # requests runs as one batch on one thread; 16 HTTP/2 streams: ~1,100 -> ~700 us of CPU a call).
    executor = LaneExecutor(WORKERS, lanes=LANES, grace=LANE_GRACE, thread_name_prefix="device")
    try:
        context = UplinkServiceContext(store=store, capabilities=device_capabilities())
        recordings: RecordingStore | None = None
        if load_recording_configs(data_dir):
            recordings = FolderRecordingStore(data_dir)
            replay = await asyncio.to_thread(start_replay_server, recordings, replay_listen)
            if replay is not None:
                log.info("replay serving %s/<recording token>", replay.base)
        elif forwarding:
            recordings = IndexedRecordingStore(())
        app = build_device_app(context, events=events, recordings=recordings, ptz=NoHeads() if forwarding else None,
                               replay_base=None if replay is None else replay.base)
        if compose is not None:
            compose(app, events)
        tokens = AccessTokenProvider(store)  # UPL-14: OAuth2 client credentials
        agent = UplinkAgent(store, app, executor=executor, settings=settings,
                            auth_headers=tokens.auth_headers, auth_refresh=tokens.refresh)
        tasks = [asyncio.create_task(follow_resource_changes(events, executor, stop), name="resource changes")]
        tasks.append(asyncio.create_task(deliver_notifications(events, executor, stop), name="notify"))
        if uplinks:
            context.status = agent.status
            context.changed = agent.changed
            tasks.append(asyncio.create_task(agent.run(stop), name="uplink agent"))
            tasks.append(asyncio.create_task(publish_uplink_status(UplinkStatusEvents(events), agent, store,
                                                                   executor, stop), name="uplink status events"))
        url = None
        if sock is not None:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            url = f"http://{shown}:{port}{UPLINK_PATH}"
            announce(f"device serving {url}")
            handler: Handler = WsgiHandler(app, executor=executor)
            tasks.append(asyncio.create_task(serve(handler if http is None else http(handler), sock,
                                                   lambda: wait_event(stop)), name="http"))
        else:
            announce(f"device running {len(store.list_uplinks())} uplink(s)")
        if ready is not None:
            ready(context, url)
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
        if replay is not None:
            replay.close()  # bounded: ReplayServer.STOP_TIMEOUT
        events.close()
        executor.shutdown(wait=False, cancel_futures=True)
        registry.close()
        store.close()
