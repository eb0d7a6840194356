"""Conformance of an uplink device, in a vendor's own CI (uses the library's pytest fixtures)."""

from __future__ import annotations

import os
from typing import Any

from iec62676_2_33.client import UplinkClient
from iec62676_2_33.conformance import Verdict

#: The quick cases; add "EXT-SILENCE", "EXT-BACKOFF" and "EXT-SHARED-BACKOFF" for the long ones (minutes).
CASES = ["UPLINK-1-1-1", "UPLINK-3-1-1", "UPLINK-4-1-1", "EXT-UPGRADE", "EXT-PREFACE", "EXT-PING",
         "EXT-USERLEVEL", "EXT-FAULTS", "EXT-STATUS", "EXT-CLOUD-CERT", "EXT-HOSTILE", "EXT-TOKEN"]


def test_device_conformance(conformance: Any, device: Any, tmp_path: Any) -> None:
    """The device under test (yours from DUT_URL, else the library's own) passes the conformance cases."""
    dut = os.environ.get("DUT_URL", device.device_service)
    user = os.environ.get("DUT_USER", device.username)
    password = os.environ.get("DUT_PASSWORD", device.password)
    report = conformance(dut, user, password, only=CASES, listen=os.environ.get("DUT_LISTEN", "127.0.0.1:0"))
    failures = [f"{r.case.id}: {r.message}" for r in report.results if r.verdict is Verdict.FAIL]
    assert report.passed, "\n".join(failures)
    assert {r.case.id for r in report.results} == set(CASES)


def test_call_through_the_uplink(uplinked_device: Any) -> None:
    """A cloud calls the device's uplink service through the uplink with the stock zeep client."""
    client = UplinkClient("http://device/onvif/uplink_service", transport=uplinked_device.transport())
    (uplink,) = client.get_uplinks()
    assert uplink.status == "Connected"
    assert uplinked_device.cloud.devices()[0].device_id == uplinked_device.device_id


def test_sample_resources(resource_registry: Any) -> None:
    """The sample resource registry answers queries (e.g. for a resource-query client under test)."""
    assert resource_registry.count() == 100
