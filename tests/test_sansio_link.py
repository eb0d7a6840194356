"""Link monitoring, uplink lifecycle and reconnection intervals (UPL-7, UPL-8, UPL-9, UPL-10).

Everything runs on a fake clock: the tests pass ``now`` in, ask for the next
deadline and assert the exact actions. Nothing sleeps, nothing reads the
wall clock.
"""

from __future__ import annotations

import itertools
import math

import pytest

from iec62676_2_33.errors import ConfigurationError, LocalProtocolError
from iec62676_2_33.sansio.backoff import ReconnectBackoff
from iec62676_2_33.sansio.link import (
    CloseLink,
    LinkMonitor,
    SendPing,
    UplinkSupervisor,
)

AFTER = math.nextafter


def just_after(t: float) -> float:
    return AFTER(t, math.inf)


def ping(n: int) -> SendPing:
    return SendPing(opaque=n.to_bytes(8, "big"))


# ------------------------------------------------------------------ LinkMonitor


class TestLinkMonitor:
    """UPL-7 (idle PING) and UPL-8 (close after more than 30 s without data)."""

    def test_silent_cloud_timeline(self) -> None:
        mon = LinkMonitor(0.0)
        assert mon.next_deadline() == 10.0
        assert mon.on_timer(9.999) == []
        assert mon.on_timer(10.0) == [ping(1)]
        assert mon.ping_outstanding
        # No second PING while the first is unanswered.
        assert mon.next_deadline() == just_after(30.0)
        assert mon.on_timer(20.0) == []
        assert mon.on_timer(30.0) == []
        assert mon.on_timer(30.001) == [
            CloseLink(reason="no data from the cloud for 30.0 s (UPL-8)")
        ]
        assert mon.closed
        assert mon.next_deadline() == math.inf
        assert mon.on_timer(31.0) == []

    def test_ping_opaque_is_8_bytes(self) -> None:
        mon = LinkMonitor(0.0)
        (action,) = mon.on_timer(10.0)
        assert isinstance(action, SendPing)
        assert action.opaque == b"\x00\x00\x00\x00\x00\x00\x00\x01" and len(action.opaque) == 8

    def test_acked_ping_keeps_link_alive_and_measures_rtt(self) -> None:
        mon = LinkMonitor(100.0)
        assert mon.last_rtt is None
        assert mon.on_timer(110.0) == [ping(1)]
        mon.data_received(110.25)  # the ACK frame is data from the cloud
        assert mon.ping_acked(ping(1).opaque, 110.25) is True
        assert mon.last_rtt == 0.25
        assert not mon.ping_outstanding
        assert mon.next_deadline() == 120.25
        assert mon.on_timer(120.0) == []
        assert mon.on_timer(120.25) == [ping(2)]
        mon.data_received(120.5)
        assert mon.ping_acked(ping(2).opaque, 120.5)
        assert mon.last_rtt == 0.0 + 0.25
        assert mon.on_timer(150.5) == [ping(3)]  # late timer: one PING, not a burst
        assert mon.on_timer(150.5) == []

    def test_unknown_ack_is_ignored(self) -> None:
        mon = LinkMonitor(0.0)
        assert mon.ping_acked(b"\x00" * 8, 1.0) is False
        mon.on_timer(10.0)
        assert mon.ping_acked(b"\xff" * 8, 11.0) is False
        assert mon.ping_outstanding and mon.last_rtt is None

    def test_traffic_defers_pings(self) -> None:
        mon = LinkMonitor(0.0)
        for t in (4.0, 8.0, 12.0, 16.0):
            assert mon.on_timer(t) == []
            mon.data_received(t)
        assert mon.next_deadline() == 26.0
        assert mon.on_timer(25.999) == []
        assert mon.on_timer(26.0) == [ping(1)]

    def test_pings_no_more_often_than_idle_interval(self) -> None:
        """Even if the ACK does not count as data, PINGs stay 10 s apart."""
        mon = LinkMonitor(0.0)
        assert mon.on_timer(10.0) == [ping(1)]
        mon.ping_acked(ping(1).opaque, 10.1)  # ACK without data_received
        assert mon.next_deadline() == 20.0
        assert mon.on_timer(19.9) == []
        assert mon.on_timer(20.0) == [ping(2)]

    def test_data_resets_the_dead_timer(self) -> None:
        mon = LinkMonitor(0.0)
        mon.on_timer(10.0)
        mon.data_received(29.0)
        assert mon.on_timer(30.001) == []
        assert mon.next_deadline() == just_after(59.0)
        assert mon.on_timer(59.0) == []
        assert mon.on_timer(59.5) == [CloseLink(reason="no data from the cloud for 30.5 s (UPL-8)")]

    def test_late_timer_reports_real_silence(self) -> None:
        mon = LinkMonitor(0.0)
        assert mon.on_timer(3600.0) == [
            CloseLink(reason="no data from the cloud for 3600.0 s (UPL-8)")
        ]

    def test_time_going_backwards_is_harmless(self) -> None:
        mon = LinkMonitor(50.0)
        mon.data_received(40.0)
        assert mon.last_received == 50.0

    def test_ping_timeout(self) -> None:
        mon = LinkMonitor(0.0, idle_ping_after=5.0, dead_after=60.0, ping_timeout=3.0)
        assert mon.on_timer(5.0) == [ping(1)]
        mon.data_received(7.0)  # other frames, but no ACK
        assert mon.next_deadline() == just_after(8.0)
        assert mon.on_timer(8.0) == []
        assert mon.on_timer(8.5) == [CloseLink(reason="PING not acknowledged within 3.5 s (UPL-7)")]

    def test_custom_intervals(self) -> None:
        mon = LinkMonitor(0.0, idle_ping_after=2.0, dead_after=5.0)
        assert mon.on_timer(2.0) == [ping(1)]
        assert mon.next_deadline() == just_after(5.0)
        assert mon.on_timer(just_after(5.0)) == [
            CloseLink(reason="no data from the cloud for 5.0 s (UPL-8)")
        ]

    @pytest.mark.parametrize(
        "kwargs",
        [{"idle_ping_after": 0.0}, {"dead_after": -1.0}, {"ping_timeout": 0.0}],
    )
    def test_bad_arguments(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ConfigurationError):
            LinkMonitor(0.0, **kwargs)

    def test_walk_the_clock(self) -> None:
        """Drive by deadlines alone, as a runtime would: PING at 10, close just after 30."""
        mon = LinkMonitor(0.0)
        log: list[tuple[float, object]] = []
        now = 0.0
        while not mon.closed:
            now = mon.next_deadline()
            log.extend((now, a) for a in mon.on_timer(now))
        assert log == [
            (10.0, ping(1)),
            (just_after(30.0), CloseLink(reason="no data from the cloud for 30.0 s (UPL-8)")),
        ]


