"""Layer 7: options shared by the command groups — the data folder, secrets, logging, output.

* ``--data DIR`` must name an existing device (its ``device.db`` or
  ``resources.db``) so a mistyped path is an error, not a new empty device.
  First-run commands (those that add material: ``user add``, ``keystore add``,
  ``policy add``, ``authserver add``, ``uplink set``, ``resources load``)
  create the folder; ``device serve --init`` starts an empty one.
* A secret (a password, a client secret) comes, first found wins, from its
  flag (least private: other local users see command lines), from
  ``--…-file`` (first line), from an environment variable, or from a
  prompt (``getpass``) when stdin is a terminal.
* ``-v`` / ``--log-level LEVEL`` are accepted anywhere on the command line;
  :func:`split_global_options` takes them out before argparse sees the rest.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigurationError
from ..store import DB_NAME

#: The environment variables secrets are read from.
PASSWORD_ENV = "IEC62676_PASSWORD"
CLIENT_SECRET_ENV = "IEC62676_CLIENT_SECRET"

__all__ = ["CLIENT_SECRET_ENV", "LOG_LEVELS", "PASSWORD_ENV", "add_data", "add_secret", "configure_logging", "host_port", "read_secret", "split_global_options"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Files whose presence marks a folder as a device's data folder.
_DEVICE_FILES = (DB_NAME, "resources.db")


def _existing_device(text: str) -> Path:
    path = Path(text)
    if not any((path / name).is_file() for name in _DEVICE_FILES):
        why = "does not exist" if not path.exists() else f"holds no device ({DB_NAME})"
        raise argparse.ArgumentTypeError(f"{text} {why}; create it with a first-run command (e.g. 'device user "
                                         "add') or 'device serve --init'")
    return path


def add_data(p: argparse.ArgumentParser, *, creates: bool = False) -> None:
    """``--data DIR``: must hold a device unless the command ``creates`` it (a first-run command)."""
    p.add_argument("--data", required=True, type=Path if creates else _existing_device, metavar="DIR",
                   help="the device's data folder" + (" (created when missing)" if creates else ""))


def add_secret(p: argparse.ArgumentParser, flag: str, env: str, *, help_: str) -> None:
    """``--flag VALUE`` and ``--flag-file FILE`` (:func:`read_secret` also looks at ``$env`` and asks)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(f"--{flag}", help=f"{help_} (visible to other local users: prefer --{flag}-file, ${env} "
                                         "or the prompt)")
    group.add_argument(f"--{flag}-file", type=Path, metavar="FILE", help=f"read {help_} from the file's first line")


def read_secret(args: argparse.Namespace, flag: str, env: str, *, required: bool = True) -> str | None:
    """The secret given by ``--flag``, ``--flag-file``, ``$env`` or a prompt (in that order)."""
    attr = flag.replace("-", "_")
    value: str | None = getattr(args, attr, None)
    file: Path | None = getattr(args, f"{attr}_file", None)
    if value is None and file is not None:
        lines = file.read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0]:
            raise ConfigurationError(f"--{flag}-file {file}: the first line is empty")
        value = lines[0]
    if value is None:
        value = os.environ.get(env) or None
    if value is None and sys.stdin.isatty():
        value = getpass.getpass(f"{flag.replace('-', ' ')}: ") or None
    if value is None and required:
        raise ConfigurationError(f"give --{flag}, --{flag}-file or ${env} (or run on a terminal to be asked)")
    return value


def host_port(text: str) -> str:
    """An argparse ``type``: ``HOST:PORT`` checked now, so the error names the flag."""
    from ..runtime.http_server import parse_listen

    try:
        parse_listen(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def split_global_options(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """Take ``-v``/``--verbose``/``--log-level LEVEL`` out of ``argv`` wherever they are (before ``--``).

    Returns the remaining arguments and the level asked for (``None``: the command's default).
    """
    rest: list[str] = []
    level: str | None = None
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--":
            rest.extend(items[i:])
            break
        if arg in ("-v", "--verbose"):
            level = "DEBUG"
        elif arg == "--log-level" and i + 1 < len(items):
            level = _level(items[i + 1])
            i += 1
        elif arg.startswith("--log-level="):
            level = _level(arg.partition("=")[2])
        else:
            rest.append(arg)
        i += 1
    return rest, level


def _level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise ConfigurationError(f"--log-level {text!r}: choose one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def configure_logging(level: str | None, default: int) -> None:
    """The library's loggers at ``level`` (or the command's ``default``); other libraries at WARNING
    unless DEBUG was asked for."""
    chosen = getattr(logging, level) if level is not None else default
    logging.basicConfig(level=chosen if chosen == logging.DEBUG else max(chosen, logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("iec62676_2_33").setLevel(chosen)
