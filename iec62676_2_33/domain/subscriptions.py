"""Layer 6 (domain): pull-point subscriptions of resource queries and generic events.

Implements the server side of RQ-4 (Initialized / Changed / Deleted per
subscriber), RQ-5 (first every matching resource, then only changes), EVT-1
(termination times, absolute or relative), EVT-3 (MessageLimit pages,
keep-alive by PullMessages), EVT-4 (Renew, Unsubscribe,
SetSynchronizationPoint, faults for unknown or expired subscriptions), EVT-7
(one PullMessages at a time), EVT-8 (a change the Select filter hides gives
no ``Changed``), EVT-9 (``tev:ChangedOnly``) and the MaxPullPoints limit. Sans-IO: no socket, no asyncio, no clock — every
call takes ``now`` (seconds since the epoch, UTC); waiting for news is the
caller's business (:mod:`..services.events`).

Theory of operation
-------------------
A :class:`Subscription` has two phases.

*Enumerating.* At creation it remembers the registry's change-log position
``last_seq()`` and then streams the matching resources page by page from
:meth:`~.registry.ResourceRegistry.query` (keyset pagination on the token),
each as ``Initialized``. A page is read only when a pull asks for it and is
never larger than the pull's MessageLimit, so a million-resource enumeration
is never in memory.

*Following.* When the last page is shorter than asked, the subscription
replays the change log from the remembered position (``changes_since``) and
turns each change into what *this* subscriber must see:

====================  ======================  ================================
registry change       resource matches now    message for this subscription
====================  ======================  ================================
Initialized/Changed   yes, already signalled  Changed (with a Select filter: only if the
                                              projected view differs, EVT-8)
Initialized/Changed   yes, not signalled      Initialized (new, or moved in)
Initialized/Changed   no, signalled           Deleted (it no longer matches)
Initialized/Changed   no, not signalled       nothing
Deleted               —, signalled            Deleted
Deleted               —, not signalled        nothing
====================  ======================  ================================

A change that raced the enumeration (made after the position was taken but
before its page was read) is seen twice: once in the page, once from the log,
where it gives ``Changed`` with the current data — harmless, since ``Changed``
always carries the full current state of the selected items.

The set of signalled tokens is kept compactly (:class:`_TokenSet`: 64-bit
digests — Python's keyed string hash, stable within the process — in sorted
``array`` runs, about 8 MB per million tokens); a digest collision
(probability ~1e-8 for a million tokens) could at worst turn one
``Initialized`` into ``Changed``. With a Select filter each token also keeps
a 64-bit digest of the projected resource the subscriber last got (8 MB more
per million): an online/offline flip the Select hides (``/Name`` only)
changes nothing the subscriber sees, so it gives no ``Changed`` (EVT-8;
the registry's record changed, the projected view did not).

*ChangedOnly* (EVT-9): ``Initialized`` and ``Deleted`` are not delivered.
The enumeration still runs (silently, page after page within one pull) to
learn which resources are signalled, so that their later changes are
``Changed``.

*Generic events* (:class:`~.generic_events.GenericEvent`) are offered by the
event service (:meth:`Subscription.offer`): a subscription takes those of its
generic topics that pass its MessageContent filter (and ChangedOnly) into a
queue of at most :data:`MAX_QUEUED_EVENTS` (a client that does not pull loses
the oldest, logged); a pull returns them before the resource messages.

*One pull at a time* (EVT-7): :meth:`Subscription.begin_pull` marks a running
PullMessages; the service refuses a second one while it runs.

``SetSynchronizationPoint`` (EVT-4) first turns every change already logged
into pending messages (so no ``Deleted`` is lost), then restarts the
enumeration from the current log position: every matching resource is sent
again as ``Initialized``. If the change log was pruned past a subscription's
position, the subscription re-synchronises the same way (and logs a warning).

Termination: ``InitialTerminationTime`` and ``Renew`` take an absolute
``xs:dateTime`` or a relative ``xs:duration`` (:func:`parse_termination`);
absent means ``default_termination`` seconds; later than
``max_termination`` seconds from now is clamped to that maximum (WS-BaseNotification
lets the producer pick the time it reports back); not after ``now`` is
refused (:class:`UnacceptableTermination`). A PullMessages keeps the
subscription alive for at least its Timeout after the answer (ONVIF Core).
A subscription whose time has passed is gone: every call on it raises
:class:`UnknownSubscription`, never an empty answer (EVT-4).

Thread safety: the manager may be called from several worker threads; the
table of subscriptions has one lock, each subscription another.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import logging
import os
import re
import secrets
import sys
import threading
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Protocol

from ..errors import ConfigurationError
from .filters import ResourceQuery
from .generic_events import GenericEvent, topic_matches
from .registry import ChangesPruned
from .resources import PropertyOperation, Resource, ResourceEvent

__all__ = [
    "InvalidTime",
    "Notification",
    "PullResult",
    "ResourceSource",
    "Subscription",
    "SubscriptionError",
    "SubscriptionManager",
    "TooManySubscriptions",
    "UnacceptableTermination",
    "UnknownSubscription",
    "format_datetime",
    "format_duration",
    "parse_datetime",
    "parse_duration",
    "parse_termination",
]

log = logging.getLogger(__name__)

#: Changes read from the log per database round trip.
_LOG_BATCH = 1000
#: Resources read per query while a ChangedOnly subscription enumerates silently (Subscription.pull).
_SILENT_PAGE = 1000


class SubscriptionError(ConfigurationError):
    """A pull-point subscription request cannot be honoured."""


class UnknownSubscription(SubscriptionError, LookupError):
    """No live subscription has that id (never created, unsubscribed or expired)."""


class TooManySubscriptions(SubscriptionError):
    """MaxPullPoints subscriptions are alive already."""


class InvalidTime(SubscriptionError):
    """A termination time or duration is not a valid ``xs:dateTime`` / ``xs:duration``."""


class UnacceptableTermination(SubscriptionError):
    """A termination time is not in the future; ``minimum``/``maximum`` bound what is accepted."""

    def __init__(self, message: str, *, minimum: float, maximum: float) -> None:
        super().__init__(message)
        self.minimum = minimum
        self.maximum = maximum


# --------------------------------------------------------------------------- times

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?!$)(?:(?P<Y>\d+)Y)?(?:(?P<M>\d+)M)?(?:(?P<D>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_UNIT_SECONDS = {"Y": 365 * 86400.0, "M": 30 * 86400.0, "D": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """An ``xs:duration`` in seconds (a year counts 365 days, a month 30); negative allowed."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise InvalidTime(f"{text!r} is not an xs:duration (e.g. PT60S, PT1M, P1DT2H)")
    total = sum(float(match[unit]) * seconds for unit, seconds in _UNIT_SECONDS.items() if match[unit])
    return -total if match["sign"] else total


