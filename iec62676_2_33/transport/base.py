"""Layer 2 (byte transports): the byte-stream interface and its errors (UPL-1, UPL-6).

Every transport of the uplink (TLS socket, WebSocket, in-memory pair) is a
:class:`ByteStream`: ordered bytes in, ordered bytes out, end of stream, close,
and a little connection information (:meth:`ByteStream.extra`). The layers
above (the upgrade handshake, the HTTP/2 roles, the runtimes) know nothing
else about the connection, so adding a transport touches no other layer.

Errors are mapped into the library's tree at this boundary, the way httpcore
does: an :class:`OSError` or :class:`ssl.SSLError` never leaves a transport;
the caller sees a :class:`~iec62676_2_33.errors.TransportError` whose message
names the peer and what failed, or one of the two subclasses a runtime
classifies on:

* :class:`TlsHandshakeError` — the TLS handshake failed (or, with TLS 1.3, the
  server rejected our client certificate right after it: see
  :mod:`.tls`); carries OpenSSL's ``verify_code``/``verify_message`` for a
  certificate verification failure and its ``reason`` (e.g.
  ``"TLSV1_ALERT_PROTOCOL_VERSION"``) for any other TLS failure;
* :class:`PeerClosed` — the peer closed or reset the connection where the
  protocol did not allow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import TransportError

__all__ = ["ByteStream", "PeerClosed", "TlsHandshakeError"]


class TlsHandshakeError(TransportError):
    """The TLS handshake failed, or the peer rejected it right after it ended.

    ``verify_code``/``verify_message`` are OpenSSL's certificate verification
    result (e.g. ``62`` / ``"Hostname mismatch, certificate is not valid for
    'cloud.example.com'."``) when that is what failed, else ``None``;
    ``reason`` is OpenSSL's reason mnemonic (``"CERTIFICATE_VERIFY_FAILED"``,
    ``"TLSV1_ALERT_PROTOCOL_VERSION"``, ``"TLSV13_ALERT_CERTIFICATE_REQUIRED"``
    ...) or a short phrase when the failure did not come from OpenSSL.
    """

    def __init__(
        self,
        msg: str,
        *,
        verify_code: int | None = None,
        verify_message: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.verify_code = verify_code
        self.verify_message = verify_message
        self.reason = reason


class PeerClosed(TransportError):
    """The peer closed or reset the connection where it should not have.

    ``reason`` is a short phrase: ``"connection reset by peer"``, ``"closed by
    peer right after the handshake"`` (how a TLS 1.3 server that rejects our
    client certificate can look when its alert is lost), ...
    """

    def __init__(self, msg: str, *, reason: str | None = None) -> None:
        super().__init__(msg)
        self.reason = reason


@runtime_checkable
class ByteStream(Protocol):
    """An ordered, reliable, bidirectional byte stream (one connection).

    One reader at a time; writers may be many. Every method raises
    :class:`~iec62676_2_33.errors.TransportError` (or a subclass) on failure.
    """

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to *max_bytes* bytes as soon as any are there; ``b""`` at end of stream."""
        ...

    async def write(self, data: bytes) -> None:
        """Send *data*; waits while the transport's write buffer is over its high-water mark."""
        ...

    def write_nowait(self, data: bytes) -> None:
        """Queue *data* for sending without waiting (pair with :meth:`drain`)."""
        ...

    def writelines(self, parts: Sequence[bytes]) -> None:
        """Queue several buffers as *one* write (one TLS flush, one TCP send) without joining them.

        Writing them one by one would put each in a segment of its own; a response
        split over several small segments met the peer's delayed ACK (about 40 ms).
        """
        ...

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        ...

    async def close(self) -> None:
        """Close gracefully (TLS close_notify, best effort), then release; idempotent."""
        ...

    def abort(self) -> None:
        """Close at once, dropping buffered data; idempotent."""
        ...

    def extra(self, name: str, default: Any = None) -> Any:
        """Connection information.

        ``"peername"``, ``"sockname"``, ``"peercert"`` (DER bytes or ``None``),
        ``"peercert_chain"`` (list of DER bytes or ``None``), ``"cipher"``,
        ``"version"``, ``"server_hostname"``, ``"alpn"``; *default* when unknown.
        """
        ...

    @property
    def at_eof(self) -> bool:
        """``True`` once the peer's end of stream was reached and every byte was read."""
        ...
