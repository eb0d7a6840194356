"""Conformance kit: run the selected cases one after the other and collect a :class:`Report` (TEST-1).

Cases run in registration order against one session; a case's failure never
stops the run. ``skip_long`` leaves out the cases marked long (each is then
reported as skipped, with the reason), so a quick run and a full one give the
same table. The report says when the run started and how long it took.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .registry import Registry, Result, Verdict, run_case


@dataclass
class Report:
    """The results of one run: ``side`` ("device" or "cloud") and ``target`` (what was tested)."""

    side: str
    target: str
    results: list[Result] = field(default_factory=list)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    duration: float = 0.0

    def count(self, verdict: Verdict) -> int:
        return sum(1 for r in self.results if r.verdict is verdict)

    @property
    def passed(self) -> bool:
        """True when no case failed (skipped cases do not count)."""
        return self.count(Verdict.FAIL) == 0

    def summary(self) -> str:
        return (f"{self.count(Verdict.PASS)} passed, {self.count(Verdict.FAIL)} failed, "
                f"{self.count(Verdict.SKIP)} skipped in {self.duration:.1f} s")

    def requirement_matrix(self) -> dict[str, list[Result]]:
        """Requirement ID → the results of the cases that check it (sorted by ID)."""
        matrix: dict[str, list[Result]] = {}
        for result in self.results:
            for req in result.case.requirements:
                matrix.setdefault(req, []).append(result)
        return dict(sorted(matrix.items(), key=lambda item: _natural(item[0])))


def _natural(requirement: str) -> list[str | int]:
    """``UPL-2`` before ``UPL-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", requirement)]


def run(registry: Registry, session: Any, *, target: str, only: Iterable[str] = (), skip_long: bool = False,
        on_result: Callable[[Result], None] | None = None) -> Report:
    """Run ``registry``'s cases (those named in ``only``, or all) against ``session``."""
    chosen = list(only)
    cases = registry.select(chosen)
    report = Report(registry.side, target)
    started = time.monotonic()
    for case in cases:
        if skip_long and case.long and not chosen:
            result = Result(case, Verdict.SKIP, "long case left out of this run (select it with --only)", [], 0.0)
        else:
            result = run_case(case, session)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    report.duration = time.monotonic() - started
    return report
