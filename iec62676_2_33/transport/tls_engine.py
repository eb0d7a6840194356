"""Layer 2 (byte transports): the TLS engine over MemoryBIO and its ByteStream (UPL-1, UPL-6, UPL-11, UPL-13).

The device is the TLS client and dials out (UPL-1); TLS 1.2 is the floor
(UPL-6); the device checks the cloud's identity as RFC 6125/9525 say — the
subjectAltName only, never the subject CN (UPL-11); either side may require a
client certificate, mutual TLS (UPL-13).

Theory of operation
-------------------
Python's asyncio SSL transport gives every connection a 256 KiB read buffer,
about 300 KiB of RSS per idle connection; the cloud must hold thousands of
idle device connections in at most 64 KiB each (TLS and HTTP/2 together). So
:class:`TlsEngine` drives OpenSSL itself: an
:class:`asyncio.BufferedProtocol` over a plain TCP transport, an
:class:`ssl.SSLObject` between two :class:`ssl.MemoryBIO`::

    socket -> recv_into(shared buffer) -> incoming BIO -> SSLObject.read -> plaintext -> read()
    write() -> SSLObject.write -> outgoing BIO -> transport.write -> socket

* The socket is read into one :data:`RECV_BUFFER` per thread, shared by all
  connections (the transport hands it back at once, before any other
  protocol runs); only ciphertext that cannot be consumed right away is
  copied out. A plain :class:`asyncio.Protocol` would get a fresh 256 KiB
  ``recv()`` result on every read.
* Ciphertext is decrypted eagerly, as it arrives, so TLS 1.3 post-handshake
  messages (session tickets, key updates) and the peer's alerts are handled
  even when nobody reads.
* Ciphertext enters the incoming BIO and plaintext enters the SSLObject in
  slices of :data:`BIO_CHUNK` bytes: OpenSSL's memory BIO never gives back
  memory once it grew, so the slice size is the most either BIO ever holds.
  OpenSSL's own record buffers are released when idle (CPython sets
  ``SSL_MODE_RELEASE_BUFFERS``).
* The plaintext buffer holds at most about :data:`READ_HIGH_WATER` bytes:
  above it the protocol stops decrypting and pauses the socket, and resumes
  when the reader has taken it below :data:`READ_LOW_WATER`. An emptied
  buffer is replaced by a new one, so an idle connection keeps no grown
  buffer. :meth:`TlsStream.buffer_stats` shows every buffer.
* :meth:`TlsStream.write` waits while the TCP transport's write buffer is
  above its high-water mark (``pause_writing``/``resume_writing``).
* What the engine shares with the plain TCP transport (:mod:`.tcp`) is
  :mod:`.connection`'s: the engine is a :class:`~.connection.LeanConnection`
  (its waiters, write back-pressure, the shared receive buffer), the stream
  a :class:`~.connection.ConnectionStream` (``drain``, ``close``, ``abort``,
  ``extra``); reading, writing and ending a TLS stream are this module's.
* End of stream: the peer's close_notify answers ours and closes the socket;
  a TCP FIN without close_notify (a "ragged EOF", common in the wild) is an
  end of stream too, except on a client that has not received one byte of
  application data yet (see below).

A TLS 1.3 server rejects a client certificate *after* the client's handshake
has ended (the client sends its certificate in its last flight and does not
wait for an answer), so :func:`connect_tls` succeeds and the rejection shows
on the first :meth:`TlsStream.read`: as :class:`TlsHandshakeError` with the
server's alert in ``reason`` (``"TLSV13_ALERT_CERTIFICATE_REQUIRED"`` for no
certificate, ``"SSLV3_ALERT_BAD_CERTIFICATE"``/``"TLSV1_ALERT_UNKNOWN_CA"``
... for one it does not accept), or, when the alert was lost (a reset, a peer
that closes without one), as :class:`PeerClosed` with ``reason`` ``"closed by
peer right after the handshake"``. With TLS 1.2 the same rejection fails the
handshake itself.

On the server side the engine is the connection of a
:class:`~.tls_server.TlsServer`, which decides admission, deadlines and the
PROXY protocol. The two meet at one small interface: the engine calls its
:class:`TlsAcceptor` (``expects_proxy_header``, ``admit``, ``established``,
``handshake_failed`` ...) at each step of a connection, and the acceptor acts
on the engine only through :attr:`TlsEngine.peer`, :attr:`TlsEngine.label`,
:meth:`TlsEngine.abandon_handshake`, :meth:`TlsEngine.drop` and :meth:`TlsEngine.refuse_proxy`.
:func:`report_authenticated` passes the cloud's verdict on a stream's peer to
the acceptor of that stream.

The contexts both sides use are made by :mod:`.contexts`
(:func:`~.contexts.client_context`, :func:`~.contexts.server_context`); the
cloud names a device from its certificate with :mod:`.identity`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import TransportError
from ..sansio.proxy_protocol import ProxyHeaderError, ProxyHeaderReader
from .base import ByteStream, PeerClosed, TlsHandshakeError
from .connection import (
    CLOSE_TIMEOUT,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    ConnectionStream,
    LeanConnection,
    format_addr,
    recv_buffer,
)
from .contexts import ssl_text

__all__ = [
    "BIO_CHUNK",
    "CLOSE_TIMEOUT",
    "READ_HIGH_WATER",
    "READ_LOW_WATER",
    "RECV_BUFFER",
    "WRITE_HIGH_WATER",
    "WRITE_LOW_WATER",
    "TlsAcceptor",
    "TlsEngine",
    "TlsStream",
    "connect_tls",
    "report_authenticated",
]

#: Size of the receive buffer all connections of a thread share (one recv_into); shared,
#: so its size costs nothing per connection.
RECV_BUFFER = 256 * 1024
#: Most bytes fed to the incoming BIO, or encrypted into the outgoing one, at a time.
BIO_CHUNK = 4096
#: Plaintext buffered for the reader before the socket is paused. At 64 KiB a bulk
#: transfer paused and resumed the socket (two epoll_ctl calls) every 64 KiB; the buffer
#: exists only while data waits (an emptied one is replaced), so idle connections keep
#: nothing of it.
READ_HIGH_WATER = 256 * 1024
#: Plaintext level below which a paused socket is resumed.
READ_LOW_WATER = 64 * 1024
#: Plaintext encrypted per :meth:`TlsStream.write` step before it checks back-pressure.
_WRITE_STEP = 64 * 1024
#: Largest plaintext of one TLS record.
_RECORD = 16384

_RECV = threading.local()
_AFTER_HANDSHAKE = "closed by peer right after the handshake"
_RESET = "connection reset by peer"

#: Hints for certificate verification failures, by OpenSSL verify code.
_VERIFY_HINTS = {
    2: "give the issuer's certificate in the trust anchors",
    9: "check the clocks of both ends, or wait until the certificate is valid",
    10: "renew the certificate",
    18: "a self-signed certificate must be given as a trust anchor itself",
    19: "add the root of the peer's chain to the trust anchors",
    20: "add the CA that issued the peer's certificate to the trust anchors",
    21: "the peer must send its intermediate certificates",
    26: "the certificate's extendedKeyUsage does not allow this role: "
    "a server needs serverAuth, a client clientAuth",
    62: "the certificate must name this host in its subjectAltName, the CN is not used",
    64: "the certificate must name this address in an IP subjectAltName",
}


def _handshake_error(label: str, exc: BaseException) -> TlsHandshakeError:
    """A :class:`TlsHandshakeError` for *exc* raised by the handshake with *label*."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, message = exc.verify_code, exc.verify_message
        hint = _VERIFY_HINTS.get(code)
        return TlsHandshakeError(
            f"TLS handshake with {label} failed: certificate verify failed: "
            f"{message.rstrip('.')}" + (f"; {hint}" if hint else ""),
            verify_code=code,
            verify_message=message,
            reason=exc.reason,
        )
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return TlsHandshakeError(
            f"TLS handshake with {label} failed: the peer closed the connection during "
            "the handshake (is it a TLS endpoint, and does it accept our TLS versions "
            "and certificate?)",
            reason="closed by peer during the handshake",
        )
    if isinstance(exc, ssl.SSLError):
        return TlsHandshakeError(
            f"TLS handshake with {label} failed: {ssl_text(exc)}", reason=exc.reason
        )
    if isinstance(exc, TlsHandshakeError):
        return exc
    if isinstance(exc, OSError):
        return TlsHandshakeError(
            f"TLS handshake with {label} failed: {exc.strerror or exc}",
            reason=_RESET if isinstance(exc, ConnectionResetError) else None,
        )
    return TlsHandshakeError(f"TLS handshake with {label} failed: {exc}")


