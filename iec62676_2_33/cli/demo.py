"""``iec62676 demo``: the end-to-end demonstration on loopback."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demonstration on loopback")
    p.set_defaults(handler=run)


def run(_args: argparse.Namespace) -> int:
    from ..demo import run as run_demo

    return run_demo()
