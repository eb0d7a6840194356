"""UPL-16: a VMS call to a device at another node has one deadline for the whole answer, as on one node.

``request_at_node`` reads the holding node's answer from the node-to-node connection. Here the router is
a stand-in whose answer arrives in pieces 0.2 s apart (each well within the call's 1 s timeout, 4 s in all):
the call ends at its deadline with the node named, and the answer's stream is closed (its relay slot freed).
The cross-node path with real nodes, NATS and devices is in ``test_cluster_api.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from iec62676_2_33.cluster.calls import request_at_node
from iec62676_2_33.cluster.records import NodeRecord
from iec62676_2_33.errors import TransportError

NODE_A = NodeRecord(node="a", internal="127.0.0.1:1", started=0.0)
NODE_B = NodeRecord(node="b", internal="127.0.0.1:2", started=0.0)


class Trickle(httpx.AsyncByteStream):
    """An answer body of 20 pieces, one every 0.2 s; ``closed`` once the reader lets it go."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(20):
            await asyncio.sleep(0.2)
            yield b"x" * 1024

    async def aclose(self) -> None:
        self.closed.set()


@dataclass
class Registry:
    node: NodeRecord = NODE_A

    def locate(self, device_id: str) -> NodeRecord | None:
        return NODE_B if device_id == "cam-b" else None


@dataclass
class Router:
    """What ``request_at_node`` uses of a :class:`~iec62676_2_33.cluster.router.NodeRouter`."""

    registry: Registry = field(default_factory=Registry)
    body: Trickle = field(default_factory=Trickle)

    async def send_to(self, node: NodeRecord, method: str, raw_path: bytes, headers: list[tuple[str, str]],
                      body: bytes, *, timeout: float) -> httpx.Response:
        return httpx.Response(200, headers=[("content-type", "application/soap+xml")], stream=self.body)


async def test_a_trickled_answer_from_another_node_ends_at_the_deadline_upl_16() -> None:
    """UPL-16: pieces 0.2 s apart never trip a per-piece timeout of 1 s; the call's one deadline does, the
    error names the node, and the answer's stream is closed."""
    router = Router()
    async with asyncio.timeout(10):
        with pytest.raises(TransportError, match="node b holding device 'cam-b' did not answer within 1 s"):
            await request_at_node(router, "cam-b", "POST", "/onvif/device_service", timeout=1.0)  # type: ignore[arg-type]
        await asyncio.wait_for(router.body.closed.wait(), 5)


async def test_an_answer_in_time_is_whole_upl_16() -> None:
    """UPL-16: the same answer with time to spare arrives whole."""
    async with asyncio.timeout(20):
        answer = await request_at_node(Router(), "cam-b", "POST", "/onvif/device_service", timeout=10.0)  # type: ignore[arg-type]
    assert answer.status == 200 and answer.body == b"x" * 20 * 1024
