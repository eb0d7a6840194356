"""Layer 3 (sans-IO): the limits of one HTTP/2 uplink connection (UPL-3, UPL-15, UPL-16).

Theory of operation
-------------------
After the 101 both ends of the uplink speak HTTP/2 (UPL-3): the cloud as the
client, the device as the server (UPL-16), with the settings each end
advertises (UPL-15). The ``h2`` library keeps the protocol state, but it
enforces almost no resource limit: it answers every PING and SETTINGS frame,
accepts unlimited RST_STREAM, empty DATA and WINDOW_UPDATE frames, buffers an
oversize frame whole before it rejects it, and never bounds its outbound
buffer. :class:`H2Limits` names every bound the roles in
:mod:`iec62676_2_33.http2.role` enforce on top of h2; :class:`RateLimiter` is
the token bucket that turns a :class:`Rate` into a yes/no per frame.

Defaults (all overridable; every value is checked when the object is built):

=========================  ==============  ==========================================
field                      default         what breaking it does
=========================  ==============  ==========================================
max_concurrent_streams     128             advertised; one more stream -> RST_STREAM
                                           REFUSED_STREAM (the connection lives on)
max_header_list_size       64 KiB          advertised (decoded size, RFC 7541 §4.1);
                                           larger request -> 431, larger response ->
                                           RST_STREAM ENHANCE_YOUR_CALM
max_header_block_size      128 KiB         hard cap on the encoded block (HEADERS +
                                           CONTINUATION) and on the decoded list ->
                                           GOAWAY ENHANCE_YOUR_CALM
max_body_size              16 MiB          request body (server) -> 413 + RST_STREAM
                                           NO_ERROR; response body (client) ->
                                           RST_STREAM CANCEL
max_outbound_buffer        4 MiB           no DATA frame is produced while this many
                                           bytes wait for ``data_to_send``
max_control_backlog        64 KiB          answers the peer provokes while it does not
                                           read -> GOAWAY ENHANCE_YOUR_CALM
initial_window_size        1 MiB           advertised per-stream receive window
connection_window_size     4 MiB           connection receive window (WINDOW_UPDATE 0)
max_frame_size             128 KiB         advertised; longer frame -> GOAWAY
                                           FRAME_SIZE_ERROR before its body is buffered;
                                           also the largest DATA frame we send
header_table_size          4096            advertised HPACK dynamic table size
ping_rate                  50 / 10 s       PING frames (both kinds)
settings_rate              50 / 10 s       SETTINGS frames (both kinds)
reset_rate                 200 / 10 s      streams reset by the peer or refused by us
                                           (rapid reset, CVE-2023-44487)
empty_frame_rate           100 / 10 s      DATA without payload or END_STREAM,
                                           HEADERS/CONTINUATION without block bytes
window_update_rate         1000 / 10 s     WINDOW_UPDATE frames; each DATA frame we
                                           send gives two back (a busy download is
                                           never cut off)
misc_frame_rate            500 / 10 s      PRIORITY and unknown extension frames
=========================  ==============  ==========================================

Every rate breach ends the connection with GOAWAY ENHANCE_YOUR_CALM (0xb).

``max_frame_size`` is 128 KiB rather than the RFC's initial 16 KiB: h2 costs a
fixed amount of Python per frame (parse, events, flow control), so a bulk
stream in 16 KiB frames spent most of both ends' CPU on framing (issue 3,
benchmark 3: the cloud's CPU per 128 MiB fell from 0.30 s with 64 KiB frames
to 0.245 s with 128 KiB ones; raw TLS needs 0.16 s). The bound it gives stays small next to the others: one incomplete
frame (at most 128 KiB + 9 bytes) is all the role buffers before h2 sees it,
against a 4 MiB connection window. Head-of-line blocking is set by
``max_outbound_buffer`` (frames already produced), not by the frame size.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

from ..errors import ConfigurationError

__all__ = ["DEFAULT_LIMITS", "H2Limits", "Rate", "RateLimiter"]

KIB = 1024
MIB = 1024 * 1024
_MAX_WINDOW = 2**31 - 1
_MIN_FRAME = 2**14
_MAX_FRAME = 2**24 - 1


class Rate(NamedTuple):
    """``events`` per ``seconds``; a burst of ``events`` at once is allowed."""

    events: int
    seconds: float


# Immutable defaults, named once (dataclass defaults must not be calls).
_PING_RATE = Rate(50, 10.0)
_SETTINGS_RATE = Rate(50, 10.0)
_RESET_RATE = Rate(200, 10.0)
_EMPTY_FRAME_RATE = Rate(100, 10.0)
_WINDOW_UPDATE_RATE = Rate(1000, 10.0)
_MISC_FRAME_RATE = Rate(500, 10.0)


@dataclass(frozen=True, kw_only=True)
class H2Limits:
    """Every bound one HTTP/2 role enforces (see the module docstring for the table)."""

    max_concurrent_streams: int = 128
    max_header_list_size: int = 64 * KIB
    max_header_block_size: int = 128 * KIB
    max_body_size: int = 16 * MIB
    max_outbound_buffer: int = 4 * MIB
    max_control_backlog: int = 64 * KIB
    initial_window_size: int = 1 * MIB
    connection_window_size: int = 4 * MIB
    max_frame_size: int = 128 * KIB
    header_table_size: int = 4096
    ping_rate: Rate = _PING_RATE
    settings_rate: Rate = _SETTINGS_RATE
    reset_rate: Rate = _RESET_RATE
    empty_frame_rate: Rate = _EMPTY_FRAME_RATE
    window_update_rate: Rate = _WINDOW_UPDATE_RATE
    misc_frame_rate: Rate = _MISC_FRAME_RATE

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                events, seconds = value
                if not (isinstance(events, int) and events >= 1 and seconds > 0):
                    raise ConfigurationError(
                        f"H2Limits.{f.name} must be Rate(events >= 1, seconds > 0), got {value!r}"
                    )
            elif not isinstance(value, int) or value < 0:
                raise ConfigurationError(
                    f"H2Limits.{f.name} must be a non-negative integer, got {value!r}"
                )
        if not 1 <= self.max_concurrent_streams <= _MAX_WINDOW:
            raise ConfigurationError("H2Limits.max_concurrent_streams must be 1 .. 2**31-1")
        if not _MIN_FRAME <= self.max_frame_size <= _MAX_FRAME:
            raise ConfigurationError(
                f"H2Limits.max_frame_size must be {_MIN_FRAME} .. {_MAX_FRAME} (RFC 7540 §6.5.2)"
            )
        for name in ("initial_window_size", "connection_window_size"):
            if not 65535 <= getattr(self, name) <= _MAX_WINDOW:
                raise ConfigurationError(f"H2Limits.{name} must be 65535 .. 2**31-1")
        if self.max_header_block_size < self.max_header_list_size:
            raise ConfigurationError(
                "H2Limits.max_header_block_size (the hard cap) must be at least "
                "max_header_list_size (the advertised limit)"
            )
        if self.max_outbound_buffer < 1 or self.max_body_size < 1:
            raise ConfigurationError(
                "H2Limits.max_outbound_buffer and max_body_size must be positive"
            )


#: The defaults, shared (the object is frozen).
DEFAULT_LIMITS = H2Limits()


class RateLimiter:
    """Token bucket for one :class:`Rate`: ``allow(now)`` spends one token.

    The bucket holds at most ``rate.events`` tokens and refills at
    ``rate.events / rate.seconds`` tokens per second of the caller's clock. A clock
    that goes backwards refills nothing. ``credit`` gives tokens back (capped).
    """

    __slots__ = ("_capacity", "_last", "_refill", "_tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self._capacity = float(rate.events)
        self._refill = rate.events / rate.seconds
        self._tokens = self._capacity
        self._last = now

    def allow(self, now: float) -> bool:
        """Spend one token; False when the bucket is empty (the limit is broken)."""
        if now > self._last:
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._refill)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def credit(self, tokens: float) -> None:
        """Give ``tokens`` back, never above the bucket's capacity."""
        self._tokens = min(self._capacity, self._tokens + tokens)
