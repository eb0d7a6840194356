"""The runtime's event flag (``runtime/lazy_event.py``) behaves as ``asyncio.Event`` and holds no
waiter list while nobody waits (a helper test: no requirement of its own)."""

from __future__ import annotations

import asyncio

import pytest

from iec62676_2_33.runtime.lazy_event import LazyEvent

BOUND = 5.0


async def test_wait_returns_at_once_while_set() -> None:
    event = LazyEvent()
    event.set()
    assert event.is_set()
    async with asyncio.timeout(BOUND):
        assert await event.wait() is True
    assert event._waiters is None


async def test_set_wakes_every_waiter_even_if_cleared_before_they_run() -> None:
    event = LazyEvent()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert event._waiters is not None and len(event._waiters) == 3
    event.set()
    event.clear()
    async with asyncio.timeout(BOUND):
        assert await asyncio.gather(*waiters) == [True, True, True]
    assert not event.is_set()
    assert event._waiters is None


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    event = LazyEvent()
    waiter = asyncio.create_task(event.wait())
    other = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert event._waiters is not None and len(event._waiters) == 1
    event.set()
    async with asyncio.timeout(BOUND):
        assert await other is True
    assert event._waiters is None


async def test_a_deadline_on_wait_expires_while_unset() -> None:
    event = LazyEvent()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await event.wait()
    assert event._waiters is None
