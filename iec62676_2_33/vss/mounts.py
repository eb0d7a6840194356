"""Layer 5: the PTZ, Recording Search and Replay paths of a VSS that has no heads or recordings of its own
(ANX-B-2, ANX-B-3, GEN-2, SEC-1).

Theory of operation
-------------------
The gateway (:mod:`.gateway`) adapts the services the VSS's device application
routes. A VSS without PTZ heads or a recording store of its own does not route
``/onvif/ptz_service``, ``/onvif/search_service`` or ``/onvif/replay_service``,
so :func:`mount_forwarding` adds them before the gateway is installed:

* each path gets the service's own Spyne endpoint over an *empty* backend (no
  heads, no recordings). The VSS itself then answers as a system with nothing
  of that kind: GetNodes, GetConfigurations and FindRecordings list nothing of
  its own, GetRecordingSummary counts none, a local token is ``NoProfile``,
  ``NoPTZProfile`` or ``NoRecording`` — the same code and faults as a device,
  and the merged answers (:data:`~.gateway.MERGED`) add the lower systems';
* each endpoint sits behind an :class:`~..security.middleware.AccessControlMiddleware`
  that shares the device application's verifiers (one nonce cache, one
  Digest table), clock and role book, with the ONVIF access classes of the
  service (``services.ptz.OPERATION_ACCESS``, ``services.recording.OPERATION_ACCESS``):
  the single-parse path of every other service. An operation the table does
  not classify reaches the gateway without an access class, which refuses to
  forward it (``Receiver/ActionNotSupported``);
* the device service lists the mounted services in GetServices (GEN-2: a
  client finds them where it finds a device's).

A path the device application already routes (a VSS with heads or recordings
of its own) is left as it is: the gateway wraps that endpoint instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping

from lxml import etree

from ..domain.ptz import PtzHead, PtzNode
from ..domain.recordings import IndexedRecordingStore
from ..security.access import AccessClass, operation_access_from
from ..security.middleware import AccessControlMiddleware
from ..services.app import DEVICE_PATH, DeviceApplication
from ..services.device import DeviceServiceContext, ServiceEntry
from ..services.media2 import MEDIA2_PATH
from ..services.ptz import OPERATION_ACCESS as PTZ_ACCESS
from ..services.ptz import PTZ_PATH, TPTZ, PtzServiceContext, ptz_endpoint
from ..services.ptz import capabilities_element as ptz_capabilities
from ..services.recording import OPERATION_ACCESS as RECORDING_ACCESS
from ..services.recording import (
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
from ..soap.spyne_glue import SoapEndpoint

__all__ = ["mount_forwarding"]


class _NoHeads:
    """The PTZ backend of a VSS without heads of its own."""

    def nodes(self) -> list[PtzNode]:
        return []

    def head(self, profile_token: str) -> PtzHead | None:
        return None


def _device_context(app: DeviceApplication) -> DeviceServiceContext:
    route = app.routes.get(DEVICE_PATH)
    endpoint = route.app if isinstance(route, AccessControlMiddleware) else None
    context = endpoint.context if isinstance(endpoint, SoapEndpoint) else None
    if not isinstance(context, DeviceServiceContext):
        raise TypeError("the device application has no device service to list the forwarded services")
    return context


def mount_forwarding(app: DeviceApplication) -> list[str]:
    """Route PTZ, Recording Search and Replay in ``app`` where it does not (module docstring); the paths
    mounted."""
    routes = app.routes
    template = routes.get(MEDIA2_PATH)
    if not isinstance(routes, MutableMapping) or not isinstance(template, AccessControlMiddleware):
        raise TypeError("the device application's routes cannot take the forwarded services")
    device = _device_context(app)
    recording = RecordingServiceContext(store=IndexedRecordingStore(()), clock=template.clock)
    media = app.media2.media if app.media2 is not None else None
    services: tuple[tuple[str, str, Callable[[], SoapEndpoint], Mapping[tuple[str, str], AccessClass],
                          Callable[[], etree._Element]], ...] = (
        (PTZ_PATH, TPTZ, lambda: ptz_endpoint(PtzServiceContext(ptz=_NoHeads(), media=media, clock=template.clock)),
         PTZ_ACCESS, ptz_capabilities),
        (SEARCH_PATH, TSE, lambda: search_endpoint(recording), RECORDING_ACCESS, search_capabilities_element),
        (REPLAY_PATH, TRP, lambda: replay_endpoint(recording), RECORDING_ACCESS, replay_capabilities_element),
    )
    mounted: list[str] = []
    listed: list[ServiceEntry] = []
    for path, namespace, endpoint, table, capabilities in services:
        if path in routes:
            continue
        if device.roles is not None:
            device.roles.implement(table)
        routes[path] = AccessControlMiddleware(endpoint(), operation_access=operation_access_from(table),
                                               wsse=template.wsse, digest=template.digest, clock=template.clock,
                                               authorize=template.authorize)
        listed.append(ServiceEntry(namespace, path, capabilities=capabilities))
        mounted.append(path)
    device.services = [*device.services, *listed]
    return mounted
