"""UPL-2, UPL-3, UPL-15, UPL-16: the cloud's connection handler drives an uplink itself.

``CloudListener.handle`` answers the upgrade, runs the channel in its own task
(no task for the channel, none for the SETTINGS wait: an idle uplink is the
handler plus the HTTP/2 driver's reader and writer), registers the device when
its SETTINGS arrive, serves requests, and -- cancelled -- still says GOAWAY and
reports the disconnection. The device end is driven by hand over an in-memory
stream pair (the sans-IO upgrade client and HTTP/2 server role).
"""

from __future__ import annotations

import asyncio
import contextlib

from helpers import parse_frames
from hyperframe.frame import GoAwayFrame

from iec62676_2_33.http2.role import PREFACE, RequestReceived, StreamEnded
from iec62676_2_33.http2.server import H2ServerRole
from iec62676_2_33.runtime.cloud import CloudListener, DeviceEvent, ListenerSettings
from iec62676_2_33.sansio.upgrade import Switched, UpgradeClient, UpgradeRequest
from iec62676_2_33.transport.base import ByteStream
from iec62676_2_33.transport.memory import MemoryStream, memory_pipe

BOUND = 10.0


class NamedDevice:
    """Authenticates every device as ``cam-h`` (the handler, not authentication, is under test)."""

    async def authenticate(self, stream: ByteStream, request: UpgradeRequest) -> tuple[str, str]:
        return "cam-h", "mTLS"


async def _upgrade(device: MemoryStream) -> bytes:
    """The device's upgrade; returns the bytes read past the 101."""
    client = UpgradeClient("https://cloud.example/uplink")
    await device.write(client.initiate())
    async with asyncio.timeout(BOUND):
        while True:
            event = client.receive_data(await device.read())
            if isinstance(event, Switched):
                return event.trailing_data


async def test_the_handler_registers_serves_and_says_goaway_when_cancelled_upl_3_upl_15_upl_16() -> None:
    """UPL-3, UPL-15, UPL-16: registered on the device's SETTINGS, two tasks per uplink besides the
    handler, a request answered; a cancelled handler sends GOAWAY and publishes the disconnection."""
    loop = asyncio.get_running_loop()
    listener = CloudListener(NamedDevice(), settings=ListenerSettings(preface_timeout=BOUND))  # type: ignore[arg-type]
    seen: list[DeviceEvent] = []
    listener.observers.append(seen.append)
    cloud_end, device = memory_pipe(extra_a={"peername": ("192.0.2.7", 40000)})
    tasks_before = len(asyncio.all_tasks())
    handler = asyncio.create_task(listener.handle(cloud_end))
    try:
        trailing = await _upgrade(device)
        role = H2ServerRole(now=loop.time())
        role.initiate()
        await device.write(role.data_to_send())  # our SETTINGS: the cloud registers us
        async with asyncio.timeout(BOUND):
            while len(trailing) < len(PREFACE) + 9:
                trailing += await device.read()
        role.receive_data(trailing, loop.time())
        info = await listener.wait_for("cam-h", timeout=BOUND)
        assert info.peer == "192.0.2.7:40000" and [e.kind for e in seen] == ["connected"]
        # The handler task and the driver's reader and writer: nothing else per uplink.
        assert len(asyncio.all_tasks()) - tasks_before == 3

        async def device_side() -> None:
            while True:
                data = await device.read()
                if not data:
                    return
                for event in role.receive_data(data, loop.time()):
                    if isinstance(event, RequestReceived):
                        stream_id = event.stream_id
                    if isinstance(event, StreamEnded):
                        role.send_response(stream_id, 200, [("content-type", "text/plain")], b"pong")
                if out := role.data_to_send():
                    await device.write(out)

        serving = asyncio.create_task(device_side())
        answer = await listener.request("cam-h", "GET", "/ping", timeout=BOUND)
        assert (answer.status, answer.body) == (200, b"pong")
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        role.data_to_send()

        handler.cancel()
        rest = bytearray()
        async with asyncio.timeout(BOUND):
            while chunk := await device.read():
                rest += chunk
        goaway = [f for f in parse_frames(bytes(rest)) if isinstance(f, GoAwayFrame)]
        assert goaway and goaway[-1].additional_data == b"cloud shutting down"
        async with asyncio.timeout(BOUND):
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        assert listener.devices() == []
        assert [(e.kind, e.reason) for e in seen] == [("connected", None), ("disconnected", "cloud shutting down")]
    finally:
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(handler, BOUND)
        await device.close()
