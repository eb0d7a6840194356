"""Conformance kit: the case registry, verdicts and evidence (TEST-1).

A conformance case is a function registered under an ID with the requirement
IDs it checks. It receives the session (what it tests) and an
:class:`Evidence` log; it records what was sent and what came back, and ends
by returning (pass), by :meth:`Evidence.fail` or :meth:`Evidence.skip`. Any
other error (a deadline passed, the device answered garbage) is a failure
too, reported as one line that names the exception. Evidence items and
messages are bounded (a message is one line, whatever the product put in
the fault reason it quotes) so a chatty device cannot blow up a report.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..errors import Iec62676Error

#: Bytes of text one evidence item keeps (the rest is cut, with a note).
MAX_EVIDENCE_CHARS = 4000
#: Evidence items one case keeps.
MAX_EVIDENCE_ITEMS = 60
#: Characters a verdict's message keeps (it can quote the product: a fault reason, an error text).
MAX_MESSAGE_CHARS = 500


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


class CaseFailed(Iec62676Error):
    """The device (or cloud) under test did not do what the case requires."""


class CaseSkipped(Iec62676Error):
    """The case does not apply to the target (the reason says why)."""


@dataclass(frozen=True)
class Case:
    """One registered case: ``id``, a one-line ``title``, the ``requirements`` it checks."""

    id: str
    title: str
    requirements: tuple[str, ...]
    run: Callable[[Any, Evidence], None]
    long: bool = False
    doc: str = ""


@dataclass
class EvidenceItem:
    label: str
    text: str


@dataclass
class Evidence:
    """What a case saw, in order (bounded)."""

    items: list[EvidenceItem] = field(default_factory=list)

    def note(self, label: str, text: object) -> None:
        value = text if isinstance(text, str) else repr(text)
        if len(value) > MAX_EVIDENCE_CHARS:
            value = value[:MAX_EVIDENCE_CHARS] + f"... ({len(value) - MAX_EVIDENCE_CHARS} more characters)"
        if len(self.items) < MAX_EVIDENCE_ITEMS:
            self.items.append(EvidenceItem(label, value))

    def fail(self, message: str) -> NoReturn:
        raise CaseFailed(message)

    def skip(self, reason: str) -> NoReturn:
        raise CaseSkipped(reason)

    def check(self, condition: object, message: str) -> None:
        """Fail with ``message`` unless ``condition`` holds."""
        if not condition:
            raise CaseFailed(message)


@dataclass
class Result:
    case: Case
    verdict: Verdict
    message: str
    evidence: list[EvidenceItem]
    duration: float


class Registry:
    """The cases of one side (device or cloud), in registration order."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.cases: dict[str, Case] = {}

    def case(self, case_id: str, title: str, *requirements: str, long: bool = False
             ) -> Callable[[Callable[[Any, Evidence], None]], Callable[[Any, Evidence], None]]:
        def register(fn: Callable[[Any, Evidence], None]) -> Callable[[Any, Evidence], None]:
            if case_id in self.cases:
                raise ValueError(f"case {case_id} is registered twice")
            self.cases[case_id] = Case(case_id, title, tuple(requirements), fn, long, (fn.__doc__ or "").strip())
            return fn
        return register

    def select(self, only: Iterable[str] = ()) -> list[Case]:
        """The cases named in ``only`` (all when empty); an unknown ID is a usage error."""
        wanted = [o.upper() for o in only]
        unknown = [o for o in wanted if o not in self.cases]
        if unknown:
            raise Iec62676Error(f"unknown {self.side} case ID(s): {', '.join(unknown)}; "
                                f"known: {', '.join(self.cases)}")
        return [c for c in self.cases.values() if not wanted or c.id in wanted]


def run_case(case: Case, session: Any) -> Result:
    """Run one case and turn its outcome into a :class:`Result`."""
    evidence = Evidence()
    started = time.monotonic()
    try:
        case.run(session, evidence)
        verdict, message = Verdict.PASS, "passed"
    except CaseSkipped as exc:
        verdict, message = Verdict.SKIP, _one_line(str(exc))
    except CaseFailed as exc:
        verdict, message = Verdict.FAIL, _one_line(str(exc))
    except Exception as exc:  # noqa: BLE001 - any error is the case's verdict, reported as one line
        verdict, message = Verdict.FAIL, f"{type(exc).__name__}: {exc}".splitlines()[0][:MAX_MESSAGE_CHARS]
    return Result(case, verdict, message, evidence.items, time.monotonic() - started)


def _one_line(message: str) -> str:
    """A case's own message as one line of at most :data:`MAX_MESSAGE_CHARS` (the rest is cut, with a note)."""
    line = " ".join(message.splitlines())
    return line if len(line) <= MAX_MESSAGE_CHARS else line[:MAX_MESSAGE_CHARS] + f"... ({len(line)} characters)"
