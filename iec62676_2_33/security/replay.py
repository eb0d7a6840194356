"""Layer 3 (security): the bounded replay memory behind UsernameToken nonces and Digest nonce counts (SEC-2).

A credential carries a time (a UsernameToken's Created, a Digest nonce's issue
time) and something that may be used once (the nonce; a nonce's count). A
:class:`ReplayMemory` keeps each such thing, with its time and a value, for as
long as its credential could pass the freshness check, in arrival order.

Theory of operation
-------------------
* **The window counts back from the latest time given.** Entries older than
  ``window`` before the latest ``now`` any check passed are dropped, and a
  credential from before that is refused (:meth:`ReplayMemory.too_old`): a
  check whose ``now`` lags behind another's (it waited for a worker or for the
  user store) must not find forgotten what its own clock still calls fresh.
* **A clock set back starts afresh.** A ``now`` more than two windows behind
  the latest is the clock set back, not a late check: everything remembered
  is newer than ``now`` + the window, which freshness (and, for Digest, the
  not-ours check of nonces from the future) refuses anyway, so the memory
  forgets it instead of refusing every new credential until the clock has
  caught up.
* **Bounded, and replay-proof when full.** At ``max_entries`` the oldest entry
  is evicted; if it was still inside the window its time becomes the *floor*,
  and credentials at or before the floor are refused as possible replays. A
  flood of valid credentials can thus only cause refusals, never an accepted
  replay.

The owner holds :attr:`ReplayMemory.lock` around each check.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["ReplayMemory"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReplayMemory(Generic[K, V]):
    """``key -> (time, value)`` for at most ``max_entries`` keys within ``window`` seconds (module docstring)."""

    def __init__(self, max_entries: int, window: float) -> None:
        self.max_entries = max_entries
        self.window = window
        self.lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._floor = float("-inf")
        self._latest = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def floor(self) -> float:
        """Credentials with a time at or before this are refused."""
        return self._floor

    def advance(self, now: float) -> None:
        """A check at ``now``: move the window, forget what left it (or everything, for a clock set back)."""
        if now < self._latest - 2 * self.window:
            self._entries.clear()
            self._floor = float("-inf")
            self._latest = now
        self._latest = max(self._latest, now)
        horizon = self._latest - self.window
        while self._entries:
            key, (when, _) = next(iter(self._entries.items()))
            if when >= horizon:
                break
            del self._entries[key]

    def too_old(self, when: float) -> bool:
        """A credential of time ``when`` may be a replay the memory can no longer tell: refuse it."""
        return when <= self._floor or when < self._latest - self.window

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def put(self, key: K, when: float, value: V) -> bool:
        """Remember ``key`` (replacing its value, in place, when known); False when making room raised the
        floor to ``when`` or past it (the credential must then be refused)."""
        if key not in self._entries:
            horizon = self._latest - self.window
            while len(self._entries) >= self.max_entries:
                _, (evicted, _) = self._entries.popitem(last=False)
                if evicted >= horizon:
                    self._floor = max(self._floor, evicted)
            if when <= self._floor:
                return False
        self._entries[key] = (when, value)
        return True
