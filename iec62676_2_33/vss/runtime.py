"""Layer 4: the VSS process — a device runtime plus its lower systems (GEN-1, GEN-3, ANX-B-1, ANX-B-4).

``run_vss`` runs, on one event loop:

* the device runtime (:func:`~..runtime.device.run_device`: same data folder,
  users, service paths, uplinks of its own), with PTZ, Recording Search and
  Replay served even without heads or recordings of its own (``forwarding``), and whose
  service routes other than the device, uplink, security and event services
  are wrapped by the :class:`~.gateway.Gateway` (so Media2, PTZ, Recording
  Search and Replay are adapted with no code here);
* optionally the embedded cloud listener
  (:func:`~..runtime.cloud_server.run_cloud`, ``uplink_listen``): lower systems
  configured with ``--uplink DEVICE_ID`` dial it, and are reached over that
  channel (zeep through :class:`~..runtime.zeep_transport.UplinkTransport`,
  forwarded operations through :meth:`~..runtime.cloud.CloudListener.request`);
* optionally the RTSP front (:mod:`.rtsp`, ``rtsp``) that makes the lower
  systems' stream URIs reachable, its players asked for the VSS's users
  (RTSP Digest, :mod:`.rtsp_auth`) unless ``rtsp_open``, and then also RTSP
  over HTTP on the VSS's HTTP port into the same front (:mod:`.rtsp_http`);
  the relay table exists also without the front: the VSS's own uplinks reach
  its ids (:func:`relay_over_uplinks`), so an upper VSS plays a stream of
  this one's lower systems through its own front and the uplink;
* one :class:`~.resources.LowerMirror` and one :class:`~.events.EventForwarder`
  per lower system, started and stopped as ``iec62676 vss lower add|remove``
  change the configuration (checked every :data:`WATCH_INTERVAL` seconds), so
  the event service answers resource queries over the union and delivers the
  lower systems' events with adapted tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeep.transports import Transport

from ..bounded_http import BoundedTransport
from ..domain.registry import REGISTRY_FILE, ResourceRegistry
from ..errors import ConfigurationError
from ..query import ResourceQueryClient
from ..runtime.agent import AgentSettings
from ..runtime.cloud import CloudListener
from ..runtime.cloud_server import CloudOptions, run_cloud
from ..runtime.device import run_device
from ..runtime.exchange import Handler
from ..runtime.http_server import bind_listen, parse_listen
from ..runtime.rtsp_front import RtspFront
from ..runtime.zeep_transport import UplinkTransport
from ..security.httpdigest import DigestAuthenticator
from ..security.middleware import AccessControlMiddleware
from ..services.app import DEVICE_PATH, EVENT_PATH, REALM, UPLINK_PATH, DeviceApplication
from ..services.events import SUBSCRIPTION_PATH, EventServiceContext
from ..services.security import SECURITY_PATH
from ..services.snapshot import SNAPSHOT_PATH, SnapshotRelay
from ..soap.dispatch import QNameDispatcher
from ..soap.spyne_glue import SoapEndpoint
from ..store import DeviceStore
from ..transport.tcp import start_tcp_server
from .events import EventForwarder
from .gateway import MAX_ANSWER, Forwarder, Gateway, VssContext
from .lower import LowerStore, LowerSystem
from .resources import LowerMirror
from .rtsp import RelayedSources, RelayTable, VssRtspFront
from .rtsp_auth import RtspAuthenticator
from .rtsp_http import HttpTunnels
from .snapshots import UplinkSnapshotRelay, VssMedia

__all__ = ["NOT_ADAPTED", "VssOptions", "lower_query_client", "run_vss"]

log = logging.getLogger(__name__)

#: The VSS's own services: never forwarded (their tokens name the VSS's own objects).
NOT_ADAPTED = frozenset({DEVICE_PATH, UPLINK_PATH, SECURITY_PATH, EVENT_PATH, SUBSCRIPTION_PATH})
#: Seconds between looks at the lower-system configuration.
WATCH_INTERVAL = 1.0
#: PullMessages Timeout of the resource mirrors (a lower system's change reaches the VSS within it).
MIRROR_PULL = 1.0
#: Resources per PullMessages of the mirrors (the event service's MaxMessageLimit is 1,000).
MIRROR_PAGE = 1000


@dataclass
class VssOptions:
    """``iec62676 vss serve`` options beyond the device's."""

    rtsp: str | None = None
    #: The RTSP front without authentication (``--rtsp-open``): its URIs are then the only secret.
    rtsp_open: bool = False
    uplink: CloudOptions | None = None
    timeout: float = 10.0
    settings: AgentSettings | None = None
    mirror_retry: float = 1.0