def _cert_alert(reason: str | None) -> bool:
    """Whether an alert *reason* is about our certificate."""
    return reason is not None and any(
        word in reason for word in ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED")
    )



class TlsAcceptor(Protocol):
    """What a server-side :class:`TlsEngine` tells the server that accepted its connection (module docstring).

    The engine calls these in order: ``expects_proxy_header`` when TCP is up (then
    ``proxy_header_wait``, and ``proxy_refused`` if no valid header comes), ``admit`` before
    any TLS work, then one of ``established``, ``handshake_failed``, ``health_checked`` or
    ``timed_out``; ``forget`` when the connection is gone or its handshake abandoned.
    """

    def expects_proxy_header(self, peer: Any) -> bool:
        """Whether a connection from ``peer`` must open with a PROXY v2 header (it is a balancer's)."""
        ...

    def proxy_header_wait(self, engine: TlsEngine) -> float | None:
        """Seconds to wait for that header; ``None``: no room, the engine refuses the connection."""
        ...

    def proxy_refused(self, engine: TlsEngine, reason: str) -> None:
        """A balancer connection closed, or was closed, without a valid PROXY header (no TLS was spoken)."""
        ...

    def admit(self, engine: TlsEngine) -> tuple[float, float | None] | None:
        """Admission before any TLS work: the loop times of the handshake deadline and of the (earlier)
        first-byte deadline, or ``None`` for no first-byte deadline; ``None`` instead of the pair: refused."""
        ...

    def established(self, engine: TlsEngine) -> None:
        """The handshake is done: the connection is the acceptor's (``TlsStream(engine)``)."""
        ...

    def handshake_failed(self, engine: TlsEngine, error: TlsHandshakeError) -> None:
        """The handshake failed (``error`` says why)."""
        ...

    def health_checked(self, engine: TlsEngine) -> None:
        """A balancer's PROXY ``LOCAL`` connection closed before any TLS byte: its health check."""
        ...

    def timed_out(self, engine: TlsEngine, counter: str) -> None:
        """The engine abandoned its handshake at a deadline: ``"handshake_timeout"`` or ``"first_byte_timeout"``."""
        ...

    def forget(self, engine: TlsEngine) -> None:
        """The connection is gone, or its handshake was abandoned: it holds no admission slot any more."""
        ...

    def authenticated(self, engine: TlsEngine) -> None:
        """The peer authenticated above TLS (:func:`report_authenticated`)."""
        ...