# ------------------------------------------------------------------ ReconnectBackoff


class TestReconnectBackoff:
    """UPL-9: an individual ascending interval per device."""

    def test_first_interval_is_deterministic_and_in_range(self) -> None:
        a1 = ReconnectBackoff("device-A")
        a2 = ReconnectBackoff("device-A")
        assert a1.first_interval == a2.first_interval
        assert 1.0 <= a1.first_interval < 4.0
        assert round(a1.first_interval * 1000) == pytest.approx(a1.first_interval * 1000, abs=1e-6)

    def test_two_devices_differ(self) -> None:
        a = ReconnectBackoff("device-A").peek_sequence(6)
        b = ReconnectBackoff("device-B").peek_sequence(6)
        assert a[0] != b[0]
        assert a != b

    def test_sequence_doubles_and_caps(self) -> None:
        backoff = ReconnectBackoff("device-A")
        first = backoff.first_interval
        expected = [min(30.0, first * 2**i) for i in range(8)]
        assert backoff.peek_sequence(8) == expected
        assert [backoff.next_delay() for _ in range(8)] == expected
        assert expected[-1] == 30.0
        assert backoff.attempt == 8

    def test_example_shape_of_the_standard(self) -> None:
        """With first interval 3 s the sequence is 3, 6, 12, 24, 30, 30 (UPL-9 example)."""
        backoff = ReconnectBackoff("x", first_min=3.0, first_max=3.001)
        assert backoff.peek_sequence(6) == [3.0, 6.0, 12.0, 24.0, 30.0, 30.0]
        backoff = ReconnectBackoff("y", first_min=2.0, first_max=2.001)
        assert backoff.peek_sequence(6) == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]

    def test_peek_does_not_advance_and_reset_restarts(self) -> None:
        backoff = ReconnectBackoff("device-A")
        seq = backoff.peek_sequence(4)
        assert backoff.peek_sequence(4) == seq
        assert backoff.next_delay() == seq[0]
        assert backoff.next_delay() == seq[1]
        assert backoff.peek_sequence(2) == seq[2:4]
        backoff.reset()
        assert backoff.attempt == 0
        assert backoff.next_delay() == seq[0]

    def test_spread_over_a_fleet(self) -> None:
        firsts = [
            ReconnectBackoff(f"sha256:{i:064x}|https://cloud/uplink").first_interval
            for i in range(1000)
        ]
        buckets = {int((f - 1.0) / 0.1) for f in firsts}  # 30 buckets of 100 ms over [1, 4)
        assert all(0 <= b < 30 for b in buckets)
        assert len(buckets) >= 27
        assert len(set(firsts)) >= 800  # mostly distinct at ms resolution

    @pytest.mark.parametrize("n", [0, 1, 2, 3])
    def test_ascending_and_capped_for_many_identities(self, n: int) -> None:
        for i in range(250 * n, 250 * (n + 1)):
            seq = ReconnectBackoff(f"device-{i}").peek_sequence(12)
            assert 1.0 <= seq[0] < 4.0
            assert all(a < b or a == b == 30.0 for a, b in itertools.pairwise(seq))
            assert max(seq) == 30.0 and seq[-1] == 30.0

    def test_custom_parameters(self) -> None:
        backoff = ReconnectBackoff("d", cap=10.0, first_min=0.5, first_max=0.6, factor=3.0)
        first = backoff.first_interval
        assert 0.5 <= first < 0.6
        assert backoff.peek_sequence(5) == [first, first * 3, first * 9, 10.0, 10.0]

    def test_huge_attempt_counts_stay_capped(self) -> None:
        backoff = ReconnectBackoff("d")
        for _ in range(5000):
            backoff.next_delay()
        assert backoff.next_delay() == 30.0

    def test_repr_hides_identity(self) -> None:
        assert "secret" not in repr(ReconnectBackoff("https://c/?access_token=secret"))

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"first_min": 4.0, "first_max": 1.0},
            {"first_min": 0.0},
            {"factor": 1.0},
            {"cap": 0.5},
            {"cap": math.inf},
        ],
    )
    def test_bad_parameters(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ConfigurationError):
            ReconnectBackoff("d", **kwargs)

    def test_empty_identity(self) -> None:
        with pytest.raises(ConfigurationError, match="identity"):
            ReconnectBackoff("")


