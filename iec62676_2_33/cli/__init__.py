"""Layer 7: the ``iec62676`` command line. Thin: parse arguments, call the library.

Each command group lives in a module of its own that exposes
``register(subparsers)``; every handler returns an exit status. Errors of the
library's tree become one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ..errors import Iec62676Error

#: Modules of this package that contribute command groups, in help order.
GROUPS = ("demo", "pki", "device", "cloud", "deviceid", "query", "authserver")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"iec62676: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iec62676", description="IEC 62676-2-33 cloud uplink and remote access")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in GROUPS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except Iec62676Error as exc:
        print(f"iec62676: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"iec62676: error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
