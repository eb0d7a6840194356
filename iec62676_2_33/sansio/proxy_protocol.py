"""Layer 1 (sans-IO): the PROXY protocol version 2 header a TCP balancer puts before the
device's TLS bytes, so the cloud learns the device's real address (UPL-1, UPL-9).

A cluster of cloud nodes sits behind a balancer in TCP mode with TLS passthrough
(HAProxy ``send-proxy-v2``): the device's TLS session, mTLS and tokens end at a node,
and the node's peer address is the balancer's. The balancer therefore sends, before
the first byte of the device, a binary header (HAProxy's "PROXY protocol" text,
section 2.2) naming the original source and destination. The node reads it first,
then admits the connection by the *device's* address (:mod:`.admission`: per-source
limits on the balancer's address would throttle every device together) and starts TLS
on the bytes after it.

Theory of operation
-------------------
:class:`ProxyHeaderReader` takes bytes (:meth:`~ProxyHeaderReader.feed`) and returns
``None`` until a whole header arrived, then a frozen :class:`ProxyHeader`; the bytes
after it are :attr:`~ProxyHeaderReader.trailing_data` (the TLS ClientHello). Wire
layout::

    12 bytes  signature  0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
     1 byte   version (high nibble, must be 2) | command (0 LOCAL, 1 PROXY)
     1 byte   family (0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) | transport (0 UNSPEC, 1 STREAM, 2 DGRAM)
     2 bytes  length of what follows (big-endian)
     ...      addresses (INET 12, INET6 36, UNIX 216 bytes), then TLVs (type, 2-byte length, value)

* **Fail fast.** Each byte of the signature is checked as it arrives, so a peer
  that sends a TLS ClientHello (or the text form of version 1) where a header is
  due is refused after its first byte, not after a deadline.
* **Bounded.** The whole header may be at most ``max_header`` bytes (default
  :data:`MAX_HEADER`); a larger declared length is refused before any of it is
  buffered. The reader holds at most that many bytes.
* **LOCAL** (the balancer's own health check) carries no client address:
  :attr:`ProxyHeader.source` is ``None`` and the caller keeps the peer address.
  HAProxy's TCP check sends LOCAL and resets the connection; the TLS server counts
  that as a health check, not as a failed handshake.
  PROXY over UNSPEC/UNIX/DGRAM is refused: a device uplink is TCP over IP.
* **TLVs** are checked for structure (each fits the header) and handed over as
  ``(type, value)`` pairs; none changes what this module decides. A CRC32c TLV is
  not verified: the header crosses one trusted hop, and the connection is only
  accepted from configured balancer addresses (the caller's rule).

No I/O, no clock: the caller owns the deadline for the header.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

from ..errors import RemoteProtocolError

__all__ = ["MAX_HEADER", "SIGNATURE", "ProxyHeader", "ProxyHeaderError", "ProxyHeaderReader"]

#: The twelve bytes every version 2 header starts with.
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Largest header accepted by default: the fixed part, IPv6 addresses and 460 bytes of TLVs
#: (HAProxy sends none unless asked to; a unique-id or authority TLV fits easily).
MAX_HEADER = 512

_FIXED = 16
_ADDRESS_LENGTH = {1: 12, 2: 36, 3: 216}


class ProxyHeaderError(RemoteProtocolError):
    """The bytes where a PROXY v2 header was due are not one (or one we refuse)."""


@dataclass(frozen=True, kw_only=True)
class ProxyHeader:
    """One PROXY v2 header: the original connection as the balancer saw it."""

    command: Literal["LOCAL", "PROXY"]
    #: (address, port) of the client; ``None`` for LOCAL.
    source: tuple[str, int] | None
    #: (address, port) the client connected to (the balancer's front); ``None`` for LOCAL.
    destination: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...] = ()
    #: Bytes the header took on the wire.
    length: int = 0


class ProxyHeaderReader:
    """Reads one PROXY v2 header from the start of a stream (see the module docstring)."""

    def __init__(self, *, max_header: int = MAX_HEADER) -> None:
        if max_header < _FIXED + _ADDRESS_LENGTH[2]:
            raise ValueError(f"max_header must be at least {_FIXED + _ADDRESS_LENGTH[2]} (an IPv6 header)")
        self.max_header = max_header
        self._buf = bytearray()
        self._header: ProxyHeader | None = None
        self.trailing_data = b""

    @property
    def header(self) -> ProxyHeader | None:
        """The header, once :meth:`feed` returned it."""
        return self._header

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Take received bytes; the header once complete, else ``None``. Raises
        :class:`ProxyHeaderError` as soon as the bytes cannot be a header we accept."""
        if self._header is not None:
            raise ProxyHeaderError("the PROXY header was already read", status_hint=0)
        buf = self._buf
        need = self._needed()
        take = max(0, need - len(buf))
        buf += data[:take]
        rest = data[take:]
        self._check_signature()
        if len(buf) >= _FIXED and need == _FIXED:
            need = self._needed()  # the length field is in now
            more = need - len(buf)
            buf += rest[:more]
            rest = rest[more:]
        if len(buf) < need:
            return None
        self._header = _parse(bytes(buf))
        self.trailing_data = bytes(rest)
        self._buf = bytearray()
        return self._header

    def _needed(self) -> int:
        """Bytes of header: the fixed part until its length field is in, then the whole."""
        buf = self._buf
        if len(buf) < _FIXED:
            return _FIXED
        total: int = _FIXED + struct.unpack_from("!H", buf, 14)[0]
        if total > self.max_header:
            raise ProxyHeaderError(f"PROXY header of {total} bytes is over the limit of {self.max_header}",
                                   status_hint=0)
        return total

    def _check_signature(self) -> None:
        head = bytes(self._buf[: len(SIGNATURE)])
        if not SIGNATURE.startswith(head):
            what = "a PROXY v1 text header" if head.startswith(b"P") else "no PROXY v2 signature"
            raise ProxyHeaderError(f"expected a PROXY protocol v2 header, got {what}", status_hint=0)
        if len(self._buf) > len(SIGNATURE):
            version = self._buf[12] >> 4
            if version != 2:
                raise ProxyHeaderError(f"PROXY protocol version {version} is not supported (only 2)",
                                       status_hint=0)


