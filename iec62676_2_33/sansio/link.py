"""Layer 1 (sans-IO): monitoring and lifecycle of the uplinks (UPL-7, UPL-8, UPL-9, UPL-10).

Theory of operation
-------------------
Two small clocks-in state machines; neither reads the clock nor does I/O.
The caller passes ``now`` (seconds, monotonic) into every call and asks
``next_deadline()`` when to call back — the aioquic habit — so tests walk a
fake clock and never sleep.

:class:`LinkMonitor` watches one live uplink (UPL-7, UPL-8). Every byte from
the cloud counts as life (``data_received``). When nothing has arrived for
``idle_ping_after`` seconds and no PING is outstanding, ``on_timer`` asks for
an HTTP/2 PING (:class:`SendPing`); PINGs are never sent more often than once
per ``idle_ping_after``. When nothing has arrived for *more than*
``dead_after`` seconds (30 s by UPL-8) it asks to close the link
(:class:`CloseLink`); the runtime then closes the connection and tells the
supervisor. With ``ping_timeout`` set, an unanswered PING closes the link
after that many seconds too. ::

    t = last byte received
    t + idle_ping_after       -> SendPing   (once; again only after ack + idle)
    t + dead_after            -> nothing yet ("more than" 30 s)
    just after t + dead_after -> CloseLink  (then the monitor is closed)

:class:`UplinkSupervisor` is the lifecycle of one uplink configuration
(UPL-8, UPL-9, UPL-10: the runtime keeps one per configuration, all in
parallel). Its ``status`` is the ``tup:ConnectionStatus`` of the
configuration (CFG-1) and ``error`` the human-readable last error. The
transitions are a table::

    Offline    --should_connect (wait over)-->  Connecting
    Connecting --connected-------------------->  Connected    (error cleared)
    Connecting --connect_failed--------------->  Offline      (next wait from backoff)
    Connected  --disconnected----------------->  Offline      (backoff reset first if the
                                                               link was up >= stable_after)
    any        --stop------------------------->  Stopped      (status Offline, no attempts)

The first attempt is due at construction time; each failure schedules the
next attempt ``ReconnectBackoff.next_delay()`` seconds later (UPL-9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import ConfigurationError, LocalProtocolError
from .backoff import ReconnectBackoff

__all__ = [
    "CONNECTED",
    "CONNECTING",
    "OFFLINE",
    "CloseLink",
    "ConnectionStatus",
    "LinkAction",
    "LinkMonitor",
    "SendPing",
    "UplinkSupervisor",
]


# ------------------------------------------------------------------- link monitor


@dataclass(frozen=True, kw_only=True)
class LinkAction:
    """Base class of what :meth:`LinkMonitor.on_timer` asks the runtime to do."""


@dataclass(frozen=True, kw_only=True)
class SendPing(LinkAction):
    """Send an HTTP/2 PING frame with this 8-byte payload (UPL-7)."""

    opaque: bytes


@dataclass(frozen=True, kw_only=True)
class CloseLink(LinkAction):
    """Close the uplink connection and reconnect (UPL-8); ``reason`` is human readable."""

    reason: str


def _just_after(t: float) -> float:
    """The first float later than ``t`` (for "more than" deadlines)."""
    return math.nextafter(t, math.inf)


class LinkMonitor:
    """Idle PINGs and the dead-link timeout of one live uplink (UPL-7, UPL-8).

    ``now`` is the time the link came up. ``idle_ping_after``: seconds of
    silence after which a PING is sent; ``dead_after``: seconds of silence
    after which (strictly more than) the link is closed; ``ping_timeout``:
    optionally, seconds after which an unanswered PING closes the link.
    """

    def __init__(
        self,
        now: float,
        *,
        idle_ping_after: float = 10.0,
        dead_after: float = 30.0,
        ping_timeout: float | None = None,
    ) -> None:
        if not idle_ping_after > 0:
            raise ConfigurationError(f"idle_ping_after must be positive, not {idle_ping_after}")
        if not dead_after > 0:
            raise ConfigurationError(f"dead_after must be positive, not {dead_after}")
        if ping_timeout is not None and not ping_timeout > 0:
            raise ConfigurationError(f"ping_timeout must be positive, not {ping_timeout}")
        self.idle_ping_after = idle_ping_after
        self.dead_after = dead_after
        self.ping_timeout = ping_timeout
        self._last_rx = now
        self._last_ping_sent: float | None = None
        self._outstanding: tuple[bytes, float] | None = None
        self._counter = 0
        self._closed = False
        self._last_rtt: float | None = None

    @property
    def last_rtt(self) -> float | None:
        """Round-trip time of the last acknowledged PING, seconds (``None`` before)."""
        return self._last_rtt

    @property
    def last_received(self) -> float:
        """When bytes last arrived from the cloud (or the link came up)."""
        return self._last_rx

    @property
    def ping_outstanding(self) -> bool:
        """Whether a PING was sent and not yet acknowledged."""
        return self._outstanding is not None

    @property
    def closed(self) -> bool:
        """Whether :class:`CloseLink` was returned; the monitor is then inert."""
        return self._closed

    def data_received(self, now: float) -> None:
        """Bytes (any bytes, PING ACKs included) arrived from the cloud."""
        self._last_rx = max(self._last_rx, now)

    def ping_acked(self, opaque: bytes, now: float) -> bool:
        """A PING ACK arrived; records :attr:`last_rtt` if it answers our PING.

        Returns whether ``opaque`` was the outstanding PING's payload.
        """
        if self._outstanding is None or self._outstanding[0] != opaque:
            return False
        self._last_rtt = max(0.0, now - self._outstanding[1])
        self._outstanding = None
        return True

    def _ping_due(self) -> float | None:
        if self._outstanding is not None:
            return None
        due = self._last_rx + self.idle_ping_after
        if self._last_ping_sent is not None:
            due = max(due, self._last_ping_sent + self.idle_ping_after)
        return due

    def next_deadline(self) -> float:
        """When :meth:`on_timer` next has something to do (``inf`` once closed)."""
        if self._closed:
            return math.inf
        deadlines = [_just_after(self._last_rx + self.dead_after)]
        ping_due = self._ping_due()
        if ping_due is not None:
            deadlines.append(ping_due)
        if self._outstanding is not None and self.ping_timeout is not None:
            deadlines.append(_just_after(self._outstanding[1] + self.ping_timeout))
        return min(deadlines)

    def on_timer(self, now: float) -> list[LinkAction]:
        """What to do at ``now``: ``[]``, ``[SendPing]`` or ``[CloseLink]``."""
        if self._closed:
            return []
        silent = now - self._last_rx
        if silent > self.dead_after:
            self._closed = True
            return [CloseLink(reason=f"no data from the cloud for {silent:.1f} s (UPL-8)")]
        if self._outstanding is not None and self.ping_timeout is not None:
            waited = now - self._outstanding[1]
            if waited > self.ping_timeout:
                self._closed = True
                return [CloseLink(reason=f"PING not acknowledged within {waited:.1f} s (UPL-7)")]
        ping_due = self._ping_due()
        if ping_due is not None and now >= ping_due:
            self._counter += 1
            opaque = self._counter.to_bytes(8, "big")
            self._outstanding = (opaque, now)
            self._last_ping_sent = now
            return [SendPing(opaque=opaque)]
        return []


# ---------------------------------------------------------------- supervisor

ConnectionStatus = Literal["Offline", "Connecting", "Connected"]
"""The ``tup:ConnectionStatus`` values (CFG-1)."""

OFFLINE: Final = "Offline"
CONNECTING: Final = "Connecting"
CONNECTED: Final = "Connected"
_STOPPED: Final = "Stopped"  # internal; reported as Offline

_TRANSITIONS: Final[dict[tuple[str, str], str]] = {
    (OFFLINE, "attempt"): CONNECTING,
    (CONNECTING, "connected"): CONNECTED,
    (CONNECTING, "connect_failed"): OFFLINE,
    (CONNECTED, "disconnected"): OFFLINE,
    (OFFLINE, "stop"): _STOPPED,
    (CONNECTING, "stop"): _STOPPED,
    (CONNECTED, "stop"): _STOPPED,
    (_STOPPED, "stop"): _STOPPED,
    # Reports that race with stop() (an attempt or a link ending) are absorbed;
    # a connection that succeeds after stop() is an error: the caller must close it.
    (_STOPPED, "connect_failed"): _STOPPED,
    (_STOPPED, "disconnected"): _STOPPED,
}


class UplinkSupervisor:
    """Connection lifecycle of one uplink configuration (UPL-8, UPL-9, UPL-10; CFG-1).

    ``status`` is ``"Offline"``, ``"Connecting"`` or ``"Connected"``;
    ``error`` the last error (``None`` after a successful connect). The
    first attempt is due at ``now``; later ones are spaced by ``backoff``.
    A connection that stayed up at least ``stable_after`` seconds resets the
    backoff when it ends, so a cloud restart costs only the first interval.
    """

    def __init__(
        self, backoff: ReconnectBackoff, now: float, *, stable_after: float = 30.0
    ) -> None:
        self.backoff = backoff
        self.stable_after = stable_after
        self._state: str = OFFLINE
        self._next_attempt: float | None = now
        self._connected_at: float | None = None
        self.error: str | None = None
        """Human-readable last error (CFG-1 ``Error``), cleared on connect."""
        self.last_delay: float | None = None
        """The last interval taken from the backoff."""

    def _fire(self, event: str) -> None:
        try:
            self._state = _TRANSITIONS[(self._state, event)]
        except KeyError:
            raise LocalProtocolError(
                f"UplinkSupervisor: {event!r} is not allowed in state {self._state!r}"
            ) from None

    @property
    def status(self) -> ConnectionStatus:
        """The ``tup:ConnectionStatus`` value."""
        if self._state == CONNECTING:
            return "Connecting"
        if self._state == CONNECTED:
            return "Connected"
        return "Offline"

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._state == _STOPPED

    @property
    def next_attempt_at(self) -> float | None:
        """When the next attempt is due (``None`` unless Offline and running)."""
        return self._next_attempt if self._state == OFFLINE else None

    def next_deadline(self) -> float | None:
        """When to call :meth:`should_connect` next; ``None`` when nothing is scheduled."""
        return self.next_attempt_at

    def should_connect(self, now: float) -> bool:
        """True (and now Connecting) when Offline and the wait is over."""
        if self._state != OFFLINE or self._next_attempt is None or now < self._next_attempt:
            return False
        self._fire("attempt")
        self._next_attempt = None
        return True

    def connected(self, now: float) -> None:
        """The attempt succeeded: the upgrade got its 101 (Connecting → Connected)."""
        self._fire("connected")
        self._connected_at = now
        self.error = None

    def connect_failed(self, now: float, error: str) -> None:
        """The attempt failed (Connecting → Offline); schedules the next one (UPL-9)."""
        self._fire("connect_failed")
        if self._state == _STOPPED:
            return
        self.error = error
        self._schedule(now)

    def disconnected(self, now: float, reason: str) -> None:
        """The live link ended (Connected → Offline); schedules a reconnect (UPL-8)."""
        self._fire("disconnected")
        if self._state == _STOPPED:
            return
        self.error = reason
        if self._connected_at is not None and now - self._connected_at >= self.stable_after:
            self.backoff.reset()
        self._connected_at = None
        self._schedule(now)

    def stop(self) -> None:
        """No more attempts (the configuration was deleted); status becomes Offline."""
        self._fire("stop")
        self._next_attempt = None
        self._connected_at = None

    def _schedule(self, now: float) -> None:
        self.last_delay = self.backoff.next_delay()
        self._next_attempt = now + self.last_delay
