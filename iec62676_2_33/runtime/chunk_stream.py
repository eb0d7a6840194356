"""Layer 4: a :class:`~..transport.base.ByteStream` over chunks in and whole writes out.

The RTSP tunnels of the cloud's RTSP front (an HTTP/2 stream of the uplink, or an
RTSP-over-HTTP GET/POST pair) and of the cluster's node relay (a GET/POST pair to
another node) read what arrives as chunks and send what the player wrote as one
piece per :meth:`~ChunkStream.drain`; the device relay's uplink streams
(:mod:`.rtsp_relay`) write the same way. :class:`ChunkStream` holds what they share:

* ``read(n)`` hands out the current chunk ``n`` bytes at a time, then waits for the
  next one (:meth:`~ChunkStream._next_chunk`); ``b""`` or a failure is the end, and
  stays so;
* ``write_nowait``/``writelines`` collect, ``drain`` joins what was collected and
  sends it in one piece (:meth:`~ChunkStream._send`), ``write`` does both, so the
  relay's burst of writes (an RTSP message, then interleaved frames) costs one
  send, not one per write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ChunkStream"]


class ChunkStream:
    """The shared half of a tunnel stream; a subclass gives :meth:`_next_chunk` (or its own ``read``), :meth:`_send`,
    ``close`` and ``abort``."""

    def __init__(self) -> None:
        self._rest = b""
        self._eof = False
        self._pending: list[bytes] = []

    async def _next_chunk(self) -> bytes:
        """The next bytes that arrived (``b""``: the end); raises ``TransportError`` on failure."""
        raise NotImplementedError

    async def _send(self, data: bytes) -> None:
        """Send ``data`` (what the writes since the last drain collected); ``TransportError`` on failure."""
        raise NotImplementedError

    async def read(self, max_bytes: int = 65536) -> bytes:
        if not self._rest and not self._eof:
            try:
                self._rest = await self._next_chunk()
            except Exception:
                self._eof = True  # a failed stream stays ended: the next read is b"", not a wait
                raise
            self._eof = not self._rest
        data, self._rest = self._rest[:max_bytes], self._rest[max_bytes:]
        return data

    def write_nowait(self, data: bytes) -> None:
        self._pending.append(bytes(data))

    def writelines(self, parts: Sequence[bytes]) -> None:
        self._pending.extend(bytes(p) for p in parts)

    async def drain(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            await self._send(data)

    async def write(self, data: bytes) -> None:
        self.write_nowait(data)
        await self.drain()

    def extra(self, name: str, default: Any = None) -> Any:
        return default

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._rest
