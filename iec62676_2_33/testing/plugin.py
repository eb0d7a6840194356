"""The pytest plugin of the library (``pytest11`` entry point ``iec62676``): the fixtures that
:mod:`iec62676_2_33.testing` lists (TEST-1, UPL-1, UPL-16, RQ-2).

Every fixture is function-scoped, runs its parts on loopback, and stops them
when the test ends, passed or failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def uplink_pki(tmp_path: Path) -> Any:
    """A CA, the cloud's server certificate and device certificates (:class:`~.harness.UplinkPki`)."""
    from .harness import UplinkPki

    return UplinkPki(tmp_path / "uplink-pki")


@pytest.fixture
def cloud(uplink_pki: Any) -> Iterator[Any]:
    """Our cloud on loopback (:class:`~.harness.RunningCloud`): device list, ``request()``, zeep transports."""
    from .harness import RunningCloud

    running = RunningCloud(uplink_pki)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Any]:
    """Our device on loopback with a data folder and an administrator (:class:`~.harness.RunningDevice`)."""
    from .harness import RunningDevice, seed_device

    data = tmp_path / "device"
    seed_device(data)
    running = RunningDevice(data)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def uplinked_device(tmp_path: Path, uplink_pki: Any, cloud: Any) -> Iterator[Any]:
    """A device whose uplink (UserLevel Administrator, mTLS as ``device-1``) to ``cloud`` is up."""
    from .harness import RunningDevice, Uplinked, seed_device

    data = tmp_path / "uplinked-device"
    seed_device(data, uplinks=[(cloud.uplink_url(), ("Administrator",))], certs=uplink_pki, cn="device-1")
    running = RunningDevice(data)
    try:
        cloud.wait_for("device-1")
        yield Uplinked(running, cloud, "device-1")
    finally:
        running.stop()


@pytest.fixture
def resource_registry(tmp_path: Path) -> Iterator[Any]:
    """A resource registry holding 100 deterministic sample resources around a city centre."""
    from ..domain.registry import ResourceRegistry
    from .sampledata import generate

    registry = ResourceRegistry(tmp_path / "resources.sqlite")
    try:
        registry.upsert_many(generate(100))
        yield registry
    finally:
        registry.close()


@pytest.fixture
def conformance() -> Callable[..., Any]:
    """``conformance(dut, username, password, only=[...], **target_options)`` runs conformance cases against
    the device service ``dut`` and returns the :class:`~iec62676_2_33.conformance.Report`."""
    def run_conformance(dut: str, username: str, password: str, *, only: list[str] | tuple[str, ...] = (),
                        skip_long: bool = True, **options: Any) -> Any:
        from ..conformance import DEVICE_CASES, DeviceSession, DeviceTarget, run

        target = DeviceTarget(dut=dut, username=username, password=password, **options)
        with DeviceSession(target) as session:
            return run(DEVICE_CASES, session, target=dut, only=only, skip_long=skip_long)

    return run_conformance
