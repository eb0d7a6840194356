"""Infrastructure: a plain non-editable install carries every subpackage, the authored WSDL/XSD (loaded
offline) and ``py.typed``; every imported distribution is declared; the public API is
explicit and light to import; importing the package changes nothing in other libraries."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import iec62676_2_33

ROOT = Path(__file__).resolve().parent.parent


def _subpackages(top: Path) -> set[str]:
    """Dotted names of the regular packages (folders with ``__init__.py``) under ``top``'s parent."""
    return {".".join(p.parent.relative_to(top.parent).parts) for p in top.rglob("__init__.py")}


def test_plain_install_holds_every_subpackage_and_the_schemas(tmp_path: Path) -> None:
    """Infrastructure: ``pip install .`` without extras into a fresh venv installs every subpackage of the
    source tree (a subpackage missing from setup.cfg's list fails here), the authored WSDL/XSD and ``py.typed`` inside the package;
    run from elsewhere, the installed package loads the uplink WSDL offline and the console script answers.

    The fresh venv sees this environment's distributions through a ``.pth`` file, so ``--no-index`` keeps
    the install offline while pip still checks every declared dependency is present."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "iec62676_2_33", source / "iec62676_2_33", ignore=ignore)
    for name in ("wsdl", "xsd"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    (Path(purelib) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation", str(source)],
                   check=True, timeout=300, cwd=tmp_path)
    installed = Path(purelib) / "iec62676_2_33"
    assert _subpackages(installed) == _subpackages(ROOT / "iec62676_2_33")
    for kind in ("wsdl", "xsd"):
        authored = {p.name for p in (ROOT / kind).glob(f"*.{kind}")}
        assert authored and {p.name for p in (installed / kind).glob(f"*.{kind}")} == authored
    assert (installed / "py.typed").is_file()
    probe = ("import iec62676_2_33.client as c, iec62676_2_33.schemas as s;"
             "print(s.wsdl_path('uplink'));"
             "c.UplinkClient('http://127.0.0.1:9/onvif/uplink_service');"
             "s.schema('uplink')")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         check=True).stdout
    assert Path(out.strip()) == installed / "wsdl" / "uplink.wsdl"
    version = subprocess.run([str(venv / "bin" / "iec62676"), "--version"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, check=True).stdout
    assert version.split() == ["iec62676", iec62676_2_33.__version__]


def test_public_api_is_explicit() -> None:
    """Infrastructure: ``__all__`` names exactly what the package exports, and each name resolves."""
    for name in iec62676_2_33.__all__:
        assert hasattr(iec62676_2_33, name), name
    assert len(set(iec62676_2_33.__all__)) == len(iec62676_2_33.__all__)


def test_public_names_load_lazily_and_the_core_stays_light() -> None:
    """Infrastructure: the package root names the main entry points; importing the sans-IO core alone does
    not load zeep or Spyne (checked in a fresh interpreter)."""
    probe = ("import sys, iec62676_2_33, iec62676_2_33.sansio.upgrade, iec62676_2_33.http2.server;"
             "print(sorted(m for m in ('zeep', 'spyne') if m in sys.modules));"
             "from iec62676_2_33 import UplinkClient, CloudListener, run_device, RemoteToken;"
             "print(UplinkClient.__module__, CloudListener.__module__, RemoteToken.__module__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         check=True, cwd=ROOT).stdout.splitlines()
    assert out == ["[]", "iec62676_2_33.client iec62676_2_33.runtime.cloud iec62676_2_33.domain.tokens"]


def test_public_class_names_are_unique() -> None:
    """Infrastructure: a public class name means one class in the whole package (no two ``Capabilities`` or
    ``Verdict`` for a reader to confuse)."""
    where: dict[str, set[str]] = {}
    package = ROOT / "iec62676_2_33"
    for path in package.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where.setdefault(node.name, set()).add(path.relative_to(package).as_posix())
    assert {name: files for name, files in where.items() if len(files) > 1} == {}


#: Imports that are not PyPI distributions: GObject introspection comes from Debian (python3-gi, .ci/run).
SYSTEM_PACKAGES = {"gi"}


def _declared() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    lines += [line for extra in config["options.extras_require"].values() for line in extra.splitlines()]
    return {re.split(r"[\[<>=!;~ ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for line in lines if line.strip()}


def test_every_imported_distribution_is_declared() -> None:
    """Infrastructure: each third-party module the package imports comes from a distribution that
    setup.cfg declares (install_requires or an extra), so a clean install has it."""
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for path in (ROOT / "iec62676_2_33").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "iec62676_2_33" or top in SYSTEM_PACKAGES:
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing[top] = path.relative_to(ROOT)
    assert not missing, f"imported but not declared in setup.cfg: {missing}"
    assert "packaging" in {d.split("[")[0] for d in declared} or "zeep" in declared  # zeep[async] pulls it


def test_python_requires_is_true() -> None:
    """Infrastructure: python_requires is 3.11 exactly: the code uses 3.11 features (asyncio.timeout,
    typing.Self) and Spyne 2.14, its last release, does not import on 3.12 or later. This interpreter
    satisfies it and Spyne imports here."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["options"]["python_requires"].strip() == ">=3.11,<3.12"
    assert (3, 11) <= sys.version_info[:2] < (3, 12)
    subprocess.run([sys.executable, "-c", "import spyne.util.oset"], check=True, timeout=60)


def test_importing_the_package_changes_no_other_library() -> None:
    """Infrastructure: importing every module of the package leaves the attributes of the libraries it
    uses as they were (no global monkeypatching), checked in a fresh interpreter."""
    probe = """
import importlib, pkgutil, sys
import hyperframe.frame, wsproto.frame_protocol, hpack.hpack, logging
before = {"DataFrame._body_repr": hyperframe.frame.DataFrame._body_repr,
          "XorMaskerSimple": wsproto.frame_protocol.XorMaskerSimple, "hpack.log": hpack.hpack.log,
          "spyne level": logging.getLogger("spyne").level}
import iec62676_2_33
for info in pkgutil.walk_packages(iec62676_2_33.__path__, "iec62676_2_33."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
after = {"DataFrame._body_repr": hyperframe.frame.DataFrame._body_repr,
         "XorMaskerSimple": wsproto.frame_protocol.XorMaskerSimple, "hpack.log": hpack.hpack.log,
         "spyne level": logging.getLogger("spyne").level}
print(sorted(k for k in before if before[k] is not after[k] and before[k] != after[k]))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True,
                         cwd=ROOT).stdout.strip()
    assert out == "[]", f"changed at import time: {out}"