def format_duration(seconds: float) -> str:
    """Seconds as an ``xs:duration`` (``PT60S``, ``PT0.5S``)."""
    sign = "-" if seconds < 0 else ""
    value = abs(seconds)
    text = f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return f"{sign}PT{text}S"


def parse_datetime(text: str) -> float:
    """An ``xs:dateTime`` as seconds since the epoch; without a zone it is taken as UTC. One that a zone
    offset moves out of the years 1 to 9999 in UTC (``0001-01-01T00:00:00+01:00``) is :class:`InvalidTime`,
    so every instant parsed here can be written back (:func:`format_datetime`)."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidTime(f"{text!r} is not an xs:dateTime (e.g. 2024-05-01T12:00:00Z)") from None
    if "T" not in raw:
        raise InvalidTime(f"{text!r} is not an xs:dateTime: the time part is missing")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:  # an instant the answers can name again: in UTC within the years 1 to 9999
        when.astimezone(UTC)
    except OverflowError:
        raise InvalidTime(f"{text!r} lies outside the years 1 to 9999 in UTC") from None
    return when.timestamp()


def format_datetime(epoch: float) -> str:
    """Seconds since the epoch as an ``xs:dateTime`` in UTC with the ``Z`` indicator (the year in four digits:
    strftime writes year 500 as ``500``, which no xs:dateTime reader takes)."""
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch)
    millis = when.microsecond // 1000
    base = f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    return f"{base}.{millis:03d}Z" if millis else f"{base}Z"


#: The instants an ``xs:dateTime`` answer can name (years 1 … 9999).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH).total_seconds()
_LAST = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH).total_seconds()


def parse_termination(text: str, now: float) -> float:
    """EVT-1: an absolute ``xs:dateTime`` or a relative ``xs:duration`` → absolute epoch seconds."""
    raw = text.strip()
    when = now + parse_duration(raw) if raw.startswith(("P", "-P")) else parse_datetime(raw)
    if not _FIRST <= when <= _LAST:
        raise InvalidTime(f"termination time {raw!r} lies outside the years 1 to 9999")
    return when


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Notification:
    """One resource event for one subscriber (EVT-6): topic ``tns1:Resource/<resource.kind>``.

    ``resource`` is already projected by the Select filter; for ``Deleted`` it
    carries only the token and the kind.
    """

    operation: PropertyOperation
    resource: Resource
    utc_time: float


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a PullMessages answers: the messages and the (possibly extended) termination time."""

    messages: list[Message]
    termination: float