def install_gateway(app: DeviceApplication, context: VssContext, forwarder: Forwarder) -> None:
    """Wrap every adapted SOAP endpoint behind its access control (it keeps the single parse); their
    requests may wait for a lower system, so they never run on the event loop."""
    wrapped = set()
    for path, route in app.routes.items():
        if path not in NOT_ADAPTED and isinstance(route, AccessControlMiddleware) \
                and isinstance(route.app, (SoapEndpoint, QNameDispatcher)):
            route.app = Gateway(route.app, path, context, forwarder)
            wrapped.add(path)
    quick = app.runs_inline

    def runs_inline(environ: dict[str, Any]) -> bool:
        return environ.get("PATH_INFO") not in wrapped and quick(environ)

    app.runs_inline = runs_inline  # type: ignore[method-assign]


def relay_snapshots(app: DeviceApplication, context: VssContext) -> None:
    """The VSS's snapshot route also serves the lower systems' snapshots the gateway rewrote (:mod:`.snapshots`),
    behind the same access decision (READ_MEDIA) as its own; those of lower systems on uplinks come over them."""
    route = app.routes[SNAPSHOT_PATH]
    if not isinstance(route, AccessControlMiddleware) or not isinstance(route.app, SnapshotRelay):
        raise ConfigurationError("the device application has no snapshot relay to extend")
    relay = route.app
    route.app = UplinkSnapshotRelay(VssMedia(relay.media, context.snapshots), relay.digest, relay.clock,
                                    relay.timeout, relay.deadline, relay.max_bytes, snapshots=context.snapshots,
                                    cloud=lambda: context.cloud, loop=context.loop)


def relay_over_uplinks(app: DeviceApplication, context: VssContext) -> None:
    """The RTSP relay of the VSS's own uplinks also reaches the streams the gateway answered over them
    (:class:`~.rtsp.RelayedSources`): an upper VSS's front tunnels to ``/onvif/rtsp/<relay id>``. So the
    uplinks' StreamingOverUplink (STR-5) is true also while the VSS has lower systems (and no sources)."""
    if context.relay is None or app.media2 is None:
        raise ConfigurationError("the VSS has no relay table or no Media2 service to relay over its uplinks")
    app.rtsp_sources = RelayedSources(app.rtsp_sources or app.media2.media, context.relay)
    own = app.uplink.streaming
    app.uplink.streaming = lambda: own() or bool(context.lowers.list())


def lower_query_client(context: VssContext, lower: LowerSystem) -> ResourceQueryClient:
    """The event-service client of a resource mirror or event forwarder: over the lower system's uplink, or by
    URL with the gateway's bounds (one deadline for each whole exchange, at most ``MAX_ANSWER`` bytes)."""
    deadline = context.timeout + MIRROR_PULL  # a PullMessages waits up to MIRROR_PULL before it answers
    transport: Transport
    if lower.uplink is not None:
        if context.cloud is None or context.loop is None:
            raise ConfigurationError(f"lower system {lower.prefix} is reached by uplink; "
                                     "start the VSS with --uplink-listen")
        transport = UplinkTransport(context.cloud, lower.uplink, context.loop, timeout=deadline)
    else:
        transport = BoundedTransport(deadline, max_bytes=MAX_ANSWER)
    return ResourceQueryClient(lower.service_url(EVENT_PATH), username=lower.username, password=lower.password,
                               transport=transport, timeout=context.timeout, pull_timeout=MIRROR_PULL,
                               message_limit=MIRROR_PAGE)


