"""Layer 4: the named deadlines of one connection, on one lazy timer (issue 8: slow clients).

A connection arms a deadline before each wait that a client controls
(``"head"``: the request head must be complete; ``"idle"``: the next request
must start; ``"send"``: the client must take what we wrote; ``"linger"``: the
unread rest of a body is dropped before closing) and clears it when the wait
is over. Arming and
clearing only write a dict entry: the one timer of the connection is moved
earlier when needed and, when it fires early (a deadline was cleared or moved
later), just re-arms for the earliest one still pending -- no timer handle is
created or cancelled per read or write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Deadlines"]


class Deadlines:
    """Named deadlines; ``on_expire(name)`` runs (on the loop) for the first one that passes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expire: Callable[[str], None]) -> None:
        self._loop = loop
        self._on_expire = on_expire
        self._due: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def arm(self, name: str, seconds: float) -> None:
        when = self._loop.time() + seconds
        self._due[name] = when
        if self._timer is None or when < self._timer_at:
            self._schedule(when)

    def clear(self, name: str) -> None:
        self._due.pop(name, None)

    def armed(self, name: str) -> bool:
        return name in self._due

    def close(self) -> None:
        self._due.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._due:
            return
        now = self._loop.time()
        name, when = min(self._due.items(), key=lambda item: item[1])
        if when > now:
            self._schedule(when)
            return
        del self._due[name]
        self._on_expire(name)
        if self._due and self._timer is None:
            self._schedule(min(self._due.values()))
