"""Layer 2 (byte transports): TLS over TCP, lean per idle connection (UPL-1, UPL-6, UPL-11, UPL-13).

The device is the TLS client and dials out (UPL-1, :func:`connect_tls`); the
cloud accepts (:func:`start_tls_server`). This module is the public face of
the TLS transport; the work is split by job:

* :mod:`.tls_engine` — :class:`~.tls_engine.TlsEngine`, OpenSSL driven over
  :class:`ssl.MemoryBIO` from a buffered asyncio protocol with bounded buffers
  (a few KiB per idle connection), :class:`TlsStream` (the
  :class:`~.base.ByteStream` view of it) and :func:`connect_tls`;
* :mod:`.tls_server` — :class:`TlsServer`: admission before any TLS work,
  handshake deadlines, the PROXY protocol v2 from balancers, one handler task
  per connection, refusals summed up in the log;
* :mod:`.contexts` — the TLS contexts; :mod:`.identity` — a peer's identity
  from its certificate.

Everything here logs under this module's name, ``iec62676_2_33.transport.tls``.
"""

from __future__ import annotations

from .tls_engine import (
    BIO_CHUNK,
    READ_HIGH_WATER,
    READ_LOW_WATER,
    RECV_BUFFER,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    TlsStream,
    connect_tls,
    report_authenticated,
)
from .tls_server import ADMISSION_LOG_INTERVAL, TlsServer, start_tls_server

__all__ = [
    "ADMISSION_LOG_INTERVAL",
    "BIO_CHUNK",
    "READ_HIGH_WATER",
    "READ_LOW_WATER",
    "RECV_BUFFER",
    "WRITE_HIGH_WATER",
    "WRITE_LOW_WATER",
    "TlsServer",
    "TlsStream",
    "connect_tls",
    "report_authenticated",
    "start_tls_server",
]
