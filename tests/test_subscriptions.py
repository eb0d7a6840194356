"""RQ-4, RQ-5, RQ-9, EVT-1, EVT-3, EVT-4: the pull-point subscription manager, driven with a fake clock.

The manager is sans-IO: every call takes ``now``; these tests pass made-up
times and never sleep. The registry is a real SQLite registry in a temporary
folder (its change log is what subscriptions follow).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iec62676_2_33.domain.filters import LocationFilter, PrefixFilter, ResourceQuery, SelectFilter
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import GeoLocation, Resource
from iec62676_2_33.domain.subscriptions import (
    InvalidTime,
    Notification,
    SubscriptionManager,
    TooManySubscriptions,
    UnacceptableTermination,
    UnknownSubscription,
    format_datetime,
    format_duration,
    parse_datetime,
    parse_duration,
    parse_termination,
)

T0 = 1_700_000_000.0
CENTRE = (8.68, 50.11)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ResourceRegistry]:
    with ResourceRegistry(tmp_path / "resources.db") as reg:
        yield reg


def near(i: int, *, kind: str = "MediaProfile", prefix: str = "dev1", offline: bool | None = None) -> Resource:
    """A resource about i metres east of CENTRE (0.0000140 deg of lon ~ 1 m at lat 50)."""
    return Resource(f"{prefix}:r{i:03d}", kind, f"cam {i}", GeoLocation(CENTRE[0] + i * 0.0000140, CENTRE[1]),
                    (f"onvif://www.onvif.org/location/city/ffm/{i}",), offline)


def ops(messages: list[Notification]) -> list[tuple[str, str]]:
    return [(m.operation, m.resource.token) for m in messages]


def test_parse_termination_accepts_relative_and_absolute_times_evt_1() -> None:
    """EVT-1: InitialTerminationTime as xs:duration or xs:dateTime (with Z, offset or no zone)."""
    assert parse_duration("PT60S") == 60.0
    assert parse_duration("PT1M30.5S") == 90.5
    assert parse_duration("P1DT2H") == 93600.0
    assert parse_duration("-PT5S") == -5.0
    assert parse_termination("PT10S", T0) == T0 + 10
    assert parse_termination("2023-11-14T22:13:20Z", 0) == T0
    assert parse_termination("2023-11-15T00:13:20+02:00", 0) == T0
    assert parse_datetime("2023-11-14T22:13:20") == T0
    assert format_datetime(T0) == "2023-11-14T22:13:20Z"
    assert format_datetime(T0 + 0.25) == "2023-11-14T22:13:20.250Z"
    assert format_duration(60) == "PT60S"
    assert format_duration(0.5) == "PT0.5S"
    for bad in ("60", "PT", "P", "PTS", "1M", "yesterday", "2023-11-14"):
        with pytest.raises(InvalidTime):
            parse_termination(bad, T0)


def test_every_parsed_instant_can_be_written_back_as_an_xs_datetime_evt_1() -> None:
    """EVT-1: a time a zone offset moves out of the years 1 to 9999 in UTC is refused where it is read (it
    gave tracebacks and 500s where an answer wrote it back); years before 1000 are written in four digits."""
    for text in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00"):
        with pytest.raises(InvalidTime, match="outside the years 1 to 9999"):
            parse_datetime(text)
    for text in ("0500-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0099-06-01T12:00:00.250Z"):
        assert format_datetime(parse_datetime(text)) == text


def test_enumeration_then_changes_in_pages_rq_5_evt_3(registry: ResourceRegistry) -> None:
    """RQ-5, EVT-3: first every match as Initialized, paged by MessageLimit, then only changes."""
    registry.upsert_many([near(i) for i in range(7)])
    manager = SubscriptionManager(registry)
    sub = manager.create(ResourceQuery(kinds=frozenset({"MediaProfile"})), T0)
    first = manager.pull(sub.id, 3, T0 + 1)
    assert ops(first.messages) == [("Initialized", f"dev1:r{i:03d}") for i in range(3)]
    assert ops(manager.pull(sub.id, 3, T0 + 2).messages) == [("Initialized", f"dev1:r{i:03d}") for i in range(3, 6)]
    assert ops(manager.pull(sub.id, 3, T0 + 3).messages) == [("Initialized", "dev1:r006")]
    assert manager.pull(sub.id, 3, T0 + 4).messages == []
    registry.upsert(near(7))
    registry.upsert(Resource("dev1:r001", "MediaProfile", "renamed", near(1).location, near(1).scopes))
    registry.remove("dev1:r002")
    assert ops(manager.pull(sub.id, 10, T0 + 5).messages) == [
        ("Initialized", "dev1:r007"), ("Changed", "dev1:r001"), ("Deleted", "dev1:r002")]
    assert first.messages[0].utc_time == T0 + 1


def test_location_filter_moves_give_initialized_and_deleted_per_subscriber_rq_4_rq_6(
        registry: ResourceRegistry) -> None:
    """RQ-4, RQ-6: a resource that leaves the circle is Deleted for that subscriber; entering is Initialized."""
    registry.upsert_many([near(10), near(500)])
    manager = SubscriptionManager(registry)
    inside = ResourceQuery(kinds=frozenset({"MediaProfile"}), location=LocationFilter(*CENTRE, radius=100))
    sub = manager.create(inside, T0)
    everything = manager.create(ResourceQuery(), T0)
    assert ops(manager.pull(sub.id, 10, T0).messages) == [("Initialized", "dev1:r010")]
    assert len(manager.pull(everything.id, 10, T0).messages) == 2
    registry.upsert(Resource("dev1:r010", "MediaProfile", "cam 10", GeoLocation(9.5, 50.11)))  # moved away
    registry.upsert(Resource("dev1:r500", "MediaProfile", "cam 500", GeoLocation(*CENTRE)))  # moved in
    assert ops(manager.pull(sub.id, 10, T0).messages) == [("Deleted", "dev1:r010"), ("Initialized", "dev1:r500")]
    assert ops(manager.pull(everything.id, 10, T0).messages) == [("Changed", "dev1:r010"), ("Changed", "dev1:r500")]
    registry.remove("dev1:r010")  # not signalled to `sub` any more: nothing for it
    assert manager.pull(sub.id, 10, T0).messages == []
    assert ops(manager.pull(everything.id, 10, T0).messages) == [("Deleted", "dev1:r010")]


def test_offline_change_and_prefix_filter_rq_4_rq_7(registry: ResourceRegistry) -> None:
    """RQ-4: marking a device offline gives Changed carrying Offline; RQ-7: other prefixes stay silent."""
    registry.upsert_many([near(1, offline=False), near(2, prefix="dev2", offline=False)])
    manager = SubscriptionManager(registry)
    sub = manager.create(ResourceQuery(prefix=PrefixFilter("dev1")), T0)
    assert ops(manager.pull(sub.id, 10, T0).messages) == [("Initialized", "dev1:r001")]
    registry.set_prefix_offline("dev1", True)
    registry.set_prefix_offline("dev2", True)
    [changed] = manager.pull(sub.id, 10, T0).messages
    assert (changed.operation, changed.resource.token, changed.resource.offline) == ("Changed", "dev1:r001", True)


def test_select_projection_and_deleted_carries_token_only_rq_9(registry: ResourceRegistry) -> None:
    """RQ-9: only the selected items are returned (Source Token always); Deleted has the token alone."""
    registry.upsert(near(1, offline=True))
    manager = SubscriptionManager(registry)
    sub = manager.create(ResourceQuery(select=SelectFilter(["/Name"])), T0)
    [init] = manager.pull(sub.id, 10, T0).messages
    assert init.resource == Resource("dev1:r001", "MediaProfile", "cam 1")
    registry.upsert(Resource("dev1:r001", "MediaProfile", "new", GeoLocation(1, 2), ("x:y",), False))
    [changed] = manager.pull(sub.id, 10, T0).messages
    assert changed.resource == Resource("dev1:r001", "MediaProfile", "new")
    registry.remove("dev1:r001")
    [deleted] = manager.pull(sub.id, 10, T0).messages
    assert (deleted.operation, deleted.resource) == ("Deleted", Resource("dev1:r001", "MediaProfile"))


def test_set_synchronization_point_resends_all_as_initialized_and_keeps_pending_deletes_evt_4(
        registry: ResourceRegistry) -> None:
    """EVT-4: SetSynchronizationPoint re-sends every match as Initialized; no Deleted is lost."""
    registry.upsert_many([near(i) for i in range(3)])
    manager = SubscriptionManager(registry)
    sub = manager.create(ResourceQuery(), T0)
    assert len(manager.pull(sub.id, 10, T0).messages) == 3
    registry.remove("dev1:r000")
    manager.synchronize(sub.id, T0)
    assert ops(manager.pull(sub.id, 10, T0).messages) == [
        ("Deleted", "dev1:r000"), ("Initialized", "dev1:r001"), ("Initialized", "dev1:r002")]
    assert manager.pull(sub.id, 10, T0).messages == []
    registry.upsert(near(5))
    assert ops(manager.pull(sub.id, 10, T0).messages) == [("Initialized", "dev1:r005")]


def test_synchronization_point_during_enumeration_restarts_it_evt_4(registry: ResourceRegistry) -> None:
    """EVT-4: a synchronization point in the middle of an enumeration starts it over."""
    registry.upsert_many([near(i) for i in range(4)])
    manager = SubscriptionManager(registry)
    sub = manager.create(ResourceQuery(), T0)
    assert ops(manager.pull(sub.id, 2, T0).messages) == [("Initialized", "dev1:r000"), ("Initialized", "dev1:r001")]
    manager.synchronize(sub.id, T0)
    assert [t for _, t in ops(manager.pull(sub.id, 10, T0).messages)] == [f"dev1:r{i:03d}" for i in range(4)]


def test_termination_expiry_renew_unsubscribe_and_unknown_ids_evt_1_evt_4(registry: ResourceRegistry) -> None:
    """EVT-1, EVT-4: default and clamped termination; expired or unsubscribed ids raise, never answer empty."""
    manager = SubscriptionManager(registry, default_termination=60, max_termination=3600)
    sub = manager.create(ResourceQuery(), T0)
    assert sub.termination == T0 + 60
    assert manager.create(ResourceQuery(), T0, T0 + 10_000).termination == T0 + 3600
    with pytest.raises(UnacceptableTermination) as info:
        manager.create(ResourceQuery(), T0, T0 - 1)
    assert (info.value.minimum, info.value.maximum) == (T0, T0 + 3600)
    assert manager.renew(sub.id, T0 + 100, T0 + 50) == T0 + 100
    assert manager.pull(sub.id, 1, T0 + 99, keep_alive=30).termination == T0 + 129  # EVT-3 keep-alive
    assert manager.next_expiry() == T0 + 129
    with pytest.raises(UnknownSubscription):
        manager.pull(sub.id, 1, T0 + 129)
    with pytest.raises(UnknownSubscription):
        manager.renew(sub.id, T0 + 200, T0 + 130)
    other = manager.create(ResourceQuery(), T0 + 200)
    manager.unsubscribe(other.id, T0 + 201)
    for call in (lambda: manager.unsubscribe(other.id, T0 + 202), lambda: manager.synchronize("nope", T0)):
        with pytest.raises(UnknownSubscription):
            call()


def test_max_pull_points_evt_1(registry: ResourceRegistry) -> None:
    """EVT-1: MaxPullPoints live subscriptions at most; expired ones make room."""
    manager = SubscriptionManager(registry, max_pull_points=2, default_termination=10)
    manager.create(ResourceQuery(), T0)
    manager.create(ResourceQuery(), T0 + 5)
    with pytest.raises(TooManySubscriptions):
        manager.create(ResourceQuery(), T0 + 6)
    assert manager.create(ResourceQuery(), T0 + 11).termination == T0 + 21
    assert len(manager) == 2


def test_enumeration_streams_pages_never_all_matches_rq_5(registry: ResourceRegistry) -> None:
    """RQ-5 scale: each pull reads one registry page no larger than the MessageLimit."""
    registry.upsert_many([near(i) for i in range(50)])
    asked: list[int] = []

    class Spy:
        def query(self, query: ResourceQuery, *, after_token: str | None = None, limit: int = 100) -> list[Resource]:
            asked.append(limit)
            return registry.query(query, after_token=after_token, limit=limit)

        def last_seq(self) -> int:
            return registry.last_seq()

        def changes_since(self, seq: int, limit: int = 1000) -> list:  # type: ignore[type-arg]
            return registry.changes_since(seq, limit)

    manager = SubscriptionManager(Spy())
    sub = manager.create(ResourceQuery(), T0)
    total = 0
    while batch := manager.pull(sub.id, 8, T0).messages:
        total += len(batch)
    assert total == 50
    assert asked == [8] * 7


def test_token_set_many_tokens_and_removals_rq_4(registry: ResourceRegistry) -> None:
    """RQ-4: the compact signalled-token set keeps membership right across runs and removals."""
    from iec62676_2_33.domain.subscriptions import _TokenSet

    tokens = _TokenSet()
    tokens._RUN = 100  # type: ignore[misc]
    for i in range(1050):
        tokens.add(f"d:{i}")
    for i in range(0, 1050, 3):
        tokens.discard(f"d:{i}")
    tokens._compact()
    tokens.add("d:3")
    assert [f"d:{i}" in tokens for i in range(10)] == [False, True, True, True, True, True, False, True, True, False]
    assert "d:1050" not in tokens


def test_signalled_set_stays_exact_when_a_synchronization_point_restarts_the_first_enumeration_rq_4_evt_4(
        registry: ResourceRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """RQ-4, EVT-4: the first enumeration adds tokens unchecked (each comes once); a synchronization point
    in its middle switches back to checked adds. Otherwise a token would sit both in a sorted run and in
    the buffer, a removal would forget only one copy, and the resource added again would come as Changed."""
    from iec62676_2_33.domain import subscriptions

    monkeypatch.setattr(subscriptions._TokenSet, "_RUN", 4)  # small runs: the sorted-run paths at test scale
    registry.upsert_many([near(i) for i in range(11)])
    manager = SubscriptionManager(registry)
    sub = manager.create(ResourceQuery(), T0)
    assert len(manager.pull(sub.id, 11, T0).messages) == 11  # a full page: the enumeration is not over
    manager.synchronize(sub.id, T0)
    assert len(manager.pull(sub.id, 100, T0).messages) == 11
    registry.remove("dev1:r009")
    registry.remove("dev1:r002")
    assert ops(manager.pull(sub.id, 100, T0).messages) == [("Deleted", "dev1:r009"), ("Deleted", "dev1:r002")]
    registry.upsert_many([near(9), near(2)])
    assert ops(manager.pull(sub.id, 100, T0).messages) == [("Initialized", "dev1:r009"),
                                                           ("Initialized", "dev1:r002")]


@pytest.mark.parametrize("text", ["-P3000Y", "P9000Y", "0001-01-01T00:00:00Z"])
def test_termination_outside_the_representable_years_is_invalid_evt_1_evt_4(text: str) -> None:
    """EVT-1, EVT-4: a termination no xs:dateTime answer could name is an InvalidTime, not a crash."""
    with pytest.raises(InvalidTime) as info:
        parse_termination(text, 1_800_000_000.0)
    assert str(info.value) == f"termination time {text!r} lies outside the years 1 to 9999"
