"""Annex A addressing scheme: the 20-digit device ID and the ``deviceid`` CLI.

Covers ANX-A-1 (zone: province, city, district, unit), ANX-A-2 (agency codes),
ANX-A-3 (device type codes), ANX-A-4 (network ID + serial), ANX-A-5 (the worked
example ``32010001071321008015``), and ADR-4 (the ID as remote-token prefix).
"""

from __future__ import annotations

import json

import pytest

from iec62676_2_33.cli import main
from iec62676_2_33.domain.deviceid import (
    DeviceId,
    InvalidDeviceId,
    agency_name,
    device_type_name,
    network_name,
    unit_name,
)
from iec62676_2_33.domain.tokens import RemoteToken
from iec62676_2_33.errors import ConfigurationError

EXAMPLE = "32010001071321008015"

EXAMPLE_EXPLAINED = [
    ("province", "32", "province (GB/T 2260 division 320000)"),
    ("city", "01", "city (GB/T 2260 division 320100)"),
    ("district", "00", "city level, no district (division 320100)"),
    ("unit", "01", "user-defined unit 01"),
    ("agency", "07", "agency related to traffic management"),
    ("device_type", "132", "IPC"),
    ("network", "1", "surveillance alarm network"),
    ("serial", "008015", "device serial number 008015"),
]


# --- ANX-A-5 and the shape -------------------------------------------------------------


def test_example_parses_anx_a_5() -> None:
    """ANX-A-5: 32010001 07 132 1008015 — IPC no. 15 of a metro ticket check in 320100."""
    device_id = DeviceId.parse(EXAMPLE)
    assert device_id == DeviceId(
        zone="32010001", agency="07", device_type="132", network="1", serial="008015"
    )
    assert (device_id.province, device_id.city, device_id.district, device_id.unit) == (
        "32",
        "01",
        "00",
        "01",
    )
    assert device_id.division == "320100"
    assert str(device_id) == EXAMPLE


def test_example_explains_anx_a_5() -> None:
    """ANX-A-5: every field of the example, with its meaning."""
    assert DeviceId.parse(EXAMPLE).explain() == EXAMPLE_EXPLAINED


def test_explain_district_not_zero_anx_a_1() -> None:
    """ANX-A-1: a district code other than 00 names the six-digit division."""
    rows = DeviceId.parse("32010500001110000001").explain()
    assert rows[2] == ("district", "05", "district/county (GB/T 2260 division 320105)")
    assert rows[3] == ("unit", "00", "surveillance centre")


def test_as_prefix_adr_4_anx_a_5() -> None:
    """ADR-4 / ANX-A-5: the 20 digits are the remote-token prefix of the device."""
    device_id = DeviceId.parse(EXAMPLE)
    assert device_id.as_prefix() == EXAMPLE
    token = RemoteToken.of(device_id.as_prefix(), "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b")
    assert len(token.format()) == 57


def test_build_round_trip_anx_a_1_anx_a_4() -> None:
    """ANX-A-1..4: build from fields equals parse; ints are zero-padded."""
    built = DeviceId.build("32010001", "07", "132", "1", "008015")
    assert built == DeviceId.parse(EXAMPLE)
    assert DeviceId.build(32010001, 7, 132, 1, 8015) == built
    assert DeviceId.parse(str(built)) == built


