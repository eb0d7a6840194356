"""Infrastructure: docs/requirements.md gives every requirement ID a test names (so IDs cited in code and
tests can be read inside the repository) and matches the requirements digest it is generated from."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "spec" / "REQUIREMENTS.md"
sys.path.insert(0, str(ROOT / "tools"))

from conformance import test_ids as ids_named_by_tests
from requirements import ID_PATTERN


def _documented() -> set[str]:
    return {m.group(1) for m in re.finditer(rf"^\| ({ID_PATTERN}) \|", (ROOT / "docs" / "requirements.md").read_text(),
                                             re.MULTILINE)}


def test_every_id_a_test_names_is_documented() -> None:
    """Infrastructure: each ID credited to a test has a row in docs/requirements.md."""
    named, _ = ids_named_by_tests(ROOT / "tests")
    missing = {i for ids in named.values() for i in ids} - _documented()
    assert not missing, f"named by tests but not in docs/requirements.md: {sorted(missing)}"


@pytest.mark.skipif(not SPEC.exists(), reason="the requirements digest is outside this checkout")
def test_the_document_is_generated_from_the_digest() -> None:
    """Infrastructure: ``tools/requirements.py --check`` finds docs/requirements.md current."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "requirements.py"), "--check"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_conformance_credits_no_id_to_infrastructure_tests() -> None:
    """Infrastructure: tests marked Infrastructure are counted apart and name no requirement."""
    named, infrastructure = ids_named_by_tests(ROOT / "tests")
    assert "tests/test_packaging.py::test_public_api_is_explicit" in infrastructure
    assert not set(named) & set(infrastructure)
    assert all(not ids for ids in infrastructure.values())
