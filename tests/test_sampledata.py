"""RQ-2, RQ-3, ADR-2, ADR-4, ANX-A-5: the deterministic sample-resource generator and the committed
example made by it — Annex A device IDs as token prefixes, locations around a city centre."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import pytest

from iec62676_2_33.domain.deviceid import DeviceId
from iec62676_2_33.domain.filters import LocationFilter, ResourceQuery, great_circle_distance
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import RESOURCE_KINDS, Resource
from iec62676_2_33.domain.tokens import RemoteToken
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.testing import sampledata
from iec62676_2_33.testing.sampledata import NANJING, generate, write_jsonl

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "resources-city.jsonl"


def test_committed_example_is_the_generator_output_rq_3() -> None:
    """RQ-3: examples/resources-city.jsonl is exactly what the generator writes with its defaults."""
    out = io.StringIO()
    assert write_jsonl(out, 300) == 300
    assert out.getvalue() == EXAMPLE.read_text(encoding="utf-8")


def test_deterministic_and_prefix_stable_rq_2() -> None:
    """RQ-2: the same seed gives the same resources; a shorter run is a prefix of a longer one;
    another seed gives other resources."""
    long = list(generate(1000))
    assert list(generate(1000)) == long
    assert list(generate(37)) == long[:37]
    assert list(generate(0)) == []
    assert list(generate(1000, seed=1)) != long


def test_exact_count_kinds_and_layout_rq_2_rq_3() -> None:
    """RQ-2, RQ-3: exactly ``count`` resources of standard kinds: per camera a VideoSource, two
    MediaProfiles and a Recording, every fifth camera also a PTZConfiguration."""
    resources = list(generate(1001))
    assert len(resources) == 1001
    assert {r.kind for r in resources} == {"VideoSource", "MediaProfile", "Recording", "PTZConfiguration"}
    assert {r.kind for r in resources} <= set(RESOURCE_KINDS)
    assert len({r.token for r in resources}) == 1001
    by_device: dict[str, list[Resource]] = defaultdict(list)
    for r in resources:
        by_device[RemoteToken.parse(r.token).prefix].append(r)
    for prefix, items in list(by_device.items())[:-1]:  # the last device may be cut off at the count
        serial = int(DeviceId.parse(prefix).serial)
        expected = ["VideoSource_1", "Profile_1", "Profile_2", "Recording_1"] + (["PTZ_1"] if serial % 5 == 0 else [])
        assert [RemoteToken.parse(r.token).local for r in items] == expected


def test_prefixes_are_annex_a_device_ids_anx_a_5_adr_4() -> None:
    """ANX-A-5, ADR-4: every prefix is a 20-digit Annex A ID in city 320100 (IPC, network 1), one per
    device, shared by all its resources together with location, scopes and online state."""
    resources = list(generate(2000))
    by_device: dict[str, list[Resource]] = defaultdict(list)
    for r in resources:
        token = RemoteToken.parse(r.token)
        assert len(r.token) <= 64 and len(token.local) <= 36
        by_device[token.prefix].append(r)
    for serial, (prefix, items) in enumerate(by_device.items(), start=1):
        device = DeviceId.parse(prefix)
        assert (device.province, device.city, device.device_type, device.network) == ("32", "01", "132", "1")
        assert device.serial == f"{serial:06d}"
        assert device.unit in ("01", "02", "03", "04")
        if serial <= 8:  # the central station, like the ANX-A-5 metro example: city level, agency 07
            assert (device.district, device.agency) == ("00", "07")
        else:
            assert device.division in {d.code for d in NANJING.districts}
            assert device.agency in ("00", "01", "04", "08", "11")
        assert len({(r.location, r.scopes, r.offline) for r in items}) == 1
    assert str(DeviceId.parse(resources[0].token.split(":")[0])) == "32010003071321000001"


def test_locations_around_the_centre_rq_3() -> None:
    """RQ-3: locations lie within the radius (station cameras within 60 m), each district in its
    quadrant; some devices have no location, a few are offline; elevation above the ground."""
    resources = list(generate(4000))
    located = [r for r in resources if r.location is not None]
    unknown = [r for r in resources if r.location is None]
    assert 0 < len(unknown) < 0.15 * len(resources)
    assert 0 < sum(1 for r in resources if r.offline) < 0.1 * len(resources)
    assert all(r.offline is not None for r in resources)
    for r in located:
        loc = r.location
        assert loc is not None and loc.elevation is not None
        distance = great_circle_distance(NANJING.lon, NANJING.lat, loc.lon, loc.lat)
        assert distance <= 5000.05
        assert NANJING.elevation + 3 <= loc.elevation <= NANJING.elevation + 12
        place = r.scopes[1]
        if place.endswith("/building/central-station"):
            assert distance <= 60.05
            continue
        north, east = loc.lat >= NANJING.lat, loc.lon >= NANJING.lon
        expected = {(True, True): "xuanwu", (False, True): "qinhuai", (False, False): "jianye",
                    (True, False): "gulou"}[(north, east)]
        assert place == f"onvif://www.onvif.org/location/district/{expected}"
    for r in resources:
        assert r.scopes[0] == "onvif://www.onvif.org/location/city/nanjing"
        assert r.scopes[2] in ("onvif://www.onvif.org/hardware/IPC", "onvif://www.onvif.org/hardware/PTZ-IPC")


def test_fractions_and_station_options_rq_3() -> None:
    """RQ-3: unknown_fraction / offline_fraction 0 and 1 and the station size behave as documented."""
    none_unknown = list(generate(400, unknown_fraction=0.0, offline_fraction=0.0))
    assert all(r.location is not None and r.offline is False for r in none_unknown)
    all_unknown = list(generate(400, unknown_fraction=1.0, offline_fraction=1.0, station_devices=2))
    station = {f"{prefix}" for prefix in {r.token.split(":")[0] for r in all_unknown}
               if DeviceId.parse(prefix).agency == "07"}
    assert len(station) == 2
    for r in all_unknown:
        at_station = r.token.split(":")[0] in station
        assert (r.location is not None, r.offline) == (at_station, not at_station)


def test_registry_query_finds_the_station_within_100_m_rq_3() -> None:
    """RQ-3 (with RQ-6 of the registry): a 100 m query around the centre finds the 33 station resources."""
    with ResourceRegistry(":memory:") as registry:
        registry.upsert_many(generate(300))
        found = registry.query(ResourceQuery(location=LocationFilter(NANJING.lon, NANJING.lat, 100.0)), limit=1000)
    assert len(found) == 33
    assert {DeviceId.parse(r.token.split(":")[0]).agency for r in found} == {"07"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"count": -1}, "count must be an integer >= 0, got -1"),
    ({"count": True}, "count must be an integer >= 0, got True"),
    ({"count": 4_000_000}, ("count 4000000 is too large: at most 999999 devices (3999996 resources) fit the "
                            "six-digit serial")),
    ({"count": 1, "city": "atlantis"}, "unknown city 'atlantis'; built in: nanjing"),
    ({"count": 1, "radius_m": 0}, "radius_m must be a number of metres in (0, 100000], got 0"),
    ({"count": 1, "unknown_fraction": 1.5}, "unknown_fraction must be a number from 0 to 1, got 1.5"),
    ({"count": 1, "offline_fraction": -0.1}, "offline_fraction must be a number from 0 to 1, got -0.1"),
    ({"count": 1, "station_devices": -2}, "station_devices must be an integer >= 0, got -2"),
    ({"count": 1, "station_radius_m": 9000}, ("station_radius_m must be a number of metres in (0, radius_m], "
                                              "got 9000")),
])
def test_bad_options_raise_clear_errors_rq_3(kwargs: dict, message: str) -> None:
    """RQ-3: bad options raise ConfigurationError at the call, saying what is wrong."""
    count = kwargs.pop("count")
    with pytest.raises(ConfigurationError) as err:
        generate(count, **kwargs)
    assert str(err.value) == message


def test_module_command_line_rq_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """RQ-3: ``python -m iec62676_2_33.testing.sampledata`` writes JSON Lines to stdout or a file; errors exit 2."""
    assert sampledata.main(["--count", "3"]) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [r.to_json() for r in generate(3)]
    target = tmp_path / "r.jsonl"
    assert sampledata.main(["--count", "5", "--seed", "7", "--out", str(target)]) == 0
    assert [Resource.from_json(json.loads(line)) for line in target.read_text().splitlines()] == list(
        generate(5, seed=7))
    assert sampledata.main(["--count", "-3"]) == 2
    _, err = capsys.readouterr()
    assert err == "iec62676: error: count must be an integer >= 0, got -3\n"