class _Mirrors:
    """One resource mirror and one event forwarder per configured lower system, following the
    configuration (the forwarders once the device runtime handed over its event service)."""

    def __init__(self, context: VssContext, registry: ResourceRegistry, retry: float) -> None:
        self.context = context
        self.registry = registry
        self.retry = retry
        self.events: EventServiceContext | None = None
        self.running: dict[str, tuple[LowerSystem, LowerMirror]] = {}
        self.forwarders: dict[str, tuple[LowerSystem, EventForwarder]] = {}

    def _client(self, lower: LowerSystem) -> ResourceQueryClient:
        return lower_query_client(self.context, lower)

    def sync(self) -> None:
        wanted = {lower.prefix: lower for lower in self.context.lowers.list()}
        for prefix, (lower, mirror) in list(self.running.items()):
            if wanted.get(prefix) != lower:
                mirror.close()
                del self.running[prefix]
                if prefix not in wanted:
                    mirror.forget()
        for prefix, (lower, forwarder) in list(self.forwarders.items()):
            if wanted.get(prefix) != lower:
                forwarder.close()
                del self.forwarders[prefix]
        for prefix, lower in wanted.items():
            if prefix not in self.running:
                mirror = LowerMirror(lower, self.registry, self.context.lowers, self._client, retry=self.retry)
                self.running[prefix] = (lower, mirror.start())
            if prefix not in self.forwarders and self.events is not None:
                forwarder = EventForwarder(lower, self.events, self.context.lowers, self._client, retry=self.retry)
                self.forwarders[prefix] = (lower, forwarder.start())

    def close(self) -> None:
        followers = [f for _, f in self.running.values()] + [f for _, f in self.forwarders.values()]
        for follower in followers:
            follower.stop.set()
        for follower in followers:
            follower.close()
        self.running.clear()
        self.forwarders.clear()


async def _watch(mirrors: _Mirrors, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            await loop.run_in_executor(None, mirrors.sync)
        except Exception:
            log.exception("following the lower systems failed")
        try:
            await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)
        except TimeoutError:
            pass


async def run_vss(data_dir: str | Path, listen: str | None, stop: asyncio.Event,
                  announce: Callable[[str], None] = lambda _text: None, *,
                  options: VssOptions | None = None) -> None:
    """Serve the VSS until ``stop`` is set (module docstring)."""
    options = options or VssOptions()
    lowers = LowerStore(data_dir)
    registry = ResourceRegistry(Path(data_dir) / REGISTRY_FILE)
    context = VssContext(lowers, timeout=options.timeout, loop=asyncio.get_running_loop())
    forwarder = Forwarder(context)
    mirrors = _Mirrors(context, registry, options.mirror_retry)
    users = DeviceStore(data_dir)  # the VSS's users, for the RTSP front and the RTSP-over-HTTP tunnels
    front = None
    rtsp_server = None
    rtsp_sock = None
    tasks: list[asyncio.Task[None]] = []
    try:
        if options.rtsp is not None:
            rtsp_sock = bind_listen(*parse_listen(options.rtsp))
            host, port = rtsp_sock.getsockname()[:2]
            context.rtsp_base = f"rtsp://{f'[{host}]' if ':' in host else host}:{port}"
        context.relay = RelayTable(context.rtsp_base)  # also without a front: URIs answered over own uplinks
        if rtsp_sock is not None:
            auth = None if options.rtsp_open else RtspAuthenticator(users.get_user, REALM)
            front = VssRtspFront(context.relay, auth=auth)
            rtsp_server = await start_tcp_server(front.handle, rtsp_sock)
            announce(f"VSS RTSP front on {context.rtsp_base}" + (" (open: no authentication)" if auth is None
                                                                  else " (RTSP Digest of the VSS's users)"))
        if options.uplink is not None:
            def cloud_ready(cloud: CloudListener) -> None:
                context.cloud = cloud
                if front is not None:
                    front.cloud_front = RtspFront(cloud)

            tasks.append(asyncio.create_task(run_cloud(options.uplink, stop, announce, ready=cloud_ready),
                                             name="uplink listener"))

        def compose(app: DeviceApplication, events: EventServiceContext) -> None:
            install_gateway(app, context, forwarder)
            relay_snapshots(app, context)
            relay_over_uplinks(app, context)
            mirrors.events = events

        def http(inner: Handler) -> Handler:
            """RTSP over HTTP on the VSS's port (:mod:`.rtsp_http`), where it runs an RTSP front to end in."""
            if front is None:
                return inner
            return HttpTunnels(inner, front, DigestAuthenticator(users.get_user, REALM))

        tasks.append(asyncio.create_task(_watch(mirrors, stop), name="lower systems"))
        tasks.append(asyncio.create_task(
            run_device(data_dir, listen, stop, announce, settings=options.settings,
                       compose=compose, forwarding=True, http=http), name="device"))
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, mirrors.close)
        if rtsp_server is not None:
            await rtsp_server.aclose()
        forwarder.close()
        context.close()
        registry.close()
        lowers.close()
        users.close()
