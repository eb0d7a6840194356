"""UPL-16, GEN-3: rapid reset (HEADERS+RST_STREAM pairs, CVE-2023-44487) against the cloud's HTTP proxy
on h2c: each flooding connection is cut off with GOAWAY ENHANCE_YOUR_CALM after the role's reset
budget and the source's next connections are refused for a while (``HttpSettings.flood_penalty``),
requests from other sources keep being served while the floods go on, no device stream stays open,
and nothing is logged with a traceback or above INFO -- per connection or otherwise.

The CPU share a flood takes is measured by ``bench/bench_rapid_reset.py``; no test here asserts a
duration."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest
from h2.errors import ErrorCodes
from httpd_env import in_thread, rapid_reset
from hyperframe.frame import GoAwayFrame
from test_proxy_budgets import DEVICE, proxy_env

from iec62676_2_33.runtime.proxy import ProxyLimits
from iec62676_2_33.testing.harness import wait_until


def goaway_codes(port: int, path: str) -> list[int]:
    """One connection from another loopback address than the legitimate client's: 400 POST HEADERS (no END_STREAM)
    +RST_STREAM(CANCEL) in one write; the GOAWAY codes it got back (none: refused)."""
    frames = rapid_reset(port, path=path, method="POST", end_stream=False)
    return [f.error_code for f in frames if isinstance(f, GoAwayFrame)]


async def test_rapid_reset_on_the_proxy_is_cut_off_without_tracebacks(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """GEN-3, UPL-16: a flood on the proxy's h2c port gets GOAWAY ENHANCE_YOUR_CALM, and the flooding
    source's next connections are refused (or cut off again once its penalty is over) while ordinary
    requests from another source reach the device; afterwards no request is active and no device
    stream open; no record with a traceback and none above INFO."""
    caplog.set_level(logging.DEBUG, logger="iec62676_2_33")
    with proxy_env(tmp_path, ProxyLimits(timeout=20)) as env:
        port = int(env.url.rsplit(":", 1)[1])
        path = f"/devices/{DEVICE}/flood"
        first = await asyncio.to_thread(goaway_codes, port, path)
        assert first == [ErrorCodes.ENHANCE_YOUR_CALM]

        stop = threading.Event()
        outcomes: list[list[int]] = []

        def flood() -> None:
            give_up = time.monotonic() + 60  # a bound, not a measurement
            while not stop.is_set() and time.monotonic() < give_up:
                outcomes.append(goaway_codes(port, path))

        flooders = [in_thread(flood) for _ in range(3)]
        await asyncio.to_thread(wait_until, lambda: len(outcomes) >= 3, what="the flood to start")
        statuses = []
        async with httpx.AsyncClient(timeout=20) as client:
            for i in range(10):
                got = await client.post(f"{env.url}/devices/{DEVICE}/legit/{i}", content=b"legit")
                statuses.append(got.status_code)
        flooding = all(thread.is_alive() for thread, _ in flooders)
        stop.set()
        for thread, result in flooders:
            await asyncio.to_thread(thread.join, 30)
            assert not thread.is_alive() and result == [None]
        stats = env.proxy.stats
        await asyncio.to_thread(wait_until, lambda: stats.active == 0 and env.channel().role.open_streams == 0,
                                what="no request active and no device stream open")
    assert statuses == [200] * 10 and flooding  # served while the floods went on
    assert all(codes in ([ErrorCodes.ENHANCE_YOUR_CALM], []) for codes in outcomes), outcomes
    assert [] in outcomes  # refused: the source is in the penalty box
    noisy = [r for r in caplog.records if r.exc_info or r.levelno > logging.INFO]
    assert not noisy, [r.getMessage() for r in noisy]
