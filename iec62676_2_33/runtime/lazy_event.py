"""Layer 4: an event flag that holds a waiter list only while someone waits.

:class:`LazyEvent` has :class:`asyncio.Event`'s interface (``set``, ``clear``,
``is_set``, ``wait``) and meaning: ``wait()`` returns at once while the flag is
set, otherwise when ``set()`` is next called; ``set()`` wakes every waiter,
even if ``clear()`` follows before they run.

Why not ``asyncio.Event``: each one makes a ``collections.deque`` for its
waiters when it is built, and a deque allocates a 64-slot block at once (about
760 bytes with the object and its ``__dict__``). The cloud keeps four events per
uplink (the channel's progress, SETTINGS and capacity signals, the driver's
writer wake-up) that are nearly always idle: 3.4 KiB per idle uplink
(tracemalloc, 2,000 devices); with this class an idle uplink costs 3.3 KiB less
RSS (53.3 -> 50.0 KiB, ``bench/bench_cloud_memory.py``, 5,000 devices). Here the flag and a ``None`` are all an
idle event holds; the list of futures exists while a task waits.
"""

from __future__ import annotations

import asyncio

__all__ = ["LazyEvent"]


class LazyEvent:
    """``asyncio.Event`` without a waiter deque while nobody waits (see the module docstring)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        """Set the flag and wake every task waiting for it."""
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        """Until the flag is set (at once when it is); True, like ``asyncio.Event.wait``."""
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            waiters = self._waiters
            if waiters is not None and waiter in waiters:  # cancelled, or woken by a set() it still lists
                waiters.remove(waiter)
                if not waiters:
                    self._waiters = None
