"""Layer 4: the union of the lower systems' resources in the VSS's registry (clause 7, GEN-1, ANX-B-4).

Theory of operation
-------------------
The VSS's event service answers resource queries from its own registry
(:class:`~..domain.registry.ResourceRegistry`, with the Location, Prefix, Scope
and Select filters and the R*Tree). A :class:`LowerMirror` per lower system
keeps that registry holding the lower system's resources too, so every query
runs over the union without per-query fan-out, and a Prefix filter naturally
narrows the answer to the lower systems it names:

1. Subscribe to the lower system's event service as a resource-query client
   (:class:`~..query.ResourceQueryClient`, over HTTP with the VSS's account or
   over the lower system's uplink): a pull point without topic filter.
2. Enumerate (a page per PullMessages, written in one transaction): each
   resource with its token adapted by the clause 6 rule of :mod:`.adaption` (a
   local token gets the lower's prefix, a remote token keeps its own and its
   prefix is routed to the lower system) and an explicit ``Offline`` item
   (false); tokens of the lower system's prefixes that the enumeration no
   longer has are removed (``Deleted``). A resource the registry refuses (a
   token that changed its kind) is left out, the others are taken.
3. Follow: each PullMessages (``pull_timeout``, a few seconds) brings the lower
   system's Changed/Initialized/Deleted events, which are applied at once; the
   registry's change log then wakes the VSS's own pull points, so a change
   reaches the VSS's subscribers within a pull timeout plus the change-log poll.
4. When a call fails (connection lost, uplink down, pull overdue: RQ-10), every
   resource of the lower system's prefixes is set Offline (one ``Changed``
   each, RQ-4), and the mirror retries after ``retry`` seconds; the next
   enumeration sets them back online.

The mirror runs in a thread of its own (the query client blocks) and stops
within one pull timeout of ``stop``; its pull point on the lower system is
unsubscribed when it stops, so nothing stays subscribed below. When the lower
system is removed from the configuration, its resources are removed too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ..domain.filters import PrefixFilter, ResourceQuery
from ..domain.registry import ResourceRegistry
from ..domain.resources import InvalidResource, Resource
from ..domain.tokens import InvalidToken
from ..errors import Iec62676Error
from ..query import ResourceChange, ResourceQueryClient
from .lower import LowerStore, LowerSystem

if TYPE_CHECKING:
    from typing import Self

__all__ = ["LowerFollower", "LowerMirror"]

log = logging.getLogger(__name__)

#: Resources read per page when the mirror compares its registry with an enumeration.
PAGE = 1000


class LowerFollower:
    """A thread that follows one lower system: :meth:`_follow` until it fails, then :meth:`_down` and a
    retry after ``retry`` seconds, until :meth:`close`."""

    what = "follower"

    def __init__(self, lower: LowerSystem, lowers: LowerStore, client: Callable[[LowerSystem], ResourceQueryClient],
                 *, retry: float = 1.0) -> None:
        self.lower = lower
        self.lowers = lowers
        self.client = client
        self.retry = retry
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vss {self.what} {lower.prefix}", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self, timeout: float = 15.0) -> None:
        self.stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0  # in a row: the first is logged at INFO, the retries of a lower system that stays down at DEBUG
        while not self.stop.is_set():
            try:
                self._follow()
                failures = 0
            except (Iec62676Error, OSError) as exc:
                log.log(logging.DEBUG if failures else logging.INFO, "lower system %s: %s interrupted: %s",
                        self.lower.prefix, self.what, exc)
                failures += 1
            except Exception:
                log.exception("lower system %s: %s failed", self.lower.prefix, self.what)
            if self.stop.is_set():
                return
            self._down()
            self.stop.wait(self.retry)

    def _follow(self) -> None:
        raise NotImplementedError

    def _down(self) -> None:
        """The lower system cannot be followed now."""


class LowerMirror(LowerFollower):
    """Keeps one lower system's resources in the VSS's registry (module docstring)."""

    what = "resource mirror"

    def __init__(self, lower: LowerSystem, registry: ResourceRegistry, lowers: LowerStore,
                 client: Callable[[LowerSystem], ResourceQueryClient], *, retry: float = 1.0) -> None:
        super().__init__(lower, lowers, client, retry=retry)
        self.registry = registry
        self.online: bool | None = None
        self._owned = {lower.prefix}  # every prefix its resources came under (routes go with the lower)

    def _prefixes(self) -> set[str]:
        self._owned |= {q for q, p in self.lowers.routes().items() if p == self.lower.prefix}
        return set(self._owned)

    def forget(self) -> None:
        """The lower system was removed: its resources leave the registry (``Deleted``). Call after
        :meth:`close`."""
        self._remove_unseen(set())

    def _down(self) -> None:
        self._set_online(False)

    def _follow(self) -> None:
        client = self.client(self.lower)
        with client.subscribe() as subscription:
            seen: set[str] = set()
            while not self.stop.is_set():  # the enumeration: pulls that answer at once, a page each
                batch = subscription.pull(0.0, client.message_limit)
                seen.update(self._apply(batch))
                if len(batch) < client.message_limit:
                    break
            if self.stop.is_set():
                return
            self._remove_unseen(seen)
            self._set_online(True)
            while not self.stop.is_set():
                self._apply(subscription.pull())

    def _apply(self, changes: list[ResourceChange]) -> list[str]:
        """Write one pull's changes, in order: one transaction for each run of upserts and each run of
        deletions; their tokens."""
        tokens: list[str] = []
        upserts: list[Resource] = []
        deletions: list[str] = []
        for change in changes:
            # the clause 6 rule with isolation (:mod:`.adaption`): a token of another lower system gets this
            # one's prefix, so a lower system can neither write nor delete another's mirrored resources
            try:
                token = self.lowers.expose(self.lower.prefix, change.resource.token)
            except InvalidToken as exc:
                log.info("lower system %s: resource change dropped: %s", self.lower.prefix, exc)
                continue
            resource = replace(change.resource, token=token, offline=bool(change.resource.offline))
            tokens.append(resource.token)
            if change.operation == "Deleted":
                self._upsert(upserts)
                upserts = []
                deletions.append(resource.token)
            else:
                self.registry.remove_many(deletions)
                deletions = []
                upserts.append(resource)
        self._upsert(upserts)
        self.registry.remove_many(deletions)
        return tokens

    def _upsert(self, resources: list[Resource]) -> None:
        if not resources:
            return
        try:
            self.registry.upsert_many(resources)
        except InvalidResource:  # one bad resource (a token that changed its kind) must not hold up the rest
            for resource in resources:
                try:
                    self.registry.upsert(resource)
                except InvalidResource as exc:
                    log.info("lower system %s: resource %r not taken: %s", self.lower.prefix, resource.token, exc)

    def _remove_unseen(self, seen: set[str]) -> None:
        for prefix in self._prefixes():
            query = ResourceQuery(prefix=PrefixFilter(prefix))
            after: str | None = None
            while True:
                page = self.registry.query(query, after_token=after, limit=PAGE)
                self.registry.remove_many(resource.token for resource in page if resource.token not in seen)
                if len(page) < PAGE:
                    break
                after = page[-1].token

    def _set_online(self, online: bool) -> None:
        if self.online == online:
            return
        self.online = online
        if not online:
            for prefix in self._prefixes():
                self.registry.set_prefix_offline(prefix, True)
        log.info("lower system %s is %s", self.lower.prefix, "online" if online else "offline")
