"""Layer 2: byte transports (UPL-1, UPL-6, UPL-11, UPL-13).

A transport is one small interface, :class:`ByteStream` (read / write /
close / connection information), and its implementations:

* :mod:`.tls` — TLS over TCP driven through :class:`ssl.MemoryBIO` from a
  plain :class:`asyncio.Protocol`, a few KiB per idle connection
  (:func:`connect_tls` for the device, :func:`start_tls_server` for the
  cloud); the public face of :mod:`.tls_engine` (the engine and its stream)
  and :mod:`.tls_server` (admission, PROXY v2, accept);
* :mod:`.tcp` — plain TCP, the same lean design without TLS (the device's
  direct port, the cloud's proxy front); what it shares with the TLS engine
  is :mod:`.connection` (the connection's waiters and back-pressure, the
  stream's ``drain``/``close``/``abort``) and :mod:`.serving` (the listener and
  a handler task per connection);
* :mod:`.contexts` — the TLS contexts (:func:`client_context` for the device,
  :func:`server_context` for the cloud); :mod:`.identity` — a peer's identity
  from its certificate (:func:`peer_identity`);
* :mod:`.memory` — an in-memory connected pair for tests (:func:`memory_pipe`).

The layers above pick a transport by URI scheme and see nothing else of it;
failures reach them as :class:`~iec62676_2_33.errors.TransportError`,
:class:`TlsHandshakeError` or :class:`PeerClosed`.
"""

from __future__ import annotations

from .base import ByteStream, PeerClosed, TlsHandshakeError
from .contexts import client_context, server_context
from .identity import peer_identity
from .memory import MemoryStream, memory_pipe
from .tls import (
    TlsServer,
    TlsStream,
    connect_tls,
    start_tls_server,
)

__all__ = [
    "ByteStream",
    "MemoryStream",
    "PeerClosed",
    "TlsHandshakeError",
    "TlsServer",
    "TlsStream",
    "client_context",
    "connect_tls",
    "memory_pipe",
    "peer_identity",
    "server_context",
    "start_tls_server",
]
