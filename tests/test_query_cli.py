"""RQ-5 … RQ-10: ``iec62676 query`` against a running device — the list, JSON output, --follow, and errors."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator

import pytest
from conftest import ADMIN, RunningDevice

from iec62676_2_33.cli import main
from iec62676_2_33.cli.query import run_query
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import GeoLocation, Resource


@pytest.fixture
def registry(device: RunningDevice) -> Iterator[ResourceRegistry]:
    with ResourceRegistry(device.data / "resources.db") as reg:
        reg.upsert_many([
            Resource("dev7:p1", "MediaProfile", "Gate", GeoLocation(8.6821, 50.1109, 112.0),
                     ("onvif://www.onvif.org/location/city/frankfurt",), False),
            Resource("dev7:p2", "MediaProfile", "Far", GeoLocation(9.0, 50.5)),
            Resource("dev8:p1", "MediaProfile", "Other device"),
        ])
        yield reg


def args(device: RunningDevice, *extra: str) -> list[str]:
    return ["query", "--url", device.base, "--user", ADMIN[0], "--password", ADMIN[1], "--topic", "MediaProfile",
            *extra]


def test_query_near_prints_table_rq_5_rq_6(device: RunningDevice, registry: ResourceRegistry,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """RQ-5, RQ-6: --near/--radius lists the resources within the circle as a table."""
    assert main(args(device, "--near", "50.1109,8.6821", "--radius", "100")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "token\tkind\tname\tlat,lon[,elevation]\tstate\tscopes"
    assert out[1:] == [("dev7:p1\tMediaProfile\tGate\t50.110900,8.682100,112\tonline\t"
                       "onvif://www.onvif.org/location/city/frankfurt"), "# 1 resource(s)"]


def test_query_json_prefix_select_include_unknown_rq_6_rq_7_rq_9(
        device: RunningDevice, registry: ResourceRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    """RQ-6, RQ-7, RQ-9: --include-unknown, --prefix and --select with JSON lines."""
    assert main(args(device, "--near", "50.1109,8.6821", "--radius", "10", "--include-unknown",
                     "--select", "/Name", "--format", "json")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"token": "dev7:p1", "kind": "MediaProfile", "name": "Gate"},
                     {"token": "dev8:p1", "kind": "MediaProfile", "name": "Other device"}]
    assert main(args(device, "--prefix", "dev7", "--format", "json")) == 0
    assert [json.loads(x)["token"] for x in capsys.readouterr().out.splitlines()] == ["dev7:p1", "dev7:p2"]


class _Stop(Exception):
    pass


class _Script(io.StringIO):
    """Output stream that makes a change once the list is printed and stops at the first change line."""

    def __init__(self, registry: ResourceRegistry) -> None:
        super().__init__()
        self.registry = registry
        self.following = False

    def write(self, text: str) -> int:
        n = super().write(text)
        if self.following:
            raise _Stop
        if text.startswith("# "):
            self.following = True
            self.registry.set_prefix_offline("dev7", True)
        return n


def test_query_follow_prints_live_changes_rq_4_rq_10(device: RunningDevice, registry: ResourceRegistry) -> None:
    """RQ-4, RQ-10: --follow prints the changes that arrive after the list (here: dev7 goes offline)."""
    ns = argparse.Namespace(url=device.base, user=ADMIN[0], password=ADMIN[1], topic=["MediaProfile"], near=None,
                            radius=None, height=None, include_unknown=False, prefix="dev7", scope=[], select=[],
                            follow=True, format="table", timeout=20.0)
    out = _Script(registry)
    with pytest.raises(_Stop):
        run_query(ns, out)
    lines = out.getvalue().splitlines()
    assert lines[-2] == "# 2 resource(s)"
    assert lines[-1].startswith("Changed\tdev7:p1\tMediaProfile\tGate\t")
    assert lines[-1].split("\t")[5] == "offline"


@pytest.mark.parametrize(("extra", "message"), [
    (("--radius", "10"), "--radius, --height and --include-unknown need --near"),
    (("--near", "50.1,8.6"), "--near needs --radius"),
    (("--near", "north", "--radius", "5"), "expected LAT,LON"),
    (("--near", "95,8", "--radius", "5"), "lat must be within -90..90"),
])
def test_query_argument_errors_rq_6(device: RunningDevice, extra: tuple[str, ...], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """RQ-6: a malformed location filter is one line on stderr and exit status 2."""
    assert main(args(device, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_query_refused_without_credentials_sec_1(device: RunningDevice, capsys: pytest.CaptureFixture[str]) -> None:
    """SEC-1: CreatePullPointSubscription is READ_MEDIA: anonymous queries are refused with a clear error."""
    assert main(["query", "--url", device.base, "--topic", "MediaProfile"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iec62676: error: env:Sender/ter:NotAuthorized: ") and err.count("\n") == 1
