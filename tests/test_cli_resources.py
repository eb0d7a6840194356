"""RQ-2, RQ-3, RQ-4, ADR-4: ``iec62676 device resources load / list / remove`` — the registry at
``<data>/resources.db``, all-or-nothing loads with line-numbered errors, exact output and exit
status 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import one_line_error, run

from iec62676_2_33.cli.resources import REGISTRY_FILE, format_row
from iec62676_2_33.domain.registry import ResourceRegistry
from iec62676_2_33.domain.resources import RESOURCE_KINDS, GeoLocation, Resource

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "resources-city.jsonl"
FIRST = "32010003071321000001"






def example_lines(prefix: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in EXAMPLE.read_text(encoding="utf-8").splitlines()]
    return sorted((r for r in rows if prefix is None or r["token"].startswith(prefix + ":")),
                  key=lambda r: r["token"])


def test_load_list_remove_example_rq_2_rq_3_rq_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """RQ-2, RQ-3, RQ-4: the example loads (Initialized events), reloads as a no-op, lists and removes."""
    data = str(tmp_path / "dev")
    code, out, err = run(capsys, "device", "resources", "load", "--data", data, str(EXAMPLE))
    assert (code, out, err) == (0, f"{EXAMPLE}: 300 added, 0 changed; 300 resource(s) in the registry\n", "")
    assert (tmp_path / "dev" / REGISTRY_FILE).is_file()
    code, out, _ = run(capsys, "device", "resources", "load", "--data", data, str(EXAMPLE))
    assert (code, out) == (0, f"{EXAMPLE}: 0 added, 0 changed; 300 resource(s) in the registry\n")

    code, out, _ = run(capsys, "device", "resources", "list", "--data", data, "--format", "json")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == example_lines()

    code, out, _ = run(capsys, "device", "resources", "remove", "--data", data, "--token", f"{FIRST}:Profile_2")
    assert (code, out) == (0, f"resource {FIRST}:Profile_2 removed\n")
    with ResourceRegistry(tmp_path / "dev" / REGISTRY_FILE) as registry:
        assert registry.count() == 299
        events = registry.changes_since(0, limit=1000)
    assert [e.operation for e in events] == ["Initialized"] * 300 + ["Deleted"]
    assert (events[-1].resource.token, events[-1].resource.kind) == (f"{FIRST}:Profile_2", "MediaProfile")


def test_list_table_by_prefix_adr_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """ADR-4: --prefix lists exactly the resources of one device, ordered by token, one tab-separated row each."""
    data = str(tmp_path / "dev")
    run(capsys, "device", "resources", "load", "--data", data, str(EXAMPLE))
    code, out, err = run(capsys, "device", "resources", "list", "--data", data, "--prefix", FIRST)
    assert (code, err) == (0, "")
    scopes = ("onvif://www.onvif.org/location/city/nanjing onvif://www.onvif.org/location/building/central-station "
              "onvif://www.onvif.org/hardware/IPC onvif://www.onvif.org/name/Camera-000001")
    where = "32.0605818,118.7973996,19.1"
    assert out.splitlines() == [
        f"{FIRST}:Profile_1\tMediaProfile\tCamera 000001 main stream\t{where}\tonline\t{scopes}",
        f"{FIRST}:Profile_2\tMediaProfile\tCamera 000001 sub stream\t{where}\tonline\t{scopes}",
        f"{FIRST}:Recording_1\tRecording\tCamera 000001 recording\t{where}\tonline\t{scopes}",
        f"{FIRST}:VideoSource_1\tVideoSource\tCamera 000001 video source\t{where}\tonline\t{scopes}",
    ]
    code, out, _ = run(capsys, "device", "resources", "list", "--data", data, "--prefix", "99999999999999999999")
    assert (code, out) == (0, "")


def test_list_pages_through_more_than_one_page_rq_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """RQ-2: listing reads the registry page by page and loses nothing at page borders."""
    import iec62676_2_33.cli.resources as module

    monkeypatch.setattr(module, "PAGE", 7)
    data = str(tmp_path / "dev")
    run(capsys, "device", "resources", "load", "--data", data, str(EXAMPLE))
    _, out, _ = run(capsys, "device", "resources", "list", "--data", data, "--format", "json")
    assert [json.loads(line)["token"] for line in out.splitlines()] == [r["token"] for r in example_lines()]


def test_format_row_absent_items_rq_3() -> None:
    """RQ-3: absent data items print as '-'; an offline resource says so; tabs in names are flattened."""
    assert format_row(Resource("p:a", "VideoSource")) == "p:a\tVideoSource\t-\t-\t-\t-"
    assert format_row(Resource("p:b", "Recording", name="x\ty", location=GeoLocation(1, 2), offline=True,
                               scopes=("s1", "s2"))) == "p:b\tRecording\tx y\t2.0,1.0\toffline\ts1 s2"


def test_bad_file_reports_every_line_and_applies_nothing_rq_3(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    """RQ-3: every bad line is reported with its number; nothing from the file is applied; exit 2."""
    data = str(tmp_path / "dev")
    good = tmp_path / "good.jsonl"
    good.write_text('{"token": "dev1:a", "kind": "VideoSource", "name": "old"}\n')
    assert run(capsys, "device", "resources", "load", "--data", data, str(good))[0] == 0
    bad = tmp_path / "bad.jsonl"
    lines = [
        '{"token": "dev1:a", "kind": "VideoSource", "name": "new"}',
        "",
        "{not json",
        '{"token": "dev1:a", "kind": "VideoSource"}',
        '{"token": "dev2:x", "kind": "Camera"}',
        '{"token": "dev2:y", "kind": "MediaProfile", "location": {"lon": 200, "lat": 0}}',
        '{"token": "dev2:z", "kind": "MediaProfile"}',
    ]
    bad.write_text("".join(f"{line}\n" for line in lines))
    code, out, err = run(capsys, "device", "resources", "load", "--data", data, str(bad))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"iec62676: error: {str(bad)!r}: 4 bad line(s), nothing was loaded:",
        "  line 3: not JSON (Expecting property name enclosed in double quotes at column 2)",
        "  line 4: token 'dev1:a' already given on line 1",
        f"  line 5: unknown resource kind 'Camera' for token 'dev2:x'; expected one of: {', '.join(RESOURCE_KINDS)}",
        "  line 6: location lon must be within -180..180 degrees, got 200.0",
    ]
    with ResourceRegistry(tmp_path / "dev" / REGISTRY_FILE) as registry:
        assert registry.count() == 1
        assert registry.get("dev1:a") == Resource("dev1:a", "VideoSource", name="old")
        assert registry.get("dev2:z") is None
        assert registry.last_seq() == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["load", "MISSING"], "cannot read resource file"),
    (["remove", "--token", "dev9:none"], "no resource has the token 'dev9:none'"),
    (["list", "--prefix", "a:b"], ("prefix 'a:b' contains ':'; a prefix is the part of a remote token "
                                   "before its first ':', so give only that part")),
])
def test_cli_errors_one_line_exit_2_rq_3(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                                         message: str) -> None:
    """RQ-3: a missing file, an unknown token and a malformed prefix are one-line errors, exit 2."""
    argv = [str(tmp_path / a) if a == "MISSING" else a for a in argv]
    ResourceRegistry(tmp_path / "dev" / REGISTRY_FILE).close()  # an existing device
    code, out, err = run(capsys, "device", "resources", argv[0], "--data", str(tmp_path / "dev"), *argv[1:])
    assert (code, out) == (2, "")
    line = one_line_error(err)
    if argv[0] == "load":
        assert line.startswith(f"iec62676: error: {message} {str(tmp_path / 'MISSING')!r}: [Errno 2] ")
    else:
        assert line == f"iec62676: error: {message}"


def test_usage_errors_exit_2_rq_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """RQ-3: argparse usage errors are one line and exit status 2 too."""
    ResourceRegistry(tmp_path / REGISTRY_FILE).close()  # an existing device
    code, _, err = run(capsys, "device", "resources", "list", "--data", str(tmp_path), "--format", "xml")
    assert code == 2
    assert one_line_error(err) == ("iec62676: error: argument --format: invalid choice: 'xml' "
                                   "(choose from 'table', 'json')")
    code, _, err = run(capsys, "device", "resources", "remove", "--data", str(tmp_path))
    assert (code, one_line_error(err)) == (2, "iec62676: error: the following arguments are required: --token")


def test_real_process_exit_status_and_first_line_rq_3(tmp_path: Path) -> None:
    """RQ-3: as a real process the bad-file error's first stderr line starts with 'iec62676: error:', exit 2."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"token": "a:1", "kind": "VideoSource"}\n[1, 2]\n')
    done = subprocess.run([sys.executable, "-m", "iec62676_2_33", "device", "resources", "load", "--data",
                           str(tmp_path / "dev"), str(bad)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"iec62676: error: {str(bad)!r}: 1 bad line(s), nothing was loaded:",
        "  line 2: a resource must be a JSON object, got list",
    ]