def test_invalid_device_id_is_configuration_error_anx_a_1() -> None:
    """ANX-A-1: the error type is a ConfigurationError."""
    assert issubclass(InvalidDeviceId, ConfigurationError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "3201000107132100801",
            (
                "device ID '3201000107132100801' has 19 digits, expected exactly 20 "
                "(zone 8, agency 2, type 3, network 1, serial 6)"
            ),
        ),
        (
            "320100010713210080150",
            (
                "device ID '320100010713210080150' has 21 digits, expected exactly 20 "
                "(zone 8, agency 2, type 3, network 1, serial 6)"
            ),
        ),
        (
            "",
            (
                "device ID '' has 0 digits, expected exactly 20 "
                "(zone 8, agency 2, type 3, network 1, serial 6)"
            ),
        ),
        (
            "3X010001071321008015",
            (
                "device ID '3X010001071321008015': position 2 (province) is 'X', "
                "expected an ASCII digit 0-9"
            ),
        ),
        (
            "320100010713210080 5",
            (
                "device ID '320100010713210080 5': position 19 (serial) is ' ', "
                "expected an ASCII digit 0-9"
            ),
        ),
        (
            "32010001-71321008015",
            (
                "device ID '32010001-71321008015': position 9 (agency) is '-', "
                "expected an ASCII digit 0-9"
            ),
        ),
        (
            "3201000107１321008015",  # full-width digit one: a digit, but not ASCII
            (
                "device ID '3201000107１321008015': position 11 (device_type) is '１', "
                "expected an ASCII digit 0-9"
            ),
        ),
        (
            "3201000107132A008015",
            (
                "device ID '3201000107132A008015': position 14 (network) is 'A', "
                "expected an ASCII digit 0-9"
            ),
        ),
        (
            "32010001071321008015X",
            (
                "device ID '32010001071321008015X': position 21 (beyond the 20 digits) is 'X', "
                "expected an ASCII digit 0-9"
            ),
        ),
    ],
)
def test_parse_rejections_anx_a_1_anx_a_4(text: str, message: str) -> None:
    """ANX-A-1..4: exactly 20 ASCII digits; the error names the position and field."""
    with pytest.raises(InvalidDeviceId) as info:
        DeviceId.parse(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"zone": "3201001"}, "zone must be exactly 8 ASCII digits, got '3201001'"),
        ({"agency": "7"}, "agency must be exactly 2 ASCII digits, got '7'"),
        ({"device_type": "13a"}, "device_type must be exactly 3 ASCII digits, got '13a'"),
        ({"network": "12"}, "network must be exactly 1 ASCII digit, got '12'"),
        ({"serial": "8015"}, "serial must be exactly 6 ASCII digits, got '8015'"),
        ({"serial": 1234567}, "serial 1234567 does not fit in 6 digits"),
        ({"agency": -1}, "agency -1 does not fit in 2 digits"),
        ({"network": True}, "network must be 1 ASCII digit, not a bool"),
    ],
)
def test_build_rejections_anx_a_1_anx_a_4(kwargs: dict[str, object], message: str) -> None:
    """ANX-A-1..4: every field's width and digits are checked."""
    fields: dict[str, object] = {
        "zone": "32010001",
        "agency": "07",
        "device_type": "132",
        "network": "1",
        "serial": "008015",
    }
    fields.update(kwargs)
    with pytest.raises(InvalidDeviceId) as info:
        DeviceId.build(**fields)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_constructor_checks_widths_anx_a_1() -> None:
    """ANX-A-1: a DeviceId cannot be built with a wrong-width field."""
    with pytest.raises(InvalidDeviceId, match="zone must be exactly 8 ASCII digits"):
        DeviceId(zone="3201", agency="07", device_type="132", network="1", serial="008015")


# --- ANX-A-1: unit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("00", "surveillance centre"),
        ("01", "user-defined unit 01"),
        ("42", "user-defined unit 42"),
        ("99", "user-defined unit 99"),
        (5, "user-defined unit 05"),
    ],
)
def test_unit_name_anx_a_1(code: str | int, name: str) -> None:
    """ANX-A-1: unit 00 = surveillance centre, 01.. user-defined."""
    assert unit_name(code) == name


# --- ANX-A-2: agency --------------------------------------------------------------------

AGENCY_EXACT = [
    ("00", "urban roadway"),
    ("01", "society community"),
    ("02", "social security agency"),
    ("03", "other security agencies"),
    ("04", "traffic roadway"),
    ("05", "traffic checkpoints"),
    ("06", "traffic management agency"),
    ("07", "agency related to traffic management"),
    ("08", "city management"),
    ("09", "health & environmental management"),
    ("10", "commodity inspection & customs"),
    ("11", "education"),
    ("40", "farming/forestry/husbandry/fishery"),
    ("41", "mining"),
    ("42", "manufacturing"),
    ("43", "metallurgy"),
    ("44", "electric power"),
    ("45", "gas"),
    ("46", "construction"),
    ("47", "logistics"),
    ("48", "postal services"),
    ("49", "IT"),
    ("50", "hotels & catering"),
    ("51", "financing"),
    ("52", "real estate"),
    ("53", "commercial services"),
    ("54", "water resources enterprises"),
    ("55", "entertainment"),
]

