"""Layer 5: the device's web-service application — every service at its path,
each behind access control (SEC-1 … SEC-4).

The same WSGI callable serves direct HTTP clients (``device serve``) and every
request tunnelled over an uplink (the runtime marks those with the uplink's
UserLevel, UPL-12). Routing is by path only, the conventional ONVIF paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..domain.media import MediaBackend, ReplayRelayBackend, StoreMediaBackend
from ..domain.ptz import NoHeads, PtzBackend, SimulatedPtz
from ..domain.recordings import RecordingStore
from ..security.access import AccessClass, operation_access_from
from ..security.httpdigest import DigestAuthenticator
from ..security.keystore import DEVICE_KEYSTORE_LIMITS, Keystore
from ..security.middleware import AccessControlMiddleware
from ..security.roles import RoleBook
from ..security.wsse import UsernameTokenVerifier
from ..store import DeviceStore
from .device import OPERATION_ACCESS as DEVICE_ACCESS
from .device import ServiceEntry, device_context, device_endpoint
from .events import OPERATION_ACCESS as EVENT_ACCESS
from .events import SUBSCRIPTION_PATH, EventServiceContext, event_endpoints
from .events import capabilities_element as event_capabilities
from .inline import runs_inline
from .media2 import MEDIA2_PATH, Media2ServiceContext, media2_endpoint
from .media2 import OPERATION_ACCESS as MEDIA2_ACCESS
from .media2 import capabilities_element as media2_capabilities
from .ptz import OPERATION_ACCESS as PTZ_ACCESS
from .ptz import PTZ_PATH, TPTZ, PtzServiceContext, ptz_endpoint
from .ptz import capabilities_element as ptz_capabilities
from .recording import OPERATION_ACCESS as RECORDING_ACCESS
from .recording import (
    REPLAY_PATH,
    SEARCH_PATH,
    TRP,
    TSE,
    RecordingServiceContext,
    replay_capabilities_element,
    replay_endpoint,
    search_capabilities_element,
    search_endpoint,
)
from .security import OPERATION_ACCESS as SECURITY_ACCESS
from .security import SECURITY_PATH, security_endpoint
from .security import capabilities_element as security_capabilities
from .snapshot import SNAPSHOT_PATH, SnapshotRelay
from .uplink import OPERATION_ACCESS as UPLINK_ACCESS
from .uplink import UplinkServiceContext, uplink_endpoint

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

UPLINK_PATH = "/onvif/uplink_service"
DEVICE_PATH = "/onvif/device_service"
EVENT_PATH = "/onvif/event_service"

REALM = "iec62676-2-33"


@dataclass
class DeviceApplication:
    """The WSGI app of a device plus the contexts the runtime talks to."""

    store: DeviceStore
    uplink: UplinkServiceContext
    routes: Mapping[str, WsgiApp]
    #: The Media2 service's context (its ``rtsp_websocket_path``: where the uplinks' RTSP relay takes
    #: RTSP over WebSocket, STR-3).
    media2: Media2ServiceContext | None = None
    #: What the uplinks' RTSP relay reaches when it is more than the Media2 sources: the replay server too
    #: (:class:`~..domain.media.ReplayRelayBackend`, ANX-B-3).
    rtsp_sources: MediaBackend | None = None

    def runs_inline(self, environ: dict[str, Any]) -> bool:
        """The runtime may run this request on its event loop: a quick read-only SOAP operation,
        identified by the one parse access control then uses (:mod:`.inline`). Never with a
        firmware media or PTZ backend: the quick operations consult them (profiles and their PTZ
        configurations, StreamingOverUplink, GetServices' PTZ capabilities), and they may block."""
        if self.media2 is not None and (not isinstance(self.media2.media, StoreMediaBackend)
                                        or not isinstance(self.media2.ptz, (type(None), SimulatedPtz, NoHeads))):
            return False
        return runs_inline(environ, [p for p, a in self.routes.items() if isinstance(a, AccessControlMiddleware)])

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        app = self.routes.get(path)
        if app is None:  # a route ending in "/" serves everything below it (event subscriptions)
            app = next((a for p, a in self.routes.items() if p.endswith("/") and path.startswith(p)), None)
        if app is None:
            body = b"not found: the device serves " + ", ".join(sorted(self.routes)).encode() + b"\n"
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)