def _parse(raw: bytes) -> ProxyHeader:
    command_code = raw[12] & 0x0F
    family, transport = raw[13] >> 4, raw[13] & 0x0F
    body = raw[_FIXED:]
    if command_code == 0:
        return ProxyHeader(command="LOCAL", source=None, destination=None, tlvs=(), length=len(raw))
    if command_code != 1:
        raise ProxyHeaderError(f"PROXY header command {command_code} is unknown", status_hint=0)
    if family not in (1, 2) or transport != 1:
        raise ProxyHeaderError(f"PROXY header for family {family}, transport {transport}: only TCP over IPv4 "
                               "or IPv6 is accepted", status_hint=0)
    size = _ADDRESS_LENGTH[family]
    if len(body) < size:
        raise ProxyHeaderError(f"PROXY header too short for its addresses ({len(body)} < {size} bytes)",
                               status_hint=0)
    n = 4 if family == 1 else 16
    src = str(ipaddress.ip_address(body[:n]))
    dst = str(ipaddress.ip_address(body[n : 2 * n]))
    sport, dport = struct.unpack_from("!HH", body, 2 * n)
    return ProxyHeader(command="PROXY", source=(src, sport), destination=(dst, dport),
                       tlvs=_tlvs(body[size:]), length=len(raw))


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    out: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        if len(data) - at < 3:
            raise ProxyHeaderError("PROXY header ends inside a TLV", status_hint=0)
        kind, length = data[at], struct.unpack_from("!H", data, at + 1)[0]
        end = at + 3 + length
        if end > len(data):
            raise ProxyHeaderError(f"PROXY header TLV 0x{kind:02x} of {length} bytes overruns the header",
                                   status_hint=0)
        out.append((kind, bytes(data[at + 3 : end])))
        at = end
    return tuple(out)


def encode(source: tuple[str, int] | None, destination: tuple[str, int] | None = None, *,
           tlvs: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """A PROXY v2 header (``source=None``: LOCAL). What a balancer sends; the tests and the
    node-to-node client use it."""
    extra = b"".join(bytes([kind]) + struct.pack("!H", len(value)) + value for kind, value in tlvs)
    if source is None:
        return SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(extra)) + extra
    dst = destination or (("0.0.0.0" if ":" not in source[0] else "::"), 0)
    a, b = ipaddress.ip_address(source[0]), ipaddress.ip_address(dst[0])
    if a.version != b.version:
        raise ValueError("source and destination of a PROXY header must be the same IP version")
    family = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack("!HH", source[1], dst[1]) + extra
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body
