"""Layer 7: the ``iec62676`` command line. Thin: parse arguments, call the library.

Each command group lives in a module of its own that exposes
``register(subparsers)``; every handler returns an exit status. Errors of the
library's tree become one line on stderr and exit status 2, never a traceback;
a closed output pipe (``… | head -1``) ends the command quietly.

Logging: ``-v`` (DEBUG) or ``--log-level LEVEL`` anywhere on the line; by
default WARNING, and INFO for the long-running commands that set
``log_default`` (``serve``: each uplink's state and why, devices connecting
and refused).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import Iec62676Error
from .options import LOG_LEVELS, check_utf8, configure_logging, split_global_options

#: Modules of this package that contribute command groups, in help order.
GROUPS = ("demo", "pki", "device", "cloud", "deviceid", "query", "authserver", "vss", "conformance", "recordings")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"iec62676: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="iec62676", description="IEC 62676-2-33 cloud uplink and remote access")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level (anywhere on the line)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                        help="log at this level (anywhere on the line; default WARNING, INFO for serve)")
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
        given = sys.argv[1:] if argv is None else argv
        check_utf8(given)
        rest, level = split_global_options(given)
        args = parser.parse_args(rest)
    except Iec62676Error as exc:
        print(f"iec62676: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2), already printed
        return int(exc.code or 0)
    configure_logging(level, getattr(args, "log_default", logging.WARNING))
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:
        # The reader went away (``… | head -1``): stop quietly; no flush error at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Iec62676Error as exc:
        print(f"iec62676: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"iec62676: error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
