"""Layer 1 (sans-IO): sources whose connections were cut off for flooding wait before their next one
(issue 8, finding 5: rapid reset on the public HTTP ports).

The HTTP/2 role ends a connection that breaks a flood limit (rapid reset,
PING/SETTINGS/empty-frame floods, ... :mod:`..http2.limits`) with GOAWAY
ENHANCE_YOUR_CALM. That bounds what one connection costs, not what a client
that reconnects at once costs: each new connection gets the whole budget
again (200 resets), so four connections reopened in a loop kept a core busy
and legitimate calls slowed to a few percent (``bench/bench_rapid_reset.py``).
A :class:`PenaltyBox` remembers such sources: after a *strike* (a connection
of the source was cut off for flooding) new connections from it are refused
at once, before any HTTP/2 work, for ``first`` seconds, doubling with each
further strike up to ``cap``; a source without a strike for ``forget_after``
seconds starts again from ``first``.

Sources are keyed like :class:`~.admission.Admission` keys them (IPv4 address,
IPv6 /64), so a host cannot dodge the box by changing addresses within its
prefix. Clients behind one NAT share a source: the box then blocks them
together, for seconds, and only after one of them flooded. The table is
bounded (``max_sources``, least recently struck first out). No clock, no I/O:
the caller passes ``now`` (monotonic seconds).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

from ..errors import ConfigurationError
from .admission import source_key

__all__ = ["DEFAULT_PENALTY", "PenaltyBox", "PenaltyLimits"]


@dataclass(frozen=True)
class PenaltyLimits:
    """How long a flooding source waits (seconds) and how many sources are remembered."""

    first: float = 1.0
    cap: float = 60.0
    forget_after: float = 300.0
    max_sources: int = 4096

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ConfigurationError(f"PenaltyLimits.{f.name} must be positive")
        if self.cap < self.first:
            raise ConfigurationError("PenaltyLimits.cap must not be below first")


DEFAULT_PENALTY = PenaltyLimits()


@dataclass
class _Entry:
    strikes: int
    until: float
    last: float


class PenaltyBox:
    """Sources that flooded, and until when their new connections are refused (module docstring)."""

    def __init__(self, limits: PenaltyLimits = DEFAULT_PENALTY) -> None:
        self.limits = limits
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @staticmethod
    def source_key(address: str | None) -> str:
        """The source ``address`` counts against (:func:`.admission.source_key`)."""
        return source_key(address)

    def strike(self, source: str, now: float) -> float:
        """A connection of ``source`` was cut off for flooding; returns how long it is now blocked."""
        limits = self.limits
        entry = self._entries.pop(source, None)
        strikes = 1 if entry is None or now - entry.last > limits.forget_after else entry.strikes + 1
        block = min(limits.first * (1 << min(strikes - 1, 32)), limits.cap)
        self._entries[source] = _Entry(strikes=strikes, until=now + block, last=now)
        while len(self._entries) > limits.max_sources:
            self._entries.popitem(last=False)
        return block

    def blocked(self, source: str, now: float) -> bool:
        """New connections from ``source`` are refused now."""
        entry = self._entries.get(source)
        return entry is not None and now < entry.until

    def __len__(self) -> int:
        return len(self._entries)
