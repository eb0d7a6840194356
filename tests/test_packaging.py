"""CFG-1, GEN-2: a non-editable install carries the authored WSDL/XSD and loads them offline,
and the public API is explicit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import iec62676_2_33

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_schemas_and_loads_offline_cfg_1(tmp_path: Path) -> None:
    """CFG-1: the wheel holds wsdl/ and xsd/ inside the package; installed elsewhere, zeep loads
    the uplink WSDL from it with external access forbidden."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("iec62676_2_33", "wsdl", "xsd"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(source)], check=True, timeout=300, cwd=tmp_path)
    [wheel] = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("iec62676_2_33/wsdl/uplink.wsdl", "iec62676_2_33/xsd/uplink.xsd", "iec62676_2_33/xsd/common.xsd"):
        assert name in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    probe = ("import iec62676_2_33.client as c, iec62676_2_33.schemas as s;"
             "print(s.wsdl_path('uplink'));"
             "c.UplinkClient('http://127.0.0.1:9/onvif/uplink_service');"
             "s.schema('uplink')")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path, check=True).stdout
    assert Path(out.strip()) == target / "iec62676_2_33" / "wsdl" / "uplink.wsdl"


def test_every_subpackage_is_listed_in_setup_cfg_cfg_1() -> None:
    """CFG-1: setup.cfg names every package folder, so nothing is left out of a wheel."""
    listed = set()
    lines = (ROOT / "setup.cfg").read_text().splitlines()
    start = lines.index("packages =") + 1
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        listed.add(line.strip())
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "iec62676_2_33").rglob("__init__.py")}
    assert on_disk <= listed


def test_public_api_is_explicit_gen_2() -> None:
    """GEN-2: ``__all__`` names exactly what the package exports, and each name resolves."""
    for name in iec62676_2_33.__all__:
        assert hasattr(iec62676_2_33, name), name
    assert len(set(iec62676_2_33.__all__)) == len(iec62676_2_33.__all__)


def test_public_names_load_lazily_and_the_core_stays_light_gen_2() -> None:
    """GEN-2: the package root names the main entry points; importing the sans-IO core alone does
    not load zeep or Spyne (checked in a fresh interpreter)."""
    probe = ("import sys, iec62676_2_33, iec62676_2_33.sansio.upgrade, iec62676_2_33.http2.server;"
             "print(sorted(m for m in ('zeep', 'spyne') if m in sys.modules));"
             "from iec62676_2_33 import UplinkClient, CloudListener, run_device, RemoteToken;"
             "print(UplinkClient.__module__, CloudListener.__module__, RemoteToken.__module__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         check=True, cwd=ROOT).stdout.splitlines()
    assert out == ["[]", "iec62676_2_33.client iec62676_2_33.runtime.cloud iec62676_2_33.domain.tokens"]
