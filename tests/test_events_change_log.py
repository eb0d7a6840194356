"""RQ-4, RQ-5: the running event service keeps the resource change log bounded — it prunes what every reader
has passed (each subscription's position, the Offline topic's), keeps the newest entries, at most once a
minute (fake clock) — and a subscription still reads every change after its position."""

from __future__ import annotations

from pathlib import Path

import pytest

from iec62676_2_33.domain.filters import ResourceQuery
from iec62676_2_33.domain.registry import ChangesPruned, ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.services import events as events_module
from iec62676_2_33.services.events import EventServiceContext

T0 = 1_800_000_000.0


def cameras(first: int, count: int) -> list[Resource]:
    return [Resource(f"dev1:cam{i:03d}", "MediaProfile", name=f"Camera {i}") for i in range(first, first + count)]


def test_the_change_log_is_pruned_behind_every_reader_rq_4_rq_5(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """RQ-4, RQ-5: 20 changes, keep 5: the first poll prunes up to #15; a subscription created then holds the
    log at its position while 20 more changes arrive (pruned only up to #20 a minute later), and pulling it
    yields exactly those 20 changes; within the minute nothing is pruned."""
    monkeypatch.setattr(events_module, "CHANGE_LOG_KEEP", 5)
    now = [T0]
    with ResourceRegistry(tmp_path / "resources.db") as registry:
        context = EventServiceContext.create(registry, clock=lambda: now[0])
        registry.upsert_many(cameras(0, 20))
        assert context.poll_changes()
        registry.changes_since(15)  # kept
        with pytest.raises(ChangesPruned):
            registry.changes_since(14)

        sub = context.manager.create(ResourceQuery(), now[0], now[0] + 600)
        first = sub.pull(100, now[0])
        assert len(first) == 20 and {m.operation for m in first} == {"Initialized"}  # type: ignore[union-attr]
        registry.upsert_many([Resource(r.token, r.kind, name=r.name + " (moved)") for r in cameras(0, 20)])
        now[0] += 10
        assert context.poll_changes()
        registry.changes_since(15)  # within the minute: not pruned again
        now[0] += 60
        registry.upsert(Resource("dev1:cam999", "MediaProfile"))
        assert context.poll_changes()
        with pytest.raises(ChangesPruned):
            registry.changes_since(19)  # pruned up to the subscription's position, #20, not beyond
        changes = sub.pull(100, now[0])
        assert [m.operation for m in changes] == ["Changed"] * 20 + ["Initialized"]  # type: ignore[union-attr]


def test_a_subscription_that_never_pulls_holds_the_log_only_so_far_rq_4_rq_5(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """RQ-4, RQ-5: a pull point that is kept alive but never pulled holds the log back at most CHANGE_LOG_MAX
    entries (else the log grows with every registry change); pulled after that, it re-enumerates: every
    resource once, as Initialized, the newest state."""
    monkeypatch.setattr(events_module, "CHANGE_LOG_KEEP", 5)
    monkeypatch.setattr(events_module, "CHANGE_LOG_MAX", 30)
    now = [T0]
    with ResourceRegistry(tmp_path / "resources.db") as registry:
        context = EventServiceContext.create(registry, clock=lambda: now[0])
        registry.upsert_many(cameras(0, 10))
        sub = context.manager.create(ResourceQuery(), now[0], now[0] + 600)
        assert len(sub.pull(100, now[0])) == 10
        for round_ in range(5):  # 50 changes the subscription never pulls
            registry.upsert_many([Resource(r.token, r.kind, name=f"{r.name} v{round_}") for r in cameras(0, 10)])
        now[0] += 61
        assert context.poll_changes()
        last = registry.last_seq()
        registry.changes_since(last - 30)  # the newest CHANGE_LOG_MAX are kept
        with pytest.raises(ChangesPruned):
            registry.changes_since(last - 31)
        again = sub.pull(100, now[0])
        assert sorted(m.resource.token for m in again) == [r.token for r in cameras(0, 10)]  # type: ignore[union-attr]
        assert {m.operation for m in again} == {"Initialized"}  # type: ignore[union-attr]
        assert {m.resource.name for m in again} == {f"Camera {i} v4" for i in range(10)}  # type: ignore[union-attr]
