"""UPL-15, UPL-16: the HTTP/2 driver hands everything the role produced to the stream as one write.

A response split into one write per frame left the TLS layer sending a small
segment per frame, and a peer's delayed ACK then held each response about
40 ms; this pins the single write (the benchmarks measure the latency)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from iec62676_2_33.http2.client import H2ClientRole
from iec62676_2_33.http2.role import Event, RequestReceived, StreamEnded
from iec62676_2_33.http2.server import H2ServerRole
from iec62676_2_33.runtime.h2driver import H2Driver


class RecordingStream:
    """A ByteStream that records every write call; reads come from a queue."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self, max_bytes: int = 65536) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        self.writes.append([data])

    def write_nowait(self, data: bytes) -> None:
        self.writes.append([data])

    def writelines(self, parts: Sequence[bytes]) -> None:
        self.writes.append(list(parts))

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
        self.incoming.put_nowait(b"")

    def abort(self) -> None:
        self.incoming.put_nowait(b"")

    def extra(self, name: str, default: object = None) -> object:
        return default

    @property
    def at_eof(self) -> bool:
        return False


async def test_a_response_leaves_in_one_write_upl_16() -> None:
    """UPL-16: HEADERS and DATA of one response reach the stream in a single write call."""
    loop = asyncio.get_running_loop()
    cloud = H2ClientRole(now=loop.time())
    cloud.initiate()
    stream = RecordingStream()
    requests: list[int] = []

    def on_event(event: Event) -> None:
        if isinstance(event, RequestReceived):
            requests.append(event.stream_id)
        if isinstance(event, StreamEnded):
            device.send_response(event.stream_id, 200, [("content-type", "text/plain")], b"x" * 3000)
            driver.kick()

    device = H2ServerRole(now=loop.time())
    driver = H2Driver(stream, device, on_event)
    runner = asyncio.create_task(driver.run())
    try:
        stream.incoming.put_nowait(cloud.data_to_send())
        async with asyncio.timeout(5):
            while not stream.writes:  # the device's SETTINGS
                await asyncio.sleep(0)
        for chunk in (b"".join(w) for w in stream.writes):
            cloud.receive_data(chunk, loop.time())
        stream.writes.clear()
        cloud.send_request("GET", "/", authority="device")
        stream.incoming.put_nowait(cloud.data_to_send())
        async with asyncio.timeout(5):
            while not any(len(b"".join(w)) > 3000 for w in stream.writes):
                await asyncio.sleep(0)
        big = [w for w in stream.writes if len(b"".join(w)) > 3000]
        assert len(big) == 1, "the response's frames were written in separate calls"
        assert requests == [1]
        assert len(big[0]) >= 2  # HEADERS and DATA, handed over as parts, not joined
    finally:
        driver.close("test over")
        await asyncio.wait_for(runner, 5)
