"""Layer 4: the cloud process — the uplink listener and, optionally, the HTTP proxy
front, on one event loop (``iec62676 cloud serve``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypercorn.asyncio import serve

from ..pki import load_certs_pem
from ..transport.tls import server_context, start_tls_server
from .cloud import CloudListener, ListenerSettings, MtlsAuthenticator
from .http_server import bind_listen, hypercorn_config, parse_listen, wait_event


@dataclass
class CloudOptions:
    listen: str
    cert: Path
    key: Path
    client_cas: Sequence[Path]
    identity: str = "cn"
    proxy: str | None = None
    path: str | None = None


def _read(path: Path) -> bytes:
    return Path(path).read_bytes()


async def run_cloud(options: CloudOptions, stop: asyncio.Event, announce: Callable[[str], None] = lambda _t: None,
                    *, settings: ListenerSettings | None = None,
                    ready: Callable[[CloudListener], None] | None = None) -> None:
    """Run until ``stop`` is set."""
    cas = [c for path in options.client_cas for c in load_certs_pem(path)]
    from cryptography.hazmat.primitives.serialization import Encoding

    context = server_context(_read(options.cert), _read(options.key),
                             client_ca_pems=[c.public_bytes(Encoding.PEM) for c in cas],
                             require_client_cert=True)
    host, port = parse_listen(options.listen)
    sock = bind_listen(host, port)
    proxy_sock: socket.socket | None = None
    if options.proxy is not None:
        phost, pport = parse_listen(options.proxy)
        try:
            proxy_sock = bind_listen(phost, pport)
        except BaseException:
            sock.close()
            raise
    cloud = CloudListener(MtlsAuthenticator(options.identity), settings=settings, path=options.path)
    server = await start_tls_server(cloud.handle, sock, context,
                                    handshake_timeout=cloud.settings.handshake_timeout)
    if ready is not None:
        ready(cloud)
    bound = server.sockets[0].getsockname()
    announce(f"cloud listening for uplinks on https://{bound[0]}:{bound[1]}{options.path or '/'}")
    tasks = []
    if proxy_sock is not None:
        from .proxy import UplinkProxy

        pbound = proxy_sock.getsockname()
        announce(f"cloud proxy on http://{pbound[0]}:{pbound[1]}/devices")
        tasks.append(asyncio.create_task(serve(UplinkProxy(cloud), hypercorn_config(proxy_sock),  # type: ignore[arg-type]
                                               shutdown_trigger=lambda: wait_event(stop), mode="asgi")))
    try:
        await stop.wait()
    finally:
        server.close()
        cloud.close_all()
        await server.wait_closed()
        await asyncio.gather(*tasks, return_exceptions=True)
