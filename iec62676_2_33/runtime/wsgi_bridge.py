"""Layer 4: serve a WSGI application on the device's HTTP/2 server role (UPL-12, UPL-16).

Each request of the cloud becomes a WSGI call in a bounded thread pool; the
uplink's configured UserLevel is put into the environ under
``iec62676.user_level`` -- the only place the access-control middleware takes
tunnelled levels from (a header cannot set it), so every tunnelled request
gets exactly the configured rights (SEC-4). Many streams run concurrently.

The HTTP/2 side is :class:`~.h2conn.H2Streams` and the WSGI side
:class:`~.wsgi_handler.WsgiHandler`, the same code that serves the device's
direct h2c port: the application starts when the request head arrives,
``wsgi.input`` streams the body (acknowledged to the cloud only as the
application reads it), and the budgets are the role's receive windows --
at most ``initial_window_size`` unread bytes per stream and
``connection_window_size`` per connection (``budget.used``/``budget.peak``).

Streams of tunnelled RTSP (extended CONNECT, ``/onvif/rtsp/``) go to
:class:`~.rtsp_relay.RtspRelay` instead of the WSGI app (STR-1); the role then
advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, cast

from ..domain.media import MediaBackend, StoreMediaBackend
from ..http2.server import H2ServerRole
from ..security.middleware import ENVIRON_UPLINK_LEVEL
from .exchange import Exchange, Handler
from .h2conn import H2Streams
from .rtsp_relay import RtspRelay
from .wsgi_handler import WsgiApp, WsgiHandler

__all__ = ["WsgiApp", "WsgiOnH2"]


class WsgiOnH2(H2Streams):
    """Dispatches the events of one uplink's :class:`H2ServerRole` to a WSGI app.

    The driver calls ``on_event``, ``writable`` (its ``on_progress``) and, when
    the connection is over, ``cancel``; ``kick()`` wakes the driver's writer.
    """

    def __init__(self, role: H2ServerRole, app: WsgiApp, *, executor: Executor | None,
                 user_level: Sequence[str], peer: str, kick: Callable[[], None],
                 media: MediaBackend | None = None) -> None:
        levels = list(user_level)

        def uplink_environ() -> dict[str, Any]:
            return {ENVIRON_UPLINK_LEVEL: list(levels), "iec62676.transport": "uplink", "REMOTE_ADDR": peer}

        wsgi = WsgiHandler(app, executor=executor, extra_environ=uplink_environ)
        handler: Handler = wsgi
        backend = media if media is not None else _media_of(app)
        #: Tunnelled RTSP of this uplink (STR-1): ``/onvif/rtsp/`` streams and extended CONNECT.
        self.rtsp: RtspRelay | None = None
        if backend is not None:
            role.enable_connect_protocol()
            relay = self.rtsp = RtspRelay(backend, levels, executor=executor, max_waiting_per_owner=8)

            async def handler(ex: Exchange) -> None:
                await (relay if relay.handles(ex) else wsgi)(ex)

        super().__init__(role, handler, kick=kick, scheme="https")


def _media_of(app: WsgiApp) -> MediaBackend | None:
    """The media sources behind a device application: what it relays (live and replay), else its Media2
    service's, else its store's."""
    relayed = getattr(app, "rtsp_sources", None)
    if relayed is not None:
        return cast(MediaBackend, relayed)
    media2 = getattr(app, "media2", None)
    if media2 is not None:
        return cast(MediaBackend, media2.media)
    store = getattr(app, "store", None)
    return StoreMediaBackend(store) if store is not None else None
