"""UPL-16: ``CloudListener.request(max_body=…)`` stops reading a device's answer at the limit — the stream is
reset and :class:`AnswerTooLarge` raised, nothing beyond the limit is buffered — and the uplink keeps serving.
(The VSS gateway calls lower systems on uplinks so, with its 4 MiB answer budget.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from iec62676_2_33.errors import TransportError
from iec62676_2_33.runtime.agent import UplinkAgent
from iec62676_2_33.runtime.cloud import AnswerTooLarge
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import FAST, RunningCloud, UplinkPki, seed_device

CHUNK = b"x" * (1 << 20)
DRIP = b"x" * (64 << 10)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """``/big``: 16 MiB streamed; ``/bigger``: 17 MiB; ``/drip``: 64 KiB every 0.2 s for 4 s (the device hands
    its answers on in pieces of at least 64 KiB); anything else: a short answer."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    if environ["PATH_INFO"] in ("/big", "/bigger"):
        return (CHUNK for _ in range(16 if environ["PATH_INFO"] == "/big" else 17))
    if environ["PATH_INFO"] == "/drip":
        return (time.sleep(0.2) or DRIP for _ in range(20))
    return [b"small"]


Call = Callable[..., bytes]


def with_device(tmp_path: Path, checks: Callable[[Call], None]) -> None:
    """A cloud and a device serving :func:`app` over its uplink; ``checks(call)`` runs in a thread, where
    ``call(path, timeout=…, max_body=…)`` is ``cloud.request(...).body`` (each bounded)."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs, proxy=False)
    try:
        seed_device(tmp_path / "dev", certs, "cam", [(cloud.uplink_url(), ("User",))])

        def call(path: str, timeout: float = 20.0, **budget: Any) -> bytes:
            future = asyncio.run_coroutine_threadsafe(
                cloud.cloud.request("cam", "GET", path, timeout=timeout, **budget), cloud.loop)
            return future.result(30).body

        async def main() -> None:
            with DeviceStore(tmp_path / "dev") as store:
                agent = UplinkAgent(store, app, settings=FAST)
                stop = asyncio.Event()
                task = asyncio.create_task(agent.run(stop))
                try:
                    await asyncio.to_thread(cloud.wait_for, "cam")
                    await asyncio.to_thread(checks, call)
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 20)

        asyncio.run(main())
    finally:
        cloud.stop()


def test_an_answer_over_max_body_is_cut_and_the_uplink_keeps_serving_upl_16(tmp_path: Path) -> None:
    """UPL-16: a 16 MiB answer with max_body = 1 MiB raises AnswerTooLarge; the next request on the same uplink
    is answered; without max_body the whole answer arrives (the limit is the caller's)."""

    def checks(call: Call) -> None:
        with pytest.raises(AnswerTooLarge):
            call("/big", max_body=1 << 20)
        assert call("/small", max_body=1 << 20) == b"small"
        assert len(call("/big", max_body=None)) == 16 << 20

    with_device(tmp_path, checks)


def test_a_whole_answer_has_one_deadline_and_no_answer_passes_16_mib_upl_16(tmp_path: Path) -> None:
    """UPL-16: ``request`` bounds the whole answer: a device that sends a piece every 0.2 s (each well within
    the 1 s timeout) is TimeoutError at 1 s, not answered after 4 s; whatever max_body, an answer over
    H2Limits.max_body_size (16 MiB) is cut, and the error says so (not that the device reset it)."""

    def checks(call: Call) -> None:
        assert call("/drip", 10.0) == DRIP * 20
        with pytest.raises(TimeoutError):
            call("/drip", 1.0)
        with pytest.raises(TransportError, match="passed 16777216 bytes .H2Limits.max_body_size."):
            call("/bigger")
        assert call("/small", 5.0) == b"small"

    with_device(tmp_path, checks)
