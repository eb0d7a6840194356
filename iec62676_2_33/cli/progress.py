"""Layer 7: progress bars of the long commands (loading resources, enumerating a resource list, enrolling
many devices).

A bar is drawn by ``tqdm`` on **stderr only**, so ``--format json`` and every
other output on stdout stay machine-readable whatever is shown. It is on when
stderr is a terminal, or when ``--progress`` asks for it (a log file, a CI
console), and off otherwise. While a bar is on, :func:`emit` writes a line meant
for stderr, or for stdout when that is a terminal too, through ``tqdm.write``
(clear the bar, write, redraw), so lines and bar never share a row; a line for
redirected stdout goes straight there.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["add_progress", "emit", "progress_bar"]


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--progress``: draw the bar on stderr even when it is not a terminal."""
    p.add_argument("--progress", action="store_true",
                   help="show a progress bar on stderr even when it is not a terminal (default: only on one)")


def progress_bar(args: argparse.Namespace, *, desc: str, unit: str, total: int | None = None,
                 unit_scale: bool = False) -> tqdm:
    """A bar on stderr: on with ``--progress`` or when stderr is a terminal; a no-op otherwise.
    ``unit_scale`` shows k/M/G prefixes (for bytes)."""
    shown = bool(getattr(args, "progress", False)) or sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr, disable=not shown,
                leave=False, dynamic_ncols=True)


def emit(bar: tqdm, line: str, out: TextIO) -> None:
    """Write ``line`` (with its newline) to ``out`` without tearing ``bar`` on a shared terminal."""
    if not bar.disable and (out is sys.stderr or out.isatty()):
        tqdm.write(line, file=out, end="")
    else:
        out.write(line)
    out.flush()
