"""The sans-IO penalty box for flooding sources (issue 8, finding 5), on a fake clock: how long a
source is refused after each strike, when strikes are forgotten, how sources are keyed, and that the
table stays bounded."""

from __future__ import annotations

import pytest

from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.sansio.penalty import PenaltyBox, PenaltyLimits


def test_blocks_double_per_strike_up_to_the_cap() -> None:
    box = PenaltyBox(PenaltyLimits(first=1.0, cap=5.0, forget_after=100.0))
    assert not box.blocked("198.51.100.7", 0.0)
    blocks = []
    now = 0.0
    for _ in range(5):
        blocks.append(box.strike("198.51.100.7", now))
        assert box.blocked("198.51.100.7", now + blocks[-1] - 0.01)
        assert not box.blocked("198.51.100.7", now + blocks[-1])
        now += blocks[-1]
    assert blocks == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert not box.blocked("198.51.100.8", 0.5)  # another source is not touched


def test_strikes_are_forgotten_after_a_quiet_time() -> None:
    box = PenaltyBox(PenaltyLimits(first=1.0, cap=60.0, forget_after=10.0))
    assert [box.strike("a", t) for t in (0.0, 1.0, 3.0)] == [1.0, 2.0, 4.0]
    assert box.strike("a", 3.0 + 10.5) == 1.0


def test_sources_are_keyed_like_the_admission_policy() -> None:
    key = PenaltyBox.source_key
    assert key("2001:db8:1:2::5") == key("2001:db8:1:2:ffff::9")  # one IPv6 /64
    assert key("::ffff:192.0.2.1") == key("192.0.2.1") == "192.0.2.1"
    assert key(None) == "?"


def test_the_table_is_bounded() -> None:
    box = PenaltyBox(PenaltyLimits(max_sources=3))
    for i in range(10):
        box.strike(f"10.0.0.{i}", 0.0)
    assert len(box) == 3
    assert box.blocked("10.0.0.9", 0.5) and not box.blocked("10.0.0.0", 0.5)


@pytest.mark.parametrize("kwargs", [{"first": 0}, {"cap": -1}, {"max_sources": 0}, {"first": 10, "cap": 5}])
def test_limits_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        PenaltyLimits(**kwargs)  # type: ignore[arg-type]
