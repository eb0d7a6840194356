"""Layer 4: a bounded count of things held at once (connections, sessions) for the RTSP fronts.

Theory of operation
-------------------
A front takes a slot *before* it spends anything on what it admits — before it reads a
connection's first byte, before it awaits the tunnel or upstream connection of a session — and
gives it back when that ends, however it ends (``finally``). So work that is still
starting counts like work that is running: N players opening at once cannot all pass a check
that only sees sessions already open. :meth:`Slots.take` never waits: a full count refuses at
once (the caller closes the connection, or answers ``503``), so a flood costs no queue.

One event loop owns a :class:`Slots` (no lock: ``take`` and ``release`` run between awaits).
:class:`asyncio.Semaphore` would do the counting but shows neither its limit nor its use
(``in_use`` feeds the fronts' counters and logs), and a non-blocking take on it is two calls.
"""

from __future__ import annotations

__all__ = ["MAX_CONNECTIONS", "Slots"]

#: Player connections one RTSP front holds at once by default (each is a socket and a task; beyond it a
#: connection is closed at once, before anything is read from it).
MAX_CONNECTIONS = 1024


class Slots:
    """At most ``limit`` held at once (module docstring)."""

    __slots__ = ("in_use", "limit", "refused")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a limit must be at least 1, not {limit}")
        self.limit = limit
        #: Held now.
        self.in_use = 0
        #: Takes refused so far.
        self.refused = 0

    def take(self) -> bool:
        """Hold one more (``True``), or ``False`` when all ``limit`` are held."""
        if self.in_use >= self.limit:
            self.refused += 1
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        """Give back one that :meth:`take` granted."""
        if self.in_use <= 0:
            raise RuntimeError("released a slot that was not taken")
        self.in_use -= 1
