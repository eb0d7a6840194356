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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from ..http2.server import H2ServerRole
from ..security.middleware import ENVIRON_UPLINK_LEVEL
from .h2conn import H2Streams
from .wsgi_handler import WsgiApp, WsgiHandler

__all__ = ["WsgiApp", "WsgiOnH2"]


class WsgiOnH2(H2Streams):
    """Dispatches the events of one uplink's :class:`H2ServerRole` to a WSGI app.

    The driver calls ``on_event``, ``writable`` (its ``on_progress``) and, when
    the connection is over, ``cancel``; ``kick()`` wakes the driver's writer.
    """

    def __init__(self, role: H2ServerRole, app: WsgiApp, *, executor: Executor | None,
                 user_level: Sequence[str], peer: str, kick: Callable[[], None]) -> None:
        levels = list(user_level)

        def uplink_environ() -> dict[str, Any]:
            return {ENVIRON_UPLINK_LEVEL: list(levels), "iec62676.transport": "uplink", "REMOTE_ADDR": peer}

        super().__init__(role, WsgiHandler(app, executor=executor, extra_environ=uplink_environ), kick=kick,
                         scheme="https")
