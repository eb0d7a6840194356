"""Layer 1 (sans-IO): who may start a TLS handshake at the cloud's uplink front (UPL-1, UPL-9).

The device dials the cloud (UPL-1) and retries on its own ascending backoff
when refused (UPL-9); this module decides, per accepted TCP connection and
before any TLS work, whether the cloud spends a handshake on it. It changes
nothing about authentication (UPL-13, UPL-14): it only decides who may *try*.
No asyncio, socket, ssl import and no clock: the caller passes ``now``
(seconds, monotonic) into every call.

Theory of operation
-------------------
A connection in its TLS handshake holds a socket and a protocol object until
the handshake ends or its deadline passes (10 s). A global cap on such
connections alone let one client holding 1,100 silent TCP connections keep
every device out (issue 8, finding 3). :class:`Admission` decides with four
rules, in this order, each per *source* (:meth:`Admission.source_key`: the
peer's IPv4 address, or its IPv6 /64 — a host picks any address of its /64
for free):

1. **Rate.** A token bucket per source: ``burst`` connections at once, then
   ``rate`` per second. A refused connection takes no token, so a source that
   hammers on does not starve its own later, paced attempts.
2. **Handshakes in progress per source**: at most ``per_source_pending``.
3. **Global cap with a reserve for known devices.** At most ``max_pending``
   handshakes in progress; strangers may hold only ``max_pending -
   known_reserve`` of them. A source is *known* for ``known_ttl`` seconds
   after a connection from it completed an authenticated uplink
   (:meth:`Admission.authenticated`, called by the cloud after the
   authenticator accepted the device).
4. **Evict instead of refusing.** When the newcomer's share is full, the
   oldest handshake of the source holding the most of that share is closed
   to make room, if that source holds at least two more than the
   newcomer's source (so eviction never makes the victim lighter than the
   newcomer: a flood from one source cannot keep another source out, and
   sources with one handshake each are never evicted for each other). A
   known newcomer takes the place of a stranger's handshake regardless of
   counts (known devices' reconnects go ahead of strangers). Only when no
   such victim exists is the newcomer refused.

The caller closes a refused connection at once and the evicted one it is
handed (:attr:`AdmissionDecision.evict`), and calls :meth:`Admission.release` when a
handshake ends for any reason (done, failed, timed out, connection lost).

Tables, all bounded
-------------------
* handshakes in progress: at most ``max_pending`` entries (two pools, known
  and strangers, each indexed by source and by per-source count so the
  heaviest source is found in O(1));
* token buckets: at most ``max_sources``, least recently used first out. A
  bucket idle for ``burst / rate`` seconds is full again, i.e. the same as
  no bucket, and is dropped first (no loss); only a flood from more than
  ``max_sources`` addresses at once forgets partly drained buckets;
* known sources: at most ``max_known``, least recently authenticated first
  out, each forgotten ``known_ttl`` seconds after its last authentication.

Behind a balancer
-----------------
The hook for a later balancer front: :meth:`Admission.admit` takes the
source as a plain address string. A front that receives connections from a
balancer speaking the PROXY protocol must read the PROXY header first (under
the first-byte deadline) and admit with the client address from the header,
not the balancer's peer address — all traffic shares the latter, so per-source
limits on it would throttle everyone together. The header is parsed by
:mod:`.proxy_protocol` and read by :mod:`..transport.tls` (only from the
addresses ``proxy_protocol_from`` names); this module sees the result.

Defaults and why (:data:`DEFAULT_ADMISSION`, a real cloud can keep them)
-----------------------------------------------------------------------
* ``max_pending = 1024``: the earlier global cap, unchanged: a pending
  handshake holds a socket (file descriptors are the scarcer resource) and
  at most a TLS flight of buffered bytes.
* ``known_reserve = 256``: a quarter of the cap; strangers keep 768 slots.
  The reserve holds only while the cloud runs (the table is not persisted):
  after a cloud restart every device is a stranger and rules 1, 2 and 4
  alone apply, which spread a reconnect wave fairly over sources.
* ``per_source_pending = 32``: an honest source holds one handshake per
  device dialling at that moment; a site of many devices behind one NAT,
  reconnecting on individual intervals spread over 1-4 s (UPL-9) with
  handshakes of about two round trips, holds well under 32 at the rate
  below. A flooder then needs 24 addresses to fill the strangers' share, and
  rule 4 still lets a newcomer from any other address in.
* ``rate = 50`` connections per second, ``burst = 100``: a full handshake
  with a client certificate costs the server about 1 ms of CPU (measured
  by ``bench/bench_admission.py``, 2 cores, OpenSSL 3), so one source can
  take about 5 % of a core; a NAT site of 500 devices is back within about
  10 s of burst and rate, refused devices retrying on their backoff.
  Behind a carrier-grade NAT more devices share an address: raise ``rate``
  and ``burst`` there (and for load tests that dial from one address).
* ``max_sources = 16384`` buckets and ``max_known = 65536`` known sources:
  the bench measures about 140 and 90 bytes per entry (IPv4 keys), so at
  most about 2 MiB and 6 MiB.
* ``known_ttl = 7 days``: how long an address that once carried a device
  keeps the privilege; a device whose uplink stayed up longer than that
  competes as a stranger on its next reconnect, which rule 4 still lets in.
* IPv6 ``/64``: the prefix a subscriber gets; any single address within it
  is free to the holder.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_ADMISSION",
    "Admission",
    "AdmissionDecision",
    "AdmissionLimits",
    "Refusal",
    "peer_ip",
    "source_key",
]

C = TypeVar("C", bound=Hashable)

#: Longest source key kept for an address that is not an IP address (bounded table keys).
_MAX_KEY = 64


@dataclass(frozen=True)
class AdmissionLimits:
    """The limits of :class:`Admission` (see the module docstring for the defaults' reasons).

    ``per_source_pending=None`` and ``rate=None`` turn those rules off;
    ``known_reserve=0`` or ``max_known=0`` turns off the known-device reserve.
    """

    max_pending: int = 1024
    known_reserve: int = 256
    per_source_pending: int | None = 32
    rate: float | None = 50.0
    burst: int = 100
    max_sources: int = 16384
    max_known: int = 65536
    known_ttl: float = 7 * 24 * 3600.0
    ipv6_prefix: int = 64

    def __post_init__(self) -> None:
        if self.max_pending < 1:
            raise ConfigurationError(f"max_pending must be at least 1, not {self.max_pending}")
        if not 0 <= self.known_reserve < self.max_pending:
            raise ConfigurationError(
                f"known_reserve must be at least 0 and below max_pending ({self.max_pending}), "
                f"not {self.known_reserve}: strangers need at least one slot"
            )
        if self.per_source_pending is not None and self.per_source_pending < 1:
            raise ConfigurationError(
                f"per_source_pending must be at least 1 (or None: no limit), not {self.per_source_pending}"
            )
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigurationError(f"rate must be a positive number (or None: no limit), not {self.rate}")
        if self.burst < 1:
            raise ConfigurationError(f"burst must be at least 1, not {self.burst}")
        if self.max_sources < 1 or self.max_known < 0:
            raise ConfigurationError("max_sources must be at least 1 and max_known at least 0")
        if not (math.isfinite(self.known_ttl) and self.known_ttl >= 0):
            raise ConfigurationError(f"known_ttl must be a finite number of seconds >= 0, not {self.known_ttl}")
        if not 1 <= self.ipv6_prefix <= 128:
            raise ConfigurationError(f"ipv6_prefix must be 1 to 128, not {self.ipv6_prefix}")

    @classmethod
    def global_cap(cls, max_pending: int) -> AdmissionLimits:
        """Only the global cap and rule 4 between sources: no per-source limits, no reserve.

        For a TLS server that faces no strangers (tests, internal links).
        """
        return cls(max_pending=max_pending, known_reserve=0, per_source_pending=None, rate=None, max_known=0)


#: Limits for a cloud on the open internet (module docstring: "Defaults and why").
DEFAULT_ADMISSION = AdmissionLimits()


class Refusal(enum.Enum):
    """Why a connection was refused (the value names a counter of the TLS server)."""

    RATE = "rate"
    """The source's connection rate is over ``rate``/``burst``."""
    SOURCE = "source"
    """The source already holds ``per_source_pending`` handshakes."""
    FULL = "full"
    """The newcomer's share of ``max_pending`` is full and no handshake may be evicted for it."""


@dataclass(frozen=True)
class AdmissionDecision(Generic[C]):
    """The decision on one connection: admitted (perhaps evicting *evict*) or refused (*refusal*)."""

    refusal: Refusal | None = None
    evict: C | None = None

    @property
    def admitted(self) -> bool:
        return self.refusal is None


class _Pool(Generic[C]):
    """Handshakes in progress of one class (known or stranger) by source, heaviest source at hand."""

    __slots__ = ("_by_count", "_by_source", "_top", "size")

    def __init__(self) -> None:
        self.size = 0
        self._by_source: dict[str, OrderedDict[C, None]] = {}  # oldest first
        self._by_count: dict[int, dict[str, None]] = {}  # count -> the sources holding that many
        self._top = 0

    def count(self, source: str) -> int:
        held = self._by_source.get(source)
        return 0 if held is None else len(held)

    def _move(self, source: str, old: int, new: int) -> None:
        if old:
            bucket = self._by_count[old]
            del bucket[source]
            if not bucket:
                del self._by_count[old]
                if self._top == old and new < old:
                    self._top = new
        if new:
            self._by_count.setdefault(new, {})[source] = None
            self._top = max(self._top, new)

    def add(self, source: str, conn: C) -> None:
        held = self._by_source.setdefault(source, OrderedDict())
        held[conn] = None
        self.size += 1
        self._move(source, len(held) - 1, len(held))

    def remove(self, source: str, conn: C) -> None:
        held = self._by_source[source]
        del held[conn]
        self.size -= 1
        self._move(source, len(held) + 1, len(held))
        if not held:
            del self._by_source[source]

    def heaviest(self) -> tuple[str, int] | None:
        """The source holding the most (the one that got there first among equals) and its count."""
        if not self._top:
            return None
        return next(iter(self._by_count[self._top])), self._top

    def oldest(self, source: str) -> C:
        return next(iter(self._by_source[source]))

    def connections(self) -> list[C]:
        return [conn for held in self._by_source.values() for conn in held]


@dataclass(slots=True)
class _Ticket:
    source: str
    known: bool


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


def source_key(address: str | None, ipv6_prefix: int = DEFAULT_ADMISSION.ipv6_prefix) -> str:
    """The source a peer *address* counts against: IPv4 as is, IPv6 by its prefix (a host picks any
    address of its /64). The one notion of "source" of every per-source limit: admission, the flood
    penalty box, the proxy's and the device's RTSP-over-HTTP channels per client.

    An IPv4-mapped IPv6 address (a dual-stack socket) counts as its IPv4
    address; a scope (``%eth0``) is dropped; anything that is not an IP
    address is one source per distinct string (cut to 64 characters).
    """
    if not address:
        return "?"
    ip = peer_ip(address)
    if ip is None:
        return address[:_MAX_KEY]
    if isinstance(ip, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((int(ip) >> (128 - ipv6_prefix) << (128 - ipv6_prefix), ipv6_prefix))
        return str(net)
    return str(ip)


def peer_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of a peer *address* as every per-address rule sees it: an IPv4-mapped IPv6
    address (a dual-stack socket) is its IPv4 address, a scope (``%eth0``) is dropped; ``None`` when
    it is no IP address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Admission(Generic[C]):
    """Admission of connections to their TLS handshake (see the module docstring).

    *C* is the caller's connection object (any hashable: the TLS server
    passes its protocol objects); the policy hands it back in
    :attr:`AdmissionDecision.evict` and never touches it otherwise.
    """

    def __init__(self, limits: AdmissionLimits = DEFAULT_ADMISSION) -> None:
        self.limits = limits
        self._tickets: dict[C, _Ticket] = {}
        self._pools: dict[bool, _Pool[C]] = {False: _Pool(), True: _Pool()}  # known? -> pool
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently used first
        self._known: OrderedDict[str, float] = OrderedDict()  # source -> expiry, earliest first

    # ------------------------------------------------------------------ sources

    def source_key(self, address: str | None) -> str:
        """The source a peer *address* counts against (:func:`source_key` with these limits' IPv6 prefix)."""
        return source_key(address, self.limits.ipv6_prefix)

    # ------------------------------------------------------------------ decisions

    def admit(self, conn: C, source: str, now: float) -> AdmissionDecision[C]:
        """Decide on a new connection *conn* from *source* (a :meth:`source_key`)."""
        if conn in self._tickets:
            raise ValueError("this connection was admitted already")
        limits = self.limits
        known = self.is_known(source, now)
        bucket = self._bucket(source, now)
        if bucket is not None and bucket.tokens < 1:
            return AdmissionDecision(refusal=Refusal.RATE)
        if limits.per_source_pending is not None and self.pending_of(source) >= limits.per_source_pending:
            return AdmissionDecision(refusal=Refusal.SOURCE)
        evict: C | None = None
        strangers = self._pools[False]
        if self.pending >= limits.max_pending or (
            not known and strangers.size >= limits.max_pending - limits.known_reserve
        ):
            evict = self._victim(source, known)
            if evict is None:
                return AdmissionDecision(refusal=Refusal.FULL)
            self.release(evict)
        if bucket is not None:
            bucket.tokens -= 1
        self._tickets[conn] = _Ticket(source, known)
        self._pools[known].add(source, conn)
        return AdmissionDecision(evict=evict)

    def _victim(self, source: str, known: bool) -> C | None:
        """Rule 4: whose handshake gives way to a newcomer from *source*, if anyone's."""
        strangers = self._pools[False]
        if known and strangers.size:
            heaviest = strangers.heaviest()
            assert heaviest is not None
            return strangers.oldest(heaviest[0])
        pool = self._pools[known]
        heaviest = pool.heaviest()
        if heaviest is None:
            return None
        victim, count = heaviest
        if victim == source or count < pool.count(source) + 2:
            return None
        return pool.oldest(victim)

    def release(self, conn: C) -> None:
        """The handshake of *conn* ended (any way); unknown or released connections are ignored."""
        ticket = self._tickets.pop(conn, None)
        if ticket is not None:
            self._pools[ticket.known].remove(ticket.source, conn)

    def authenticated(self, source: str, now: float) -> None:
        """A connection from *source* completed an authenticated uplink: the source is known."""
        limits = self.limits
        if not limits.max_known or not limits.known_ttl:
            return
        self._known.pop(source, None)
        self._known[source] = now + limits.known_ttl
        while len(self._known) > limits.max_known:
            self._known.popitem(last=False)

    def is_known(self, source: str, now: float) -> bool:
        """Whether *source* authenticated within ``known_ttl`` (and was not pushed out of the table)."""
        known = self._known
        while known:
            first, expiry = next(iter(known.items()))
            if expiry > now:
                break
            del known[first]
        return source in known

    def _bucket(self, source: str, now: float) -> _Bucket | None:
        """The source's token bucket, refilled to *now* and marked most recently used."""
        rate = self.limits.rate
        if rate is None:
            return None
        burst = self.limits.burst
        buckets = self._buckets
        full_after = burst / rate
        while buckets:  # buckets idle long enough are full again: the same as none
            first, oldest = next(iter(buckets.items()))
            if now - oldest.stamp < full_after:
                break
            del buckets[first]
        bucket = buckets.get(source)
        if bucket is None:
            if len(buckets) >= self.limits.max_sources:
                buckets.popitem(last=False)
            bucket = buckets[source] = _Bucket(float(burst), now)
        else:
            bucket.tokens = min(float(burst), bucket.tokens + max(0.0, now - bucket.stamp) * rate)
            bucket.stamp = now
            buckets.move_to_end(source)
        return bucket

    # ------------------------------------------------------------------ state, for metrics and tests

    @property
    def pending(self) -> int:
        """Handshakes in progress."""
        return len(self._tickets)

    @property
    def pending_strangers(self) -> int:
        """Handshakes in progress admitted as strangers'."""
        return self._pools[False].size

    def pending_of(self, source: str) -> int:
        """Handshakes in progress of *source*."""
        return self._pools[False].count(source) + self._pools[True].count(source)

    def busiest(self) -> tuple[str, int] | None:
        """The source holding the most handshakes in progress among strangers (else known), and how many."""
        return self._pools[False].heaviest() or self._pools[True].heaviest()

    def connections(self) -> list[C]:
        """Every connection in its handshake."""
        return self._pools[False].connections() + self._pools[True].connections()

    @property
    def tracked_sources(self) -> int:
        """Token buckets held (at most ``max_sources``)."""
        return len(self._buckets)

    @property
    def known_sources(self) -> int:
        """Known sources held, expired ones included until the next look-up (at most ``max_known``)."""
        return len(self._known)
