"""EVT-1, EVT-4: subscriptions nobody pulls end at their termination time and free what they held.

10,000 pull points are created (each holding the state of a started enumeration and queued generic
events), nobody pulls, the clock passes their termination time: the service's periodic hook drops them,
every call on them faults, and the memory they held is given back (tracemalloc, not a duration).
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from pathlib import Path

import pytest

from iec62676_2_33.domain.filters import ResourceQuery
from iec62676_2_33.domain.generic_events import TopicDescription
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.domain.subscriptions import SubscriptionManager, UnknownSubscription
from iec62676_2_33.services.events import EventServiceContext

T0 = 1_700_000_000.0
COUNT = 10_000
DOOR = TopicDescription("Door/State", source=(("DoorToken", "xs:string"),), data=(("State", "xs:string"),))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_ten_thousand_abandoned_subscriptions_end_and_free_their_memory_evt_1_evt_4(tmp_path: Path) -> None:
    """EVT-1, EVT-4: a client that never pulls loses its subscription at termination time; 10,000 such
    subscriptions (with queued events) are all dropped by the periodic hook and their memory is freed."""
    clock = Clock()
    with ResourceRegistry(tmp_path / "resources.db") as registry:
        registry.upsert_many([Resource(f"dev1:p{i}", "MediaProfile", f"cam {i}") for i in range(10)])
        context = EventServiceContext(registry=registry, manager=SubscriptionManager(registry,
                                      max_pull_points=COUNT), clock=clock)
        context.declare(DOOR)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            subs = [context.manager.create(ResourceQuery(), T0, T0 + 60, topics=None) for _ in range(COUNT)]
            for i in range(5):
                assert context.publish(DOOR, {"DoorToken": f"d{i}"}, {"State": "Open"}) == COUNT
            held = tracemalloc.get_traced_memory()[0] - before
            refs = [weakref.ref(sub) for sub in subs]
            ids = [sub.id for sub in subs[:3]]
            del subs
            clock.now = T0 + 61
            context.poll_changes()  # the runtime's periodic hook
            assert len(context.manager) == 0
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert all(ref() is None for ref in refs)
        assert held > 1024 * 1024  # the subscriptions did hold memory (> 1 MiB) …
        assert left < held // 20  # … and at least 95 % of it is back
        for sub_id in ids:
            with pytest.raises(UnknownSubscription):
                context.manager.pull(sub_id, 10, clock.now)