# ----------------------------------------------------------------- UplinkSupervisor


def fixed_backoff() -> ReconnectBackoff:
    """First interval exactly 3 s: 3, 6, 12, 24, 30, 30 …"""
    return ReconnectBackoff("x", first_min=3.0, first_max=3.001)


class TestUplinkSupervisor:
    """UPL-8 / UPL-9 / UPL-10 and CFG-1 Status/Error of one uplink configuration."""

    def test_first_attempt_is_immediate(self) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 100.0)
        assert (sup.status, sup.error, sup.next_deadline()) == ("Offline", None, 100.0)
        assert sup.should_connect(100.0) is True
        assert (sup.status, sup.next_deadline()) == ("Connecting", None)
        assert sup.should_connect(100.0) is False

    def test_failures_follow_the_backoff(self) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 0.0)
        now = 0.0
        waits = []
        for i in range(6):
            assert sup.should_connect(now)
            sup.connect_failed(now, f"TLS handshake failed ({i})")
            assert sup.status == "Offline" and sup.error == f"TLS handshake failed ({i})"
            deadline = sup.next_deadline()
            assert deadline is not None
            assert sup.should_connect(deadline - 0.001) is False
            waits.append(deadline - now)
            now = deadline
        assert waits == [3.0, 6.0, 12.0, 24.0, 30.0, 30.0]

    def test_connect_clears_error(self) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 0.0)
        sup.should_connect(0.0)
        sup.connect_failed(0.0, "401 Unauthorized: invalid token")
        assert sup.should_connect(3.0)
        assert sup.error == "401 Unauthorized: invalid token"
        sup.connected(3.5)
        assert (sup.status, sup.error, sup.next_deadline()) == ("Connected", None, None)

    def test_short_lived_connection_keeps_climbing(self) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 0.0)
        sup.should_connect(0.0)
        sup.connect_failed(0.0, "refused")  # wait 3
        assert sup.should_connect(3.0)
        sup.connected(3.0)
        sup.disconnected(10.0, "no data from the cloud for 30.0 s (UPL-8)")  # up 7 s < 30 s
        assert (sup.status, sup.error) == ("Offline", "no data from the cloud for 30.0 s (UPL-8)")
        assert sup.next_deadline() == 16.0  # 10 + 6

    def test_stable_connection_resets_backoff(self) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 0.0)
        sup.should_connect(0.0)
        sup.connect_failed(0.0, "refused")
        sup.should_connect(3.0)
        sup.connect_failed(3.0, "refused")  # waited 6 next
        sup.should_connect(9.0)
        sup.connected(9.0)
        sup.disconnected(39.0, "cloud closed the connection")  # up exactly 30 s
        assert sup.next_deadline() == 42.0  # back to the first interval, 3 s

    def test_stable_after_is_configurable(self) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 0.0, stable_after=5.0)
        sup.should_connect(0.0)
        sup.connect_failed(0.0, "refused")
        sup.should_connect(3.0)
        sup.connected(3.0)
        sup.disconnected(8.0, "reset")
        assert sup.next_deadline() == 11.0

    def test_stop(self) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 0.0)
        sup.should_connect(0.0)
        sup.connected(0.5)
        sup.stop()
        assert (sup.status, sup.next_deadline(), sup.stopped) == ("Offline", None, True)
        assert sup.should_connect(1e9) is False
        # Reports racing with stop() are absorbed …
        sup.disconnected(1.0, "closed by stop")
        sup.connect_failed(1.0, "cancelled")
        sup.stop()
        assert (sup.status, sup.next_deadline()) == ("Offline", None)
        # … but a connection completing after stop() must be closed by the caller.
        with pytest.raises(
            LocalProtocolError, match="'connected' is not allowed in state 'Stopped'"
        ):
            sup.connected(2.0)

    def test_stop_while_offline(self) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 0.0)
        sup.stop()
        assert sup.should_connect(0.0) is False and sup.next_deadline() is None

    @pytest.mark.parametrize(
        ("setup", "call"),
        [
            ([], "connected"),
            ([], "connect_failed"),
            ([], "disconnected"),
            (["attempt"], "disconnected"),
            (["attempt", "connected"], "connected"),
            (["attempt", "connected"], "connect_failed"),
        ],
    )
    def test_illegal_transitions(self, setup: list[str], call: str) -> None:
        sup = UplinkSupervisor(fixed_backoff(), 0.0)
        for step in setup:
            if step == "attempt":
                assert sup.should_connect(0.0)
            else:
                sup.connected(0.0)
        before = sup.status
        with pytest.raises(
            LocalProtocolError, match=f"'{call}' is not allowed in state '{before}'"
        ):
            if call == "connected":
                sup.connected(1.0)
            elif call == "connect_failed":
                sup.connect_failed(1.0, "x")
            else:
                sup.disconnected(1.0, "x")
        assert sup.status == before

    def test_parallel_uplinks_do_not_reconnect_in_step(self) -> None:
        """UPL-9 / UPL-10: two devices losing the same cloud redial at different times."""
        sups = [UplinkSupervisor(ReconnectBackoff(name), 0.0) for name in ("device-A", "device-B")]
        for sup in sups:
            assert sup.should_connect(0.0)
            sup.connected(0.0)
            sup.disconnected(5.0, "cloud restarted")
        deadlines = [sup.next_deadline() for sup in sups]
        assert deadlines[0] != deadlines[1]
        assert all(d is not None and 6.0 <= d < 9.0 for d in deadlines)