class TlsEngine(LeanConnection):
    """One TLS connection: TCP transport + SSLObject + bounded buffers (module docstring)."""

    __slots__ = (
        "_acceptor",
        "_app_data_seen",
        "_cipher",
        "_closing",
        "_ctx",
        "_deadline",
        "_eof_pending",
        "_handshake_done",
        "_handshake_waiter",
        "_health_check",
        "_incoming",
        "_outgoing",
        "_peer",
        "_proxy",
        "_rbuf",
        "_server_hostname",
        "_server_side",
        "_sslobj",
        "_timer",
    )

    def __init__(
        self,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        label: str = "peer",
        acceptor: TlsAcceptor | None = None,
    ) -> None:
        super().__init__(label)
        self._ctx = ctx
        self._server_side = server_side
        self._server_hostname = server_hostname
        self._acceptor = acceptor
        self._sslobj: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._handshake_done = False
        self._handshake_waiter: asyncio.Future[None] | None = (
            None if server_side else self._loop.create_future()
        )
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # handshake deadline while waiting for the first byte
        self._rbuf = bytearray()
        self._cipher: memoryview | None = None
        self._eof_pending = False
        self._closing = False
        self._app_data_seen = False
        #: The peer's address: the socket's, or the client's from a balancer's PROXY header.
        self._peer: Any = None
        #: Reads the PROXY v2 header a balancer sends first (only from configured balancers).
        self._proxy: ProxyHeaderReader | None = None
        #: A balancer's PROXY ``LOCAL`` header and nothing after it yet: if the balancer
        #: closes now, this was its health check, not a failed handshake.
        self._health_check = False

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._peer = transport.get_extra_info("peername")
        acceptor = self._acceptor
        if acceptor is not None and acceptor.expects_proxy_header(self._peer):
            # A balancer's connection: TLS starts after its PROXY header (buffer_updated).
            self._label = f"balancer {format_addr(self._peer)}"
            wait = acceptor.proxy_header_wait(self)
            if wait is None:
                self._refuse("server busy")
            else:
                self._proxy = ProxyHeaderReader()
                self._timer = self._loop.call_later(wait, self._on_proxy_timeout)
            return
        self._start()

    def _start(self) -> None:
        """Admit (server side) and start the TLS engine on what was received so far."""
        if self._acceptor is not None:
            self._label = f"client {format_addr(self._peer)}"
            deadlines = self._acceptor.admit(self)
            if deadlines is None:
                self._refuse("server busy")
                return
            self._arm(*deadlines)
            if self._cipher is not None and self._deadline is not None:
                self._first_bytes()  # the ClientHello came with the PROXY header
        try:
            self._sslobj = self._ctx.wrap_bio(
                self._incoming,
                self._outgoing,
                server_side=self._server_side,
                server_hostname=self._server_hostname,
            )
        except (ssl.SSLError, ValueError) as exc:
            self._fail_handshake(exc)
            return
        self._process()

    def get_buffer(self, sizehint: int) -> memoryview:
        return recv_buffer(_RECV, RECV_BUFFER)

    def buffer_updated(self, nbytes: int) -> None:
        if self._proxy is not None:
            self._proxy_header(bytes(_RECV.buf[:nbytes]))
            return
        self._health_check = False
        if self._deadline is not None:
            self._first_bytes()
        received = _RECV.buf[:nbytes]
        if self._cipher is not None:  # not expected: reading is paused while data waits
            self._cipher = memoryview(bytes(self._cipher) + bytes(received))
        else:
            self._cipher = received
        try:
            self._process()
        finally:
            cipher = self._cipher
            if cipher is not None and cipher.obj is received.obj:
                self._cipher = memoryview(bytes(cipher))  # the shared buffer is reused

    def eof_received(self) -> bool:
        if self._proxy is not None:
            self.refuse_proxy("the balancer closed before its PROXY header")
            return False
        self._eof_pending = True
        self._process()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._proxy is not None:
            self.refuse_proxy("the balancer closed before its PROXY header")
        self._cancel_timer()
        if not self._handshake_done:
            self._fail_handshake(exc or ssl.SSLEOFError("EOF during the handshake"))
        elif not self._eof and self._error is None:
            if isinstance(exc, ConnectionResetError):
                early = not self._server_side and not self._app_data_seen
                self._error = self._peer_closed(_AFTER_HANDSHAKE if early else _RESET)
            elif exc is not None:
                self._error = TransportError(f"TLS connection with {self._label} failed: {exc}")
            elif self._eof_pending and not self._closing:
                # The peer's FIN: ciphertext may still wait behind a full plaintext
                # buffer; it is decrypted as the reader drains (see _take).
                self._process()
            else:  # we closed or aborted it
                self._eof = True
        if self._eof or self._error is not None:
            self._cipher = None
        self._wake_all()
        if self._acceptor is not None:
            self._acceptor.forget(self)

    # ------------------------------------------------------------------ the acceptor's interface

    @property
    def peer(self) -> Any:
        """The peer's address: the socket's, or the client's from a balancer's PROXY header."""
        return self._peer

    @property
    def label(self) -> str:
        """Who is at the other end, for messages: ``"host:port"``, ``"client addr:port"`` or
        ``"balancer addr:port"`` (before its PROXY header)."""
        return self._label

    def abandon_handshake(self, what: str, reason: str) -> bool:
        """Abort a server-side handshake nobody waits for any more (evicted, server closing, a
        deadline): never logged, the acceptor forgets it. ``False`` if it had already ended."""
        if self._handshake_done:
            return False
        self._cancel_timer()
        self._handshake_done = True
        self._error = TlsHandshakeError(f"TLS handshake with {self._label} {what}", reason=reason)
        self._abort()
        if self._acceptor is not None:
            self._acceptor.forget(self)
        return True

    def drop(self, what: str) -> None:
        """Abort an established connection the server no longer keeps (evicted before it authenticated):
        its reader gets a :class:`TransportError` saying *what*. Nothing if it is closing already."""
        if self._lost or self._closing:
            return
        self._error = TransportError(f"TLS connection with {self._label} {what}")
        self._abort()

    def refuse_proxy(self, reason: str) -> None:
        """Close a balancer connection whose PROXY header is still due: never TLS, and the acceptor
        counts it (:meth:`TlsAcceptor.proxy_refused`). Nothing if the header already came."""
        if self._proxy is None:
            return
        self._proxy = None
        self._cancel_timer()
        self._refuse(reason)
        if self._acceptor is not None:
            self._acceptor.proxy_refused(self, reason)

    def _refuse(self, reason: str) -> None:
        """Close the connection before any TLS byte (refused by admission or the PROXY rules)."""
        self._handshake_done = True  # never started
        self._error = TransportError(f"refused {self._label}: {reason}")
        self._abort()

    def _arm(self, handshake_at: float, first_byte_at: float | None) -> None:
        """Start the admitted handshake's deadline timer (loop times): the first-byte one when given."""
        if first_byte_at is not None:
            self._deadline = handshake_at
            self._timer = self._loop.call_at(first_byte_at, self._on_first_byte_timeout)
        else:
            self._timer = self._loop.call_at(handshake_at, self._on_handshake_timeout)

    # ------------------------------------------------------------------ PROXY protocol v2

    def _proxy_header(self, data: bytes) -> None:
        """Feed the balancer's PROXY header; once whole, start TLS on the bytes after it."""
        reader = self._proxy
        assert reader is not None
        try:
            header = reader.feed(data)
        except ProxyHeaderError as exc:
            self.refuse_proxy(str(exc))
            return
        if header is None:
            return
        self._proxy = None
        self._cancel_timer()
        if header.source is not None:
            self._peer = header.source
        else:  # LOCAL: the balancer's own connection (its health check) keeps its address
            self._health_check = not reader.trailing_data
        if reader.trailing_data:
            self._cipher = memoryview(reader.trailing_data)
        self._start()

    def _on_proxy_timeout(self) -> None:
        self._timer = None
        self.refuse_proxy("no PROXY header before the deadline")

    # ------------------------------------------------------------------ the engine

    def _next_slice(self) -> bool:
        """Move up to :data:`BIO_CHUNK` ciphertext bytes into the incoming BIO."""
        cipher = self._cipher
        if cipher is not None:
            self._incoming.write(cipher[:BIO_CHUNK])
            rest = cipher[BIO_CHUNK:]
            self._cipher = rest if len(rest) else None
            return True
        if self._eof_pending and not self._incoming.eof:
            self._incoming.write_eof()
            return True
        return False

    def _process(self) -> None:
        """Run the handshake, decrypt what came in, send what OpenSSL produced."""
        sslobj = self._sslobj
        if sslobj is None or self._error is not None:
            return
        try:
            if not self._handshake_done and (self._lost or not self._handshake_step(sslobj)):
                return
            self._decrypt(sslobj)
        finally:
            self._flush()

    def _handshake_step(self, sslobj: ssl.SSLObject) -> bool:
        """Advance the handshake; ``True`` once it is done."""
        while True:
            try:
                sslobj.do_handshake()
            except ssl.SSLWantReadError:
                if self._next_slice():
                    continue
                return False
            except (ssl.SSLError, OSError) as exc:
                self._fail_handshake(exc)
                return False
            break
        self._handshake_done = True
        self._cancel_timer()
        if self._handshake_waiter is not None and not self._handshake_waiter.done():
            self._handshake_waiter.set_result(None)
        if self._acceptor is not None:
            self._acceptor.established(self)
        return True

    def _decrypt(self, sslobj: ssl.SSLObject) -> None:
        """Decrypt until the input runs out, the buffer is full, or the stream ends."""
        rbuf = self._rbuf
        try:
            while not self._eof:
                if len(rbuf) >= READ_HIGH_WATER:
                    self._pause_reading()
                    break
                try:
                    chunk = sslobj.read(_RECORD)
                except ssl.SSLWantReadError:
                    if self._next_slice():
                        continue
                    self._resume_reading()
                    break
                if not chunk:  # the peer's close_notify (CPython returns b"" for it)
                    raise ssl.SSLZeroReturnError("close_notify")
                rbuf += chunk
                self._app_data_seen = True
        except ssl.SSLZeroReturnError:  # the peer's close_notify
            self._eof = True
            self._cipher = None
            self._shutdown()
        except ssl.SSLEOFError:  # TCP FIN without close_notify
            self._cipher = None
            if self._server_side or self._app_data_seen:
                self._eof = True
            else:
                self._error = self._peer_closed(_AFTER_HANDSHAKE)
        except ssl.SSLError as exc:
            self._cipher = None
            self._error = self._read_error(exc)
            self._flush()
            self._abort()
        if rbuf or self._eof or self._error is not None:
            self._wake_reader()

    def _flush(self) -> None:
        """Hand what OpenSSL wrote to the outgoing BIO to the TCP transport."""
        if self._outgoing.pending and self._transport is not None and not self._lost:
            self._transport.write(self._outgoing.read())

    def _shutdown(self) -> None:
        """Send close_notify (best effort) and close the TCP transport gracefully."""
        if self._closing:
            return
        self._closing = True
        if self._sslobj is not None and self._handshake_done and not self._lost:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._sslobj.unwrap()
            self._flush()
        if self._transport is not None:
            self._transport.close()

    def _abort(self) -> None:
        """Abort the TCP transport, and drop the ciphertext still waiting to be decrypted."""
        self._closing = True
        self._cipher = None
        super()._abort()

    # ------------------------------------------------------------------ errors

    def _fail_handshake(self, exc: BaseException) -> None:
        if self._handshake_done:
            return
        error = _handshake_error(self._label, exc)
        self._handshake_done = True  # no second attempt
        self._error = error
        self._cancel_timer()
        self._flush()  # our alert, if OpenSSL wrote one
        if self._transport is not None and not self._lost:
            self._closing = True
            self._transport.close()
        if self._handshake_waiter is not None and not self._handshake_waiter.done():
            self._handshake_waiter.set_exception(error)
        if self._acceptor is not None:
            if self._health_check:
                self._acceptor.health_checked(self)
            else:
                self._acceptor.handshake_failed(self, error)

    def _cancel_timer(self) -> None:
        """Stop the pending deadline (PROXY header, first byte or handshake), if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _first_bytes(self) -> None:
        """The peer spoke: from now on only the whole handshake deadline applies."""
        deadline, self._deadline = self._deadline, None
        if self._timer is not None and deadline is not None:
            self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_handshake_timeout)

    def _on_handshake_timeout(self) -> None:
        self._timer = None
        if self.abandon_handshake("timed out", "handshake timeout") and self._acceptor is not None:
            self._acceptor.timed_out(self, "handshake_timeout")

    def _on_first_byte_timeout(self) -> None:
        self._timer = None
        if (self.abandon_handshake("timed out: the client sent nothing", "first byte timeout")
                and self._acceptor is not None):
            self._acceptor.timed_out(self, "first_byte_timeout")

    def _peer_closed(self, reason: str) -> PeerClosed:
        if reason == _AFTER_HANDSHAKE:
            return PeerClosed(
                f"TLS connection with {self._label} was closed by the peer right after the "
                "handshake, before any data (a TLS 1.3 server that rejects our client "
                "certificate can look like this: check the certificate we present)",
                reason=reason,
            )
        return PeerClosed(f"TLS connection with {self._label}: {reason}", reason=reason)

    def _read_error(self, exc: ssl.SSLError) -> TransportError:
        text = ssl_text(exc)
        if not self._server_side and not self._app_data_seen and "ALERT" in (exc.reason or ""):
            hint = (
                " (with TLS 1.3 the server rejects a client certificate after the "
                "handshake: check the certificate we present and that the server trusts "
                "its issuer)"
                if _cert_alert(exc.reason)
                else ""
            )
            return TlsHandshakeError(
                f"TLS peer {self._label} rejected the connection right after the "
                f"handshake: {text}{hint}",
                reason=exc.reason,
            )
        return TransportError(f"TLS connection with {self._label} failed: {text}")

    # ------------------------------------------------------------------ flow control

    def _pause_reading(self) -> None:
        """Stop decrypting (and reading the socket) until the reader drains the buffer."""
        if not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None and not self._lost:
                self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._transport is not None and not self._lost:
                self._transport.resume_reading()


class TlsStream(ConnectionStream[TlsEngine]):
    """A TLS connection as a :class:`~.base.ByteStream` (see the module docstring)."""

    __slots__ = ()

    # ------------------------------------------------------------------ reading

    async def read(self, max_bytes: int = 65536) -> bytes:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        p = self._p
        while True:
            if p._rbuf:
                return self._take(max_bytes)
            if p._error is not None:
                raise p._error
            if p._eof or (p._lost and not p._reading_paused):
                return b""
            waiter = p._new_read_waiter()
            try:
                await waiter
            finally:
                p._read_waiter = None

    def _take(self, max_bytes: int) -> bytes:
        p = self._p
        rbuf = p._rbuf
        if len(rbuf) <= max_bytes:
            data = bytes(rbuf)
            p._rbuf = bytearray()  # give the grown buffer back
        else:
            data = bytes(rbuf[:max_bytes])
            del rbuf[:max_bytes]
        if p._reading_paused and len(p._rbuf) < READ_LOW_WATER:
            p._process()
        return data

    @property
    def at_eof(self) -> bool:
        p = self._p
        return not p._rbuf and (p._eof or p._error is not None)

    # ------------------------------------------------------------------ writing

    def write_nowait(self, data: bytes) -> None:
        self._write((memoryview(data),))

    def writelines(self, parts: Sequence[bytes]) -> None:
        self._write([memoryview(part) for part in parts])

    def _write(self, views: Sequence[memoryview]) -> None:
        p = self._p
        sslobj, transport = p._sslobj, p._transport
        if p._error is not None:
            raise p._error
        if sslobj is None or transport is None or p._lost or p._closing:
            raise TransportError(f"cannot write to {p._label}: the TLS connection is closed")
        out: list[bytes] = []
        try:
            for view in views:
                for start in range(0, len(view), BIO_CHUNK):
                    sslobj.write(view[start : start + BIO_CHUNK])
                    out.append(p._outgoing.read())
        except ssl.SSLError as exc:
            raise TransportError(f"cannot write to {p._label}: {ssl_text(exc)}") from None
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, max(len(view), 1), _WRITE_STEP):
            self._write((view[start : start + _WRITE_STEP],))
            await self.drain()

    # ------------------------------------------------------------------ information

    def extra(self, name: str, default: Any = None) -> Any:
        p = self._p
        sslobj = p._sslobj
        if name in _SSL_EXTRA:
            if sslobj is None:
                return default
            try:
                value = _SSL_EXTRA[name](sslobj)
            except (ValueError, AttributeError, ssl.SSLError):
                return default
            return default if value is None else value
        if name == "peername" and p._peer is not None:
            return p._peer  # the device's address behind a balancer (PROXY protocol)
        return super().extra(name, default)

    def buffer_stats(self) -> dict[str, int | bool]:
        """Bytes held in every buffer of this connection, and the flow-control state.

        ``plaintext`` (decrypted, unread) and ``plaintext_capacity`` (bytes
        allocated beyond an empty buffer), ``ciphertext`` (received, not yet
        fed to OpenSSL), ``bio_in``/``bio_out`` (in the memory BIOs),
        ``ssl_pending`` (decrypted inside OpenSSL), ``transport_write`` (the
        TCP write buffer); ``reading_paused``/``writing_paused``.
        """
        p = self._p
        return {
            "plaintext": len(p._rbuf),
            "plaintext_capacity": sys.getsizeof(p._rbuf) - _EMPTY_BYTEARRAY_SIZE,
            "ciphertext": 0 if p._cipher is None else len(p._cipher),
            "bio_in": p._incoming.pending,
            "bio_out": p._outgoing.pending,
            "ssl_pending": p._sslobj.pending() if p._sslobj is not None else 0,
            **self._flow_stats(),
        }


_EMPTY_BYTEARRAY_SIZE = sys.getsizeof(bytearray())


def _peercert_chain(sslobj: ssl.SSLObject) -> list[bytes] | None:
    getter = getattr(sslobj, "get_verified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = getattr(getattr(sslobj, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        return None
    chain = getter()
    if not chain:
        return None
    return [
        c if isinstance(c, bytes) else ssl.PEM_cert_to_DER_cert(c.public_bytes()) for c in chain
    ]


_SSL_EXTRA: dict[str, Callable[[ssl.SSLObject], Any]] = {
    "peercert": lambda s: s.getpeercert(binary_form=True),
    "peercert_chain": _peercert_chain,
    "cipher": lambda s: s.cipher(),
    "version": lambda s: s.version(),
    "server_hostname": lambda s: s.server_hostname,
    "alpn": lambda s: s.selected_alpn_protocol(),
    "ssl_object": lambda s: s,
}


# --------------------------------------------------------------------------- client


async def connect_tls(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    server_hostname: str | None = None,
    timeout: float = 15.0,
    local_addr: tuple[str, int] | None = None,
) -> TlsStream:
    """Open TCP to *host*:*port* and run the TLS handshake, all within *timeout* seconds.

    *server_hostname* is the name sent in SNI and checked against the
    server's certificate; ``None`` means *host*. Raises
    :class:`TlsHandshakeError` when the handshake fails (with OpenSSL's
    ``verify_code``/``verify_message`` when the certificate did not verify)
    and :class:`~iec62676_2_33.errors.TransportError` when TCP does.
    """
    name = host if server_hostname is None else server_hostname
    label = f"{name}:{port}" if name == host else f"{name}:{port} (at {host})"
    loop = asyncio.get_running_loop()
    transport: asyncio.Transport | None = None
    protocol: TlsEngine | None = None

    async def run() -> None:
        nonlocal transport, protocol
        tcp, protocol = await loop.create_connection(
            lambda: TlsEngine(
                ssl_context, server_side=False, server_hostname=name or None, label=label
            ),
            host,
            port,
            local_addr=local_addr,
        )
        transport = tcp
        assert protocol._handshake_waiter is not None
        await protocol._handshake_waiter
        protocol._handshake_waiter = None

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        if transport is not None:
            transport.abort()
            raise TlsHandshakeError(
                f"TLS handshake with {label} timed out after {timeout:g} s: is it a TLS "
                "server, and is the network path open?",
                reason="handshake timeout",
            ) from None
        raise TransportError(
            f"TCP connection to {label} timed out after {timeout:g} s: check the address "
            "and that the network path is open"
        ) from None
    except TransportError:
        raise
    except OSError as exc:
        # asyncio's strerror is "Connect call failed (addr)": name the errno instead
        # ("Connection refused"), which is what the uplink's Error must show (CFG-2).
        text = f"{os.strerror(exc.errno)} ({exc.strerror})" if exc.errno else str(exc)
        raise TransportError(f"cannot connect to {label}: {text}") from None
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    assert protocol is not None
    return TlsStream(protocol)


def report_authenticated(stream: ByteStream) -> None:
    """Tell the server that accepted *stream* that its peer authenticated.

    The peer's source is then *known* for a while: its next connections are
    admitted ahead of strangers', into the known-device reserve
    (:mod:`iec62676_2_33.sansio.admission`). A stream no :class:`~.tls_server.TlsServer`
    accepted (a client's, an in-memory one) is ignored.
    """
    if isinstance(stream, TlsStream) and stream._p._acceptor is not None:
        stream._p._acceptor.authenticated(stream._p)
