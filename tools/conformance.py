#!/usr/bin/env python3
"""Generate docs/conformance.md: requirement ID → tests → status.

Reads the requirement IDs from ../shared/spec/REQUIREMENTS.md (or --spec),
collects the IDs each test names (its function name, docstring and
decorators; the module docstring for a test that names none itself) and, with --junit, the outcome of each test from a
pytest JUnit XML report. Exits 1 when a test names an ID the requirements do
not define, so CI fails on a typo.

Infrastructure tests (packaging, documentation, helpers) check no
requirement: a test whose docstring, or whose module's docstring, starts with
``Infrastructure`` is credited with no ID, even one its module docstring names,
and may name none itself (exit 1 otherwise). They are counted apart.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from requirements import ID_PATTERN

#: What the matrix must say beside an ID that tests cannot (or do not yet) cover in full.
NOTES = {
    "GEN-4": "scope statement of the standard; nothing to test",
    "RQ-11": "transport independence tested (direct, uplink, proxy) and base notification (Subscribe, "
             "Notify, tests/test_events_push.py); notification streaming is not implemented",
    **{f"ANX-B-{n}": "informative annex; built as the VSS (docs/hierarchy.md)" for n in range(1, 6)},
}

ID = re.compile(rf"\b{ID_PATTERN}\b", re.IGNORECASE)
_PREFIX = ID_PATTERN.removesuffix(r"-\d+")
#: How an infrastructure test's docstring (or its module's) begins.
INFRASTRUCTURE = "Infrastructure"


def spec_ids(spec: Path) -> list[str]:
    ids: list[str] = []
    for match in re.finditer(rf"\*\*({ID_PATTERN})", spec.read_text()):
        if match.group(1) not in ids:
            ids.append(match.group(1))
    return ids


def _expand(text: str) -> set[str]:
    """IDs named in text; ranges such as ``CFG-1..6`` or ``UPL-1..UPL-3`` name every member."""
    found = {m.group(0).upper() for m in ID.finditer(text.replace("_", "-"))}
    for m in re.finditer(rf"\b({_PREFIX})-(\d+)\s*(?:\.\.|…|–)\s*(?:\1-)?(\d+)\b",
                         text, re.IGNORECASE):
        prefix, low, high = m.group(1).upper(), int(m.group(2)), int(m.group(3))
        if low < high <= low + 40:
            found.update(f"{prefix}-{n}" for n in range(low, high + 1))
    return found


def test_ids(tests: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(test node id (file::function) → IDs it names, infrastructure test → IDs it names (should be none))."""
    result: dict[str, set[str]] = {}
    infrastructure: dict[str, set[str]] = {}
    for path in sorted(tests.rglob("test*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module_doc = ast.get_docstring(tree) or ""
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                doc = ast.get_docstring(node) or ""
                # Without its leading "test", a name such as test_100_streams does not read as TEST-100.
                own = " ".join([node.name.removeprefix("test"), doc,
                                " ".join(ast.unparse(d) for d in node.decorator_list)])
                key = f"{path.relative_to(tests.parent)}::{node.name}"
                if doc.startswith(INFRASTRUCTURE) or (not doc and module_doc.startswith(INFRASTRUCTURE)):
                    infrastructure[key] = _expand(own)
                    continue
                # A test's own IDs are precise; the module docstring only speaks for tests naming none.
                result[key] = _expand(own) or _expand(module_doc)
    return result, infrastructure


def outcomes(junit: Path | None) -> dict[str, str]:
    """file::function → passed/failed/skipped (parametrised cases folded: any failure wins)."""
    if junit is None or not junit.exists():
        return {}
    status: dict[str, str] = {}
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    for case in ET.parse(junit).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "").split("[", 1)[0]
        path = classname.replace(".", "/")
        parts = path.split("/")
        while parts and not parts[-1].startswith("test"):
            parts.pop()
        key = "/".join(parts) + ".py::" + name
        outcome = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        if rank[outcome] >= rank.get(status.get(key, "passed"), 0):
            status[key] = outcome
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--spec", type=Path, default=root.parent / "shared" / "spec" / "REQUIREMENTS.md")
    parser.add_argument("--tests", type=Path, default=root / "tests")
    parser.add_argument("--junit", type=Path)
    parser.add_argument("--out", type=Path, default=root / "docs" / "conformance.md")
    args = parser.parse_args()
    known = spec_ids(args.spec)
    named, infrastructure = test_ids(args.tests)
    unknown = sorted({i for ids in named.values() for i in ids} - set(known))
    if unknown:
        print(f"conformance: tests name unknown requirement IDs: {', '.join(unknown)}", file=sys.stderr)
        return 1
    claiming = sorted(t for t, ids in infrastructure.items() if ids)
    if claiming:
        print(f"conformance: infrastructure tests name requirement IDs: {', '.join(claiming)}", file=sys.stderr)
        return 1
    status = outcomes(args.junit)
    by_id: dict[str, list[str]] = defaultdict(list)
    for test, ids in named.items():
        for i in ids:
            by_id[i].append(test)
    lines = ["# Conformance matrix", "",
             "Generated by `tools/conformance.py` from the tests and their last run; do not edit by hand.",
             ("Status: **pass** = every test naming the ID passed; **fail** = one failed; "
             "**untested** = no test names it yet."), "",
             "| ID | status | tests | note |", "|---|---|---|---|"]
    for i in known:
        tests = sorted(by_id.get(i, []))
        if not tests:
            state = "untested"
        elif any(status.get(t) == "failed" for t in tests):
            state = "fail"
        elif status and all(status.get(t) == "skipped" for t in tests):
            state = "skipped"
        elif status:
            state = "pass"
        else:
            state = "not run"
        shown = ", ".join(f"`{t}`" for t in tests[:6]) + (f" (+{len(tests) - 6} more)" if len(tests) > 6 else "")
        lines.append(f"| {i} | {state} | {shown} | {NOTES.get(i, '')} |")
    covered = sum(1 for i in known if by_id.get(i))
    lines += ["", (f"{covered} of {len(known)} requirement IDs are named by at least one test; "
                   f"{len(infrastructure)} infrastructure tests (packaging, documentation, helpers) name none."),
              "The statement of each ID: `docs/requirements.md`."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"conformance: {covered}/{len(known)} IDs covered; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
