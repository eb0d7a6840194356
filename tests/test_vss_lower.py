"""GEN-1, ADR-4: the routes a VSS learns for prefixes of devices further down — one lower system per prefix
(the first that announced it), a bound on their number, and changes by another process seen at once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from iec62676_2_33.vss import lower as lower_module
from iec62676_2_33.vss.lower import LowerStore, LowerSystem


def _store(path: Path) -> LowerStore:
    store = LowerStore(path)
    for prefix in ("siteA", "siteB"):
        store.put(LowerSystem(prefix=prefix, url=f"http://{prefix}.example/onvif/device_service"))
    return store


def test_a_lower_system_cannot_take_over_another_ones_prefix_gen_1_adr_4(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """GEN-1, ADR-4: siteB announcing a device prefix siteA announced first leaves it routed to siteA (logged);
    a configured prefix is never learnt; after siteA is removed the prefix is free for siteB."""
    with _store(tmp_path) as store:
        store.learn("siteA", ["cam1", "cam2"])
        with caplog.at_level(logging.WARNING, logger=lower_module.__name__):
            store.learn("siteB", ["cam1", "cam3", "siteA"])
        assert store.routes() == {"cam1": "siteA", "cam2": "siteA", "cam3": "siteB"}
        assert "cam1" in caplog.text
        store.remove("siteA")
        store.learn("siteB", ["cam1"])
        assert store.routes() == {"cam1": "siteB", "cam3": "siteB"}


def test_routes_are_bounded_and_another_process_is_seen_gen_1(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """GEN-1: at most MAX_ROUTES prefixes are routed; a lower system removed by another process (the CLI)
    takes its routes along in this process's view at once."""
    monkeypatch.setattr(lower_module, "MAX_ROUTES", 3)
    with _store(tmp_path) as store:
        store.learn("siteA", [f"cam{i}" for i in range(10)])
        assert len(store.routes()) == 3
        store.learn("siteB", ["other"])
        assert "other" not in store.routes()
        with LowerStore(tmp_path) as cli:
            assert cli.remove("siteA")
        assert store.routes() == {}
