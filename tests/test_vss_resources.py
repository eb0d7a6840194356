"""GEN-1, RQ-5, RQ-6, RQ-7, RQ-4, ANX-B-4: resource queries at an upper VSS answer over the union of its own
resources and those of its lower system (mirrored into its registry), with the Location and Prefix
filters; the lower system's changes reach the VSS's pull points; all of the lower system's resources go
Offline when it stops and come back when it returns.

Real servers on loopback (``run_device`` below ``run_vss``); the lower's registry is changed from the
test, as another process would; every wait is bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from vss_env import FAR, HERE, NEAR, add_lower, seed, start_device, start_vss

from iec62676_2_33.domain.filters import LocationFilter
from iec62676_2_33.domain.registry import REGISTRY_FILE, ResourceRegistry
from iec62676_2_33.domain.resources import Resource
from iec62676_2_33.query import ResourceChange, ResourceQueryClient
from iec62676_2_33.runtime.background import BackgroundService
from iec62676_2_33.testing.harness import wait_until
from iec62676_2_33.vss.lower import LowerStore, LowerSystem
from iec62676_2_33.vss.runtime import VssOptions

GATE = Resource("gate:main", "MediaProfile", name="Gate", location=NEAR)
YARD = Resource("gate:yard", "VideoSource", name="Yard", location=FAR)
LOBBY = Resource("hq:lobby", "MediaProfile", name="Lobby", location=HERE)
WITHIN_100M = LocationFilter(HERE.lon, HERE.lat, 100.0)


@dataclass
class Env:
    vss: str
    lower_data: Path
    lower_port: int
    device: BackgroundService

    def client(self) -> ResourceQueryClient:
        return ResourceQueryClient(f"{self.vss}/onvif/event_service", username="admin", password="admin-pw",
                                   pull_timeout=1.0)

    def tokens(self, **filters: object) -> set[str]:
        with self.client().subscribe(**filters) as subscription:  # type: ignore[arg-type]
            return {r.token for r in subscription.resources()}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    seed(tmp_path / "cam", resources=(GATE, YARD))
    device, lower = start_device(tmp_path / "cam")
    seed(tmp_path / "vss", resources=(LOBBY,))
    add_lower(tmp_path / "vss", LowerSystem(prefix="gate", url=f"{lower}/onvif/device_service",
                                            username="admin", password="admin-pw"))
    vss, base = start_vss(tmp_path / "vss", VssOptions(timeout=3, mirror_retry=0.3))
    env = Env(base, tmp_path / "cam", int(lower.rsplit(":", 1)[1]), device)
    try:
        wait_until(lambda: {"gate:main", "gate:yard"} <= env.tokens(), 20, what="the lower system's resources")
        yield env
    finally:
        vss.stop()
        env.device.stop()


def changes_until(subscription: object, wanted: object, timeout: float = 20.0) -> list[ResourceChange]:
    """Pull until a change satisfies ``wanted``; every change seen (bounded)."""
    seen: list[ResourceChange] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.extend(subscription.pull())  # type: ignore[attr-defined]
        if any(wanted(c) for c in seen):  # type: ignore[operator]
            return seen
    raise AssertionError(f"no such change within {timeout} s: {seen}")


def test_union_with_location_and_prefix_filters(env: Env) -> None:
    """RQ-6, RQ-7, GEN-1: within 100 m are the VSS's own lobby and the lower's gate camera, not the yard;
    the Prefix filter keeps to the lower system."""
    assert env.tokens() == {"hq:lobby", "gate:main", "gate:yard"}
    assert env.tokens(location=WITHIN_100M) == {"hq:lobby", "gate:main"}
    assert env.tokens(prefix="gate") == {"gate:main", "gate:yard"}
    assert env.tokens(prefix="hq") == {"hq:lobby"}


def test_removed_lower_system_leaves_the_union(env: Env, tmp_path: Path) -> None:
    """GEN-1: ``vss lower remove`` on a running VSS takes the lower system's resources out of its answers."""
    with LowerStore(tmp_path / "vss") as store:
        assert store.remove("gate")
    wait_until(lambda: env.tokens() == {"hq:lobby"}, 20, what="the lower system's resources gone")


def test_changes_and_offline_are_forwarded(env: Env) -> None:
    """RQ-4, ANX-B-4: a change at the lower system reaches a pull point of the VSS; when the lower system
    stops every one of its resources is Changed to Offline, and back online when it returns."""
    with env.client().subscribe(prefix="gate") as subscription:
        assert {r.token for r in subscription.resources()} == {"gate:main", "gate:yard"}
        with ResourceRegistry(env.lower_data / REGISTRY_FILE) as registry:
            registry.upsert(replace(GATE, name="Gate (north)"))
        changes_until(subscription, lambda c: c.resource.token == "gate:main" and c.resource.name == "Gate (north)")

        env.device.stop()
        seen = changes_until(subscription, lambda c: c.resource.token == "gate:yard" and c.resource.offline)
        offline = {c.resource.token for c in seen if c.operation == "Changed" and c.resource.offline}
        wait_until(lambda: offline.update(c.resource.token for c in subscription.pull() if c.resource.offline)
                   or offline >= {"gate:main", "gate:yard"}, 20, what="both resources offline")

        env.device, _ = start_device(env.lower_data, env.lower_port)
        back: set[str] = set()
        wait_until(lambda: back.update(c.resource.token for c in subscription.pull() if c.resource.offline is False)
                   or back >= {"gate:main", "gate:yard"}, 20, what="both resources online again")