class ResourceSource(Protocol):
    """What a subscription reads: the resource registry's query and change log."""

    def query(self, query: ResourceQuery, *, after_token: str | None = None,
              limit: int = 100) -> list[Resource]: ...

    def last_seq(self) -> int: ...

    def changes_since(self, seq: int, limit: int = 1000) -> list[ResourceEvent]: ...


# --------------------------------------------------------------------------- token set


def _blake2b_digest(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def _builtin_digest(token: str) -> int:
    # The set lives in one process only, so Python's own 64-bit string hash (keyed SipHash, cached on
    # the str) serves: a per-resource BLAKE2b was half the set's cost in a million-resource enumeration.
    return hash(token)


#: 64 bits keep accidental collisions negligible (about 3e-8 for a million tokens); a 32-bit build's
#: string hash would not, nor would a fixed PYTHONHASHSEED against chosen tokens.
_digest = (_builtin_digest if sys.hash_info.width >= 64 and not os.environ.get("PYTHONHASHSEED")
           else _blake2b_digest)


class _TokenSet:
    """A compact map of signalled tokens: 8-byte digests in sorted ``array('q')`` runs.

    With ``views`` each token also keeps an 8-byte digest of the view its subscriber last got (EVT-8:
    a change the Select filter hides gives no ``Changed``), in a parallel array; without it the set
    costs 8 bytes per token and every stored view reads as 0.
    """

    _RUN = 65536
    _MAX_RUNS = 8

    def __init__(self, *, views: bool = False) -> None:
        self._views = views
        self._runs: list[tuple[array[int], array[int] | None]] = []
        self._buffer: dict[int, int] = {}
        self._removed: set[int] = set()

    def _find(self, h: int) -> tuple[array[int] | None, int] | None:
        for keys, values in self._runs:
            i = bisect.bisect_left(keys, h)
            if i < len(keys) and keys[i] == h:
                return values, i
        return None

    def get(self, token: str) -> int | None:
        """The stored view digest of ``token``, or ``None`` when it was not signalled."""
        h = _digest(token)
        view = self._buffer.get(h)
        if view is not None or h in self._removed:
            return view
        found = self._find(h)
        if found is None:
            return None
        values, i = found
        return 0 if values is None else values[i]

    def __contains__(self, token: str) -> bool:
        return self.get(token) is not None

    def add(self, token: str, view: int = 0) -> None:
        h = _digest(token)
        if h in self._buffer:
            self._buffer[h] = view
            return
        found = self._find(h)
        if found is None:
            self._buffer[h] = view
            if len(self._buffer) >= self._RUN:
                self._flush()
            return
        self._removed.discard(h)
        values, i = found
        if values is not None:
            values[i] = view

    def add_new(self, token: str, view: int = 0) -> None:
        """Add a token the caller knows is not in the set (skips the look-up in the runs)."""
        self._buffer[_digest(token)] = view
        if len(self._buffer) >= self._RUN:
            self._flush()

    def _flush(self) -> None:
        keys = sorted(self._buffer)
        values = array("q", (self._buffer[k] for k in keys)) if self._views else None
        self._runs.append((array("q", keys), values))
        self._buffer.clear()
        if len(self._runs) > self._MAX_RUNS:
            self._compact()

    def discard(self, token: str) -> None:
        h = _digest(token)
        if h in self._buffer:
            del self._buffer[h]
        elif self._find(h) is not None:
            self._removed.add(h)

    def _compact(self) -> None:
        removed = self._removed
        pairs = heapq.merge(*(zip(keys, values if values is not None else repeat(0))
                              for keys, values in self._runs))
        kept = [(k, v) for k, v in pairs if k not in removed]
        self._runs = [(array("q", (k for k, _ in kept)),
                       array("q", (v for _, v in kept)) if self._views else None)]
        self._removed = set()


# --------------------------------------------------------------------------- subscription

#: Generic events queued per subscription at most; beyond it the oldest are dropped (and logged).
MAX_QUEUED_EVENTS = 1000

Message = Notification | GenericEvent


class Subscription:
    """One pull point: its query, termination time and delivery state (see the module docstring)."""

    def __init__(self, sub_id: str, query: ResourceQuery, termination: float, source: ResourceSource, *,
                 topics: frozenset[str] | None = None, changed_only: bool = False,
                 consumer: str | None = None) -> None:
        self.id = sub_id
        #: EVT-10: the consumer address a base-notification subscription pushes to (None: a pull point)
        self.consumer = consumer
        self.query = query
        self.termination = termination
        #: the generic topics (paths below tns1) this subscription takes; None = all (EVT-2)
        self.topics = topics
        #: EVT-9 (tev:ChangedOnly): no Initialized, no Deleted
        self.changed_only = changed_only
        self._source = source
        self._lock = threading.Lock()
        self._pending: deque[Notification] = deque()
        self._events: deque[GenericEvent] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._dropped = 0
        self._signalled = _TokenSet(views=query.select is not None)
        #: the first enumeration of an empty set: every token arrives once (keyset pages), none is there yet
        self._fresh = True
        self._seq = source.last_seq()
        self._enumerating = True
        self._cursor: str | None = None
        self._pulling = False

    @property
    def position(self) -> int:
        """The last change-log entry this subscription has taken into account (what may be pruned below it)."""
        return self._seq

    # -- EVT-7: one PullMessages at a time
    def begin_pull(self) -> bool:
        """Mark a PullMessages as running; False when another one is running already."""
        with self._lock:
            if self._pulling:
                return False
            self._pulling = True
            return True

    def end_pull(self) -> None:
        with self._lock:
            self._pulling = False

    # -- generic events
    def wants(self, event: GenericEvent) -> bool:
        """Do this subscription's topic, MessageContent and ChangedOnly filters take ``event``?"""
        if self.changed_only and event.operation in ("Initialized", "Deleted"):
            return False
        content = self.query.content
        return topic_matches(self.topics, event.topic.path) and (content is None or content.matches(event.view))

    def offer(self, event: GenericEvent) -> bool:
        """Queue ``event`` if :meth:`wants` takes it; True when queued."""
        if not self.wants(event):
            return False
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % MAX_QUEUED_EVENTS == 0:
                    log.warning("subscription %s: %d events dropped; its client does not pull often enough",
                                self.id, self._dropped)
            self._events.append(event)
        return True

    def pull(self, limit: int, now: float) -> list[Message]:
        """Up to ``limit`` messages: pending ones, queued events, then the enumeration, then the change log."""
        with self._lock:
            out: list[Message] = []
            while self._pending and len(out) < limit:
                out.append(self._pending.popleft())
            while self._events and len(out) < limit:
                out.append(self._events.popleft())
            # with ChangedOnly an enumeration page yields nothing, so go on until the enumeration ends, in pages
            # of at least _SILENT_PAGE (MessageLimit 1 made it one query per resource: 0.95 s per 100,000)
            while self._enumerating and len(out) < limit:
                want = limit - len(out)
                self._enumerate(max(want, _SILENT_PAGE) if self.changed_only else want, now, out)
            if not self._enumerating and len(out) < limit:
                self._follow(limit, now, out)
            return out

    def synchronize(self, now: float) -> None:
        """EVT-4: keep every logged change as pending, then enumerate everything again."""
        with self._lock:
            if not self._enumerating:
                sink: list[Message] = []
                self._follow(None, now, sink)
                self._pending.extend(m for m in sink if isinstance(m, Notification))
            self._enumerating = True
            self._fresh = False  # tokens of the pass so far are in the set already
            self._cursor = None

    def _view(self, projected: Resource) -> int:
        """The digest of what the subscriber sees of a resource (0 without a Select filter)."""
        return hash(projected) if self.query.select is not None else 0

    def _enumerate(self, want: int, now: float, out: list[Message]) -> None:
        page = self._source.query(self.query, after_token=self._cursor, limit=want)
        add = self._signalled.add_new if self._fresh else self._signalled.add
        silent = self.changed_only
        for resource in page:  # the registry's pages are projected already
            add(resource.token, self._view(resource))
            if not silent:
                out.append(Notification("Initialized", resource, now))
        if page:
            self._cursor = page[-1].token
        if len(page) < want:
            self._enumerating = False
            self._fresh = False
            self._cursor = None

    def _follow(self, limit: int | None, now: float, out: list[Message]) -> None:
        while limit is None or len(out) < limit:
            try:
                changes = self._source.changes_since(self._seq, _LOG_BATCH)
            except ChangesPruned:
                log.warning("subscription %s: the change log was pruned past its position; "
                            "re-enumerating every matching resource", self.id)
                self._seq = self._source.last_seq()
                self._enumerating = True
                self._cursor = None
                if limit is not None:
                    self._enumerate(limit - len(out), now, out)
                return
            if not changes:
                return
            for change in changes:
                self._seq = change.seq
                message = self._translate(change, now)
                if message is not None:
                    out.append(message)
                    if limit is not None and len(out) >= limit:
                        return

    def _translate(self, change: ResourceEvent, now: float) -> Notification | None:
        resource = change.resource
        signalled = self._signalled
        previous = signalled.get(resource.token)
        if change.operation == "Deleted" or not self.query.matches(resource):
            if previous is None:
                return None
            signalled.discard(resource.token)
            operation: PropertyOperation = "Deleted"
            resource = Resource(resource.token, resource.kind)
        else:
            resource = self.query.project(resource)
            view = self._view(resource)
            if previous is not None and self.query.select is not None and previous == view:
                return None  # EVT-8, RQ-4: nothing this subscriber sees has changed (e.g. Offline not selected)
            signalled.add(resource.token, view)
            operation = "Initialized" if previous is None else "Changed"
        if self.changed_only and operation != "Changed":
            return None
        return Notification(operation, resource, now)


# --------------------------------------------------------------------------- manager


def _new_id() -> str:
    return secrets.token_hex(16)


class SubscriptionManager:
    """The live pull-point subscriptions of one server (EVT-1 … EVT-4, MaxPullPoints)."""

    def __init__(self, source: ResourceSource, *, max_pull_points: int = 32, max_push: int = 8,
                 default_termination: float = 60.0, max_termination: float = 24 * 3600.0,
                 new_id: Callable[[], str] = _new_id) -> None:
        if max_pull_points < 1:
            raise ConfigurationError(f"max_pull_points must be >= 1, got {max_pull_points!r}")
        if max_push < 0:
            raise ConfigurationError(f"max_push must be >= 0, got {max_push!r}")
        #: EVT-10: at most this many base-notification (push) subscriptions (MaxNotificationProducers)
        self.max_push = max_push
        if not 0 < default_termination <= max_termination:
            raise ConfigurationError("need 0 < default_termination <= max_termination "
                                     f"(got {default_termination!r}, {max_termination!r})")
        self.source = source
        self.max_pull_points = max_pull_points
        self.default_termination = default_termination
        self.max_termination = max_termination
        self._new_id = new_id
        self._lock = threading.Lock()
        self._subs: dict[str, Subscription] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._subs)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._subs)

    def _termination(self, termination: float | None, now: float, what: str) -> float:
        if termination is None:
            return now + self.default_termination
        maximum = now + self.max_termination
        if termination <= now:
            raise UnacceptableTermination(
                f"{what} {format_datetime(termination)} is not after the current time "
                f"{format_datetime(now)}; give a later time or a positive duration such as PT60S",
                minimum=now, maximum=maximum)
        return min(termination, maximum)

    def create(self, query: ResourceQuery, now: float, termination: float | None = None, *,
               topics: frozenset[str] | None = None, changed_only: bool = False,
               consumer: str | None = None) -> Subscription:
        """EVT-1: a new pull point; raises :class:`TooManySubscriptions` or :class:`UnacceptableTermination`.

        ``topics``: the generic topics it takes (``None`` = all); ``changed_only``: EVT-9 ``tev:ChangedOnly``;
        ``consumer``: EVT-10, a base-notification subscription pushing to that address (limit ``max_push``).
        """
        ends = self._termination(termination, now, "InitialTerminationTime")
        self.expire(now)
        with self._lock:
            pushing = sum(1 for s in self._subs.values() if s.consumer is not None)
            if consumer is not None and pushing >= self.max_push:
                raise TooManySubscriptions(
                    f"{self.max_push} base-notification subscriptions (MaxNotificationProducers) are in use; "
                    "unsubscribe one or wait until one expires")
            if consumer is None and len(self._subs) - pushing >= self.max_pull_points:
                raise TooManySubscriptions(
                    f"{self.max_pull_points} pull points (MaxPullPoints) are in use; "
                    "unsubscribe one or wait until one expires")
            sub_id = self._new_id()
            sub = Subscription(sub_id, query, ends, self.source, topics=topics, changed_only=changed_only,
                               consumer=consumer)
            self._subs[sub_id] = sub
        log.info("subscription %s created, kinds=%s, ends %s", sub_id,
                 "all" if query.kinds is None else ",".join(sorted(query.kinds)), format_datetime(ends))
        return sub

    def get(self, sub_id: str, now: float) -> Subscription:
        """The live subscription ``sub_id``; :class:`UnknownSubscription` if absent or expired."""
        with self._lock:
            sub = self._subs.get(sub_id)
            if sub is not None and sub.termination <= now:
                del self._subs[sub_id]
                log.info("subscription %s expired", sub_id)
                sub = None
        if sub is None:
            raise UnknownSubscription(
                f"no subscription {sub_id!r}: it was never created, was unsubscribed or has expired; "
                "create a new one with CreatePullPointSubscription")
        return sub

    def live(self, now: float) -> list[Subscription]:
        """The subscriptions alive at ``now`` (expired ones are dropped first)."""
        self.expire(now)
        with self._lock:
            return list(self._subs.values())

    def renew(self, sub_id: str, termination: float | None, now: float) -> float:
        """EVT-4 Renew: the new termination time."""
        sub = self.get(sub_id, now)
        sub.termination = self._termination(termination, now, "TerminationTime")
        return sub.termination

    def unsubscribe(self, sub_id: str, now: float) -> None:
        """EVT-4 Unsubscribe: the subscription ends now."""
        self.get(sub_id, now)
        with self._lock:
            self._subs.pop(sub_id, None)
        log.info("subscription %s unsubscribed", sub_id)

    def synchronize(self, sub_id: str, now: float) -> None:
        """EVT-4 SetSynchronizationPoint: every matching resource again as Initialized."""
        self.get(sub_id, now).synchronize(now)

    def pull(self, sub_id: str, limit: int, now: float, *, keep_alive: float = 0.0) -> PullResult:
        """EVT-3: up to ``limit`` messages; the subscription then lives at least ``keep_alive`` more seconds."""
        if limit < 1:
            raise ConfigurationError(f"limit must be >= 1, got {limit!r}")
        sub = self.get(sub_id, now)
        messages = sub.pull(limit, now)
        sub.termination = max(sub.termination, min(now + keep_alive, now + self.max_termination))
        return PullResult(messages, sub.termination)

    def expire(self, now: float) -> list[str]:
        """Drop every subscription whose termination time has passed; their ids."""
        with self._lock:
            gone = [sub_id for sub_id, sub in self._subs.items() if sub.termination <= now]
            for sub_id in gone:
                del self._subs[sub_id]
        for sub_id in gone:
            log.info("subscription %s expired", sub_id)
        return gone

    def next_expiry(self) -> float | None:
        """The earliest termination time of the live subscriptions (for the runtime's timer)."""
        with self._lock:
            return min((sub.termination for sub in self._subs.values()), default=None)

