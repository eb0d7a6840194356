"""Layer 4: serve a WSGI application on the device's HTTP/2 server role (UPL-12, UPL-16).

Each request of the cloud becomes a WSGI call in a bounded thread pool; the
uplink's configured UserLevel is put into the environ under
``iec62676.user_level`` — the only place the access-control middleware takes
tunnelled levels from (a header cannot set it), so every tunnelled request
gets exactly the configured rights (SEC-4). Many streams run concurrently.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ..http2.role import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from ..http2.server import H2ServerRole
from ..security.middleware import ENVIRON_UPLINK_LEVEL

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"})

#: A response body up to this size goes out with its HEADERS in one call; a larger one is
#: queued whole after them and framed by the role as flow control allows.
CHUNK = 65536


@dataclass
class _Request:
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)


class WsgiOnH2:
    """Dispatches the events of one :class:`H2ServerRole` to a WSGI app."""

    def __init__(self, role: H2ServerRole, app: WsgiApp, *, executor: Executor | None,
                 user_level: Sequence[str], peer: str, kick: Callable[[], None]) -> None:
        self.role = role
        self.app = app
        self.executor = executor
        self.user_level = list(user_level)
        self.peer = peer
        self.kick = kick
        self._requests: dict[int, _Request] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._requests[event.stream_id] = _Request(headers=event.headers)
        elif isinstance(event, DataReceived):
            request = self._requests.get(event.stream_id)
            if request is not None:
                request.body += event.data
            self.role.acknowledge(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, StreamEnded):
            request = self._requests.pop(event.stream_id, None)
            if request is not None:
                task = asyncio.create_task(self._serve(event.stream_id, request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif isinstance(event, StreamReset):
            self._requests.pop(event.stream_id, None)
        elif isinstance(event, ConnectionTerminated):
            self._requests.clear()

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def environ(self, headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        path, _, query = pseudo.get(":path", "/").partition("?")
        authority = pseudo.get(":authority", "device")
        host, _, port = authority.rpartition(":") if authority.rsplit(":", 1)[-1].isdigit() else (authority, "", "")
        scheme = pseudo.get(":scheme", "https")
        env: dict[str, Any] = {
            "REQUEST_METHOD": pseudo.get(":method", "GET"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, encoding="latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": host or authority,
            "SERVER_PORT": port or ("443" if scheme == "https" else "80"),
            "SERVER_PROTOCOL": "HTTP/2",
            "REMOTE_ADDR": self.peer,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
            ENVIRON_UPLINK_LEVEL: list(self.user_level),
            "iec62676.transport": "uplink",
        }
        for name, value in headers:
            if name.startswith(":") or name in _HOP_BY_HOP:
                continue
            if name == "content-type":
                env["CONTENT_TYPE"] = value
            elif name != "content-length":
                key = "HTTP_" + name.upper().replace("-", "_")
                env[key] = f"{env[key]},{value}" if key in env else value
        return env

    async def _serve(self, stream_id: int, request: _Request) -> None:
        env = self.environ(request.headers, bytes(request.body))
        loop = asyncio.get_running_loop()
        try:
            status, headers, chunks = await loop.run_in_executor(self.executor, _call_app, self.app, env)
        except Exception:  # the app failed: answer 500, keep the connection
            log.exception("the device application failed on stream %d", stream_id)
            self.role.send_response(stream_id, 500, [("content-type", "text/plain")], b"internal error\n")
            self.kick()
            return
        body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        if len(body) <= CHUNK:
            self.role.send_response(stream_id, status, headers, body)
            self.kick()
            return
        self.role.send_response(stream_id, status, headers, None, end_stream=False)
        # The whole body is in memory already and the role only references what it is
        # given (no copy): queue it at once. The role frames it as the peer's windows and
        # its outbound-buffer cap allow, so the peer's reading still paces the transfer,
        # without a wake-up of this task per 64 KiB.
        self.role.send_data(stream_id, body, end_stream=True)
        self.kick()

    def writable(self) -> None:
        """The driver wrote (its ``on_progress`` hook). Response bodies are queued whole and
        paced by the role itself, so nothing waits for this any more."""


def _call_app(app: WsgiApp, env: dict[str, Any]) -> tuple[int, list[tuple[str, str]], list[bytes]]:
    """Run a WSGI app to completion (in a worker thread)."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started["status"], started["headers"] = status, headers
        return lambda _data: None

    result = app(env, start_response)
    try:
        chunks = [bytes(c) for c in result]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    headers = [(k.lower(), v) for k, v in started["headers"] if k.lower() not in _HOP_BY_HOP]
    return int(started["status"].split(" ", 1)[0]), headers, chunks