@dataclass(frozen=True)
class _Credentials:
    """One WS-Security verifier and one Digest authenticator for every route: a nonce seen on one
    service is a replay on all of them (separate caches let a captured token run once per route)."""

    wsse: UsernameTokenVerifier
    digest: DigestAuthenticator
    clock: Callable[[], float]
    roles: RoleBook  # PROV-4: user roles weigh in every decision; their functions are the routes' operations

    def protect(self, app: WsgiApp, table: Mapping[tuple[str, str], AccessClass]) -> WsgiApp:
        self.roles.implement(table)
        return AccessControlMiddleware(app, operation_access=operation_access_from(table),
                                       wsse=self.wsse, digest=self.digest, clock=self.clock,
                                       authorize=self.roles.authorize)


def build_device_app(uplink: UplinkServiceContext, *, clock: Callable[[], float] = time.time,
                     events: EventServiceContext | None = None,
                     media: MediaBackend | None = None, ptz: PtzBackend | None = None,
                     recordings: RecordingStore | None = None, replay_base: str | None = None) -> DeviceApplication:
    """Compose the services of a device around one store (``events``: the event service, clause 7;
    ``media``: the Media2 profiles, by default the store's media sources; ``ptz``: the PTZ heads, ANX-B-2;
    ``recordings``: Recording Search and Replay, whose URIs point at the RTSP server ``replay_base``,
    ANX-B-3)."""
    store = uplink.store
    credentials = _Credentials(UsernameTokenVerifier(store.get_user), DigestAuthenticator(store.get_user, REALM),
                               clock, RoleBook(store))
    uplink.roles = credentials.roles  # PROV-4: SetUplink hands out no more than its caller holds
    routes: dict[str, WsgiApp] = {
        UPLINK_PATH: credentials.protect(uplink_endpoint(uplink), UPLINK_ACCESS),
    }
    if events is not None:
        event_app, subscription_app = event_endpoints(events)
        routes[EVENT_PATH] = credentials.protect(event_app, EVENT_ACCESS)
        routes[SUBSCRIPTION_PATH] = credentials.protect(subscription_app, EVENT_ACCESS)
    media2 = Media2ServiceContext(media=media or StoreMediaBackend(store), ptz=ptz)
    routes[MEDIA2_PATH] = credentials.protect(media2_endpoint(media2), MEDIA2_ACCESS)
    extra_services = []  # ANX-B-2: PTZ when the device has heads (``ptz``)
    if ptz is not None:
        routes[PTZ_PATH] = credentials.protect(
            ptz_endpoint(PtzServiceContext(ptz=ptz, media=media2.media, clock=clock)), PTZ_ACCESS)
        extra_services.append(ServiceEntry(TPTZ, PTZ_PATH, capabilities=ptz_capabilities))
    if recordings is not None:  # ANX-B-3: Recording Search and Replay over the recording store
        recording = RecordingServiceContext(store=recordings, clock=clock, replay_base=replay_base)
        routes[SEARCH_PATH] = credentials.protect(search_endpoint(recording), RECORDING_ACCESS)
        routes[REPLAY_PATH] = credentials.protect(replay_endpoint(recording), RECORDING_ACCESS)
        extra_services += [ServiceEntry(TSE, SEARCH_PATH, capabilities=search_capabilities_element),
                           ServiceEntry(TRP, REPLAY_PATH, capabilities=replay_capabilities_element)]
    # a GET passes the middleware unauthenticated: the relay decides READ_MEDIA itself (see .snapshot)
    routes[SNAPSHOT_PATH] = credentials.protect(SnapshotRelay(media2.media, credentials.digest, clock), {})
    # ANX-B-3: the uplinks' RTSP relay reaches the replay server too
    relayed = None if recordings is None or replay_base is None else ReplayRelayBackend(media2.media, replay_base)
    uplink.streaming = lambda: relayed is not None or bool(media2.media.media_sources())  # STR-5
    keystore = Keystore(store, DEVICE_KEYSTORE_LIMITS, clock)  # PROV-1: the Security service's keystore
    routes[SECURITY_PATH] = credentials.protect(security_endpoint(keystore), SECURITY_ACCESS)
    # GEN-2: the device service lists only the services routed here (checked per request).
    event_caps = None if events is None else (lambda: event_capabilities(events))
    routes[DEVICE_PATH] = credentials.protect(
        device_endpoint(device_context(uplink, clock=clock, served=routes, event_capabilities=event_caps,
                                       media2_capabilities=lambda: media2_capabilities(media2),
                                       security_capabilities=lambda: security_capabilities(keystore),
                                       extra_services=extra_services, roles=credentials.roles)),
        DEVICE_ACCESS)
    return DeviceApplication(store=store, uplink=uplink, routes=routes, media2=media2, rtsp_sources=relayed)
