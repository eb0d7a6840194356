"""Layer 1 (sans-IO): individual ascending reconnection intervals (UPL-9).

Theory of operation
-------------------
When the cloud restarts, every device behind it loses its uplink at the same
moment. If all of them waited the same time before redialling they would
arrive in step and hit the cloud again all at once. UPL-9 therefore asks for
an *individual* ascending interval per device, e.g. device A waits
3, 6, 12, 24, 30, 30 s and device B 2, 4, 8, 16, 30, 30 s.

:class:`ReconnectBackoff` derives the first interval deterministically from
SHA-256 of an ``identity`` string (e.g. the device certificate's fingerprint
plus the ``RemoteAddress``): a value in ``[first_min, first_max)`` with
millisecond resolution. Each following interval is the previous one times
``factor``, capped at ``cap``::

    delay(i) = min(cap, first * factor**i)

Being deterministic, the sequence is reproducible in tests and logs; being
derived from a hash of something unique per device, the first intervals of a
fleet are spread evenly over ``[first_min, first_max)``, and with them all
later ones. No randomness, no clock: the caller adds the delay to its own
``now``.
"""

from __future__ import annotations

import hashlib
import math

from ..errors import ConfigurationError

__all__ = ["ReconnectBackoff"]


class ReconnectBackoff:
    """The reconnection intervals of one uplink of one device (UPL-9).

    ``next_delay()`` returns the interval to wait before the next attempt and
    advances; ``reset()`` starts again from the first interval (after a
    connection that stayed up long enough); ``peek_sequence(n)`` shows the
    next ``n`` intervals without advancing.
    """

    def __init__(
        self,
        identity: str,
        *,
        cap: float = 30.0,
        first_min: float = 1.0,
        first_max: float = 4.0,
        factor: float = 2.0,
    ) -> None:
        if not identity:
            raise ConfigurationError("ReconnectBackoff needs a non-empty identity (UPL-9)")
        if not (math.isfinite(first_min) and math.isfinite(first_max) and math.isfinite(cap)):
            raise ConfigurationError("backoff intervals must be finite numbers")
        if not 0 < first_min < first_max:
            raise ConfigurationError(
                f"backoff needs 0 < first_min < first_max, got {first_min} and {first_max}"
            )
        if cap < first_min:
            raise ConfigurationError(f"backoff cap {cap} is below first_min {first_min}")
        if not (math.isfinite(factor) and factor > 1):
            raise ConfigurationError(
                f"backoff factor must be greater than 1 (ascending intervals), not {factor}"
            )
        self.identity = identity
        self.cap = cap
        self.factor = factor
        steps = max(1, math.ceil((first_max - first_min) * 1000))
        digest = hashlib.sha256(identity.encode("utf-8")).digest()
        offset_ms = int.from_bytes(digest[:8], "big") % steps
        first = (first_min * 1000 + offset_ms) / 1000  # 2.97, not 2.9699999999999998
        if first >= first_max:  # float rounding at the top edge
            first = first_min
        self.first_interval: float = min(cap, first)
        """The identity's first interval, in ``[first_min, first_max)``."""
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many intervals were handed out since construction or :meth:`reset`."""
        return self._attempt

    def _delay(self, index: int) -> float:
        try:
            return min(self.cap, self.first_interval * self.factor**index)
        except OverflowError:  # thousands of attempts: long past the cap
            return self.cap

    def next_delay(self) -> float:
        """The seconds to wait before the next attempt; advances the sequence."""
        delay = self._delay(self._attempt)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the first interval."""
        self._attempt = 0

    def peek_sequence(self, n: int) -> list[float]:
        """The next ``n`` intervals :meth:`next_delay` would return, without advancing."""
        return [self._delay(self._attempt + i) for i in range(n)]

    def __repr__(self) -> str:
        return (
            f"ReconnectBackoff(first={self.first_interval}, factor={self.factor}, "
            f"cap={self.cap}, attempt={self._attempt})"
        )