AGENCY_RANGES = [
    (12, 39, "reserved (government subjects)"),
    (56, 79, "reserved (enterprises)"),
    (80, 89, "dwellers building (reserved)"),
    (90, 99, "other entities (reserved)"),
]


@pytest.mark.parametrize(("code", "name"), AGENCY_EXACT)
def test_agency_exact_codes_anx_a_2(code: str, name: str) -> None:
    """ANX-A-2: every agency code with a name of its own."""
    assert agency_name(code) == name
    assert agency_name(int(code)) == name


@pytest.mark.parametrize(
    ("code", "name"),
    [(f"{c:02d}", n) for lo, hi, n in AGENCY_RANGES for c in sorted({lo, (lo + hi) // 2, hi})],
)
def test_agency_reserved_ranges_anx_a_2(code: str, name: str) -> None:
    """ANX-A-2: the reserved ranges (both ends and the middle) are recognised as such."""
    assert agency_name(code) == name


def test_agency_table_is_total_anx_a_2() -> None:
    """ANX-A-2: every code 00..99 has a description; none is undefined."""
    assert all(agency_name(c) != "undefined" for c in range(100))


def test_agency_rejects_bad_width_anx_a_2() -> None:
    """ANX-A-2: an agency code is two digits."""
    with pytest.raises(InvalidDeviceId, match="agency must be exactly 2 ASCII digits"):
        agency_name("7")
    with pytest.raises(InvalidDeviceId, match="agency 100 does not fit in 2 digits"):
        agency_name(100)


# --- ANX-A-3: device type ---------------------------------------------------------------

TYPE_EXACT = [
    ("111", "DVR"),
    ("112", "video server"),
    ("113", "encoder"),
    ("114", "decoder"),
    ("115", "video switching matrix"),
    ("116", "audio switching matrix"),
    ("117", "alarm controller"),
    ("118", "NVR"),
    ("119", "online information acquisition device"),
    ("120", "online information acquisition system"),
    ("121", "roadway checkpoint (front-end device)"),
    ("130", "HVR"),
    ("131", "camera"),
    ("132", "IPC"),
    ("133", "display encoding"),
    ("134", "alarm input device"),
    ("135", "alarm output device"),
    ("136", "audio input"),
    ("137", "audio output"),
    ("138", "mobile transmission device"),
    ("139", "other peripheral"),
    ("200", "central signalling control server"),
    ("201", "web application server"),
    ("202", "media distribution server"),
    ("203", "proxy server"),
    ("204", "security server"),
    ("205", "alarm server"),
    ("206", "database server"),
    ("207", "GIS server"),
    ("208", "management server"),
    ("209", "access gateway"),
    ("210", "media storage server"),
    ("215", "traffic grouping"),
    ("216", "virtual grouping"),
    ("300", "central user"),
    ("400", "terminal user"),
    ("500", "signalling server of video/image application platform"),
    ("501", "signalling server of maintenance platform"),
    ("502", "video/image analysis device/system"),
    ("503", "video/image information database"),
    ("504", "video/image information platform"),
]

TYPE_RANGES = [
    (122, 129, "extended front-end devices"),
    (140, 149, "extended peripherals"),
    (211, 214, "extended platform devices"),
    (217, 299, "extended platform devices"),
    (301, 343, "industrial role users (central)"),
    (344, 399, "extended (central users)"),
    (401, 443, "industrial role users (terminal)"),
    (444, 499, "extended (terminal users)"),
    (505, 599, "extended external platform servers"),
    (600, 699, "extended types"),
]

TYPE_UNDEFINED = [0, 1, 99, 100, 110, 150, 175, 199, 700, 850, 999]


@pytest.mark.parametrize(("code", "name"), TYPE_EXACT)
def test_device_type_exact_codes_anx_a_3(code: str, name: str) -> None:
    """ANX-A-3: every device type with a name of its own (121 also in the extended range)."""
    assert device_type_name(code) == name
    assert device_type_name(int(code)) == name


@pytest.mark.parametrize(
    ("code", "name"),
    [(f"{c:03d}", n) for lo, hi, n in TYPE_RANGES for c in sorted({lo, (lo + hi) // 2, hi})],
)
def test_device_type_ranges_anx_a_3(code: str, name: str) -> None:
    """ANX-A-3: the extended and role-user ranges (both ends and the middle)."""
    assert device_type_name(code) == name


@pytest.mark.parametrize("code", TYPE_UNDEFINED)
def test_device_type_undefined_anx_a_3(code: int) -> None:
    """ANX-A-3: codes outside every range are undefined."""
    assert device_type_name(f"{code:03d}") == "undefined"


def test_device_type_table_partition_anx_a_3() -> None:
    """ANX-A-3: exactly 000..110, 150..199 and 700..999 are undefined."""
    undefined = {c for c in range(1000) if device_type_name(c) == "undefined"}
    assert undefined == set(range(111)) | set(range(150, 200)) | set(range(700, 1000))


# --- ANX-A-4: network -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("0", "surveillance alarm network"),
        ("1", "surveillance alarm network"),
        ("2", "surveillance alarm network"),
        ("3", "surveillance alarm network"),
        ("4", "surveillance alarm network"),
        ("5", "public security network"),
        ("6", "government network"),
        ("7", "internet"),
        ("8", "reserved"),
        ("9", "reserved"),
    ],
)
def test_network_names_anx_a_4(code: str, name: str) -> None:
    """ANX-A-4: network ID 0-4 surveillance alarm, 5 public security, 6 government, 7 internet."""
    assert network_name(code) == name
    assert network_name(int(code)) == name


# --- CLI --------------------------------------------------------------------------------


def test_cli_explain_table_anx_a_5(capsys: pytest.CaptureFixture[str]) -> None:
    """ANX-A-5: ``deviceid explain`` prints an aligned table."""
    assert main(["deviceid", "explain", EXAMPLE]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        "device ID 32010001071321008015\n"
        "field        digits  meaning\n"
        "province     32      province (GB/T 2260 division 320000)\n"
        "city         01      city (GB/T 2260 division 320100)\n"
        "district     00      city level, no district (division 320100)\n"
        "unit         01      user-defined unit 01\n"
        "agency       07      agency related to traffic management\n"
        "device_type  132     IPC\n"
        "network      1       surveillance alarm network\n"
        "serial       008015  device serial number 008015\n"
    )


def test_cli_explain_json_anx_a_5(capsys: pytest.CaptureFixture[str]) -> None:
    """ANX-A-5: ``deviceid explain --format json`` prints the same rows as JSON."""
    assert main(["deviceid", "explain", EXAMPLE, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == {
        "device_id": EXAMPLE,
        "fields": [{"field": f, "digits": d, "meaning": m} for f, d, m in EXAMPLE_EXPLAINED],
    }


def test_cli_new_anx_a_5(capsys: pytest.CaptureFixture[str]) -> None:
    """ANX-A-5: ``deviceid new`` assembles the example."""
    argv = [
        "deviceid",
        "new",
        "--zone",
        "32010001",
        "--agency",
        "07",
        "--type",
        "132",
        "--network",
        "1",
        "--serial",
        "008015",
    ]
    assert main(argv) == 0
    assert capsys.readouterr() == (EXAMPLE + "\n", "")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["deviceid", "explain", "3201000107132100801X"],
            (
                "iec62676: error: device ID '3201000107132100801X': position 20 (serial) is 'X', "
                "expected an ASCII digit 0-9"
            ),
        ),
        (
            ["deviceid", "explain", "123"],
            (
                "iec62676: error: device ID '123' has 3 digits, expected exactly 20 "
                "(zone 8, agency 2, type 3, network 1, serial 6)"
            ),
        ),
        (
            [
                "deviceid",
                "new",
                "--zone",
                "32010001",
                "--agency",
                "7",
                "--type",
                "132",
                "--network",
                "1",
                "--serial",
                "008015",
            ],
            "iec62676: error: agency must be exactly 2 ASCII digits, got '7'",
        ),
    ],
)
def test_cli_errors_one_line_exit_2_anx_a_1(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ANX-A-1..4: invalid input is one line on stderr and exit status 2."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == line + "\n"


def test_cli_usage_errors_exit_2_anx_a_1(capsys: pytest.CaptureFixture[str]) -> None:
    """ANX-A-1: a missing sub-command or a bad --format is a usage error, exit 2."""
    for argv in (["deviceid"], ["deviceid", "explain", EXAMPLE, "--format", "xml"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("iec62676: error: ")
        assert err.count("\n") == 1
