"""Layer 7: options shared by the command groups — the data folder, secrets, logging, output.

* ``--data DIR`` must name an existing device (its ``device.db`` or
  ``resources.db``) so a mistyped path is an error, not a new empty device.
  First-run commands (those that add material: ``user add``, ``keystore add``,
  ``policy add``, ``authserver add``, ``uplink set``, ``resources load``,
  ``media add``) create the folder; ``device serve --init`` starts an empty one.
* A secret (a password, a client secret) comes, first found wins, from its
  flag (least private: other local users see command lines), from
  ``--…-file`` (first line), from an environment variable, or from a
  prompt (``getpass``) when stdin is a terminal.
  A secret file is read up to its first line only (at most MAX_SECRET_BYTES),
  which must be UTF-8 text and not empty (:func:`first_line`).
* ``-v`` / ``--log-level LEVEL`` are accepted anywhere on the command line;
  :func:`split_global_options` takes them out before argparse sees the rest.
* Every argument is UTF-8 text (:func:`check_utf8`): a name, a secret or a URL
  in another encoding is one error line, never a traceback later.
* A URL the command sends requests to is checked when parsed
  (:func:`http_url`), so a typo is a usage error, not a connection failure;
  so is a timeout (:func:`seconds`: finite, positive, at most a day).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigurationError, shown_url
from ..store import DB_NAME

#: The environment variables secrets are read from.
PASSWORD_ENV = "IEC62676_PASSWORD"
CLIENT_SECRET_ENV = "IEC62676_CLIENT_SECRET"

__all__ = ["CLIENT_SECRET_ENV", "LOG_LEVELS", "MAX_SECRET_BYTES", "PASSWORD_ENV", "add_data", "add_secret", "check_utf8",
           "configure_logging", "first_line", "host_port", "http_url", "http_url_error", "read_secret", "seconds",
           "split_global_options"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: The most of a secret file that is read: its first line holds a password, a client secret or an access token.
MAX_SECRET_BYTES = 64 * 1024
#: The longest wait a ``SECONDS`` option accepts (a day).
MAX_SECONDS = 86400.0
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
        value = first_line(file, f"--{flag}-file")
    if value is None:
        value = os.environ.get(env) or None
        if value is not None and not _utf8(value):
            raise ConfigurationError(f"${env} is not UTF-8 text; set it in UTF-8")
    if value is None and sys.stdin.isatty():
        value = getpass.getpass(f"{flag.replace('-', ' ')}: ") or None
    if value is None and required:
        raise ConfigurationError(f"give --{flag}, --{flag}-file or ${env} (or run on a terminal to be asked)")
    return value


def first_line(path: Path, flag: str) -> str:
    """The first line of the secret file ``path`` given with ``flag``; a ConfigurationError naming both when it
    cannot be read, is longer than MAX_SECRET_BYTES, is not UTF-8 or is empty."""
    try:
        with path.open("rb") as file:
            raw = file.readline(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"{flag} {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigurationError(f"{flag} {path}: the first line is longer than {MAX_SECRET_BYTES} bytes; "
                                 "put only the secret on it")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigurationError(f"{flag} {path}: the first line is not UTF-8 text; save the secret as UTF-8") from None
    if not lines or not lines[0]:
        raise ConfigurationError(f"{flag} {path}: the first line is empty")
    return lines[0]


def check_utf8(argv: Sequence[str]) -> None:
    """A ConfigurationError naming the first argument that is not UTF-8 (by position and flag, never its value:
    it may be a secret)."""
    for i, arg in enumerate(argv):
        if not _utf8(arg):
            after = f" (after {argv[i - 1]})" if i and argv[i - 1].startswith("-") else ""
            raise ConfigurationError(f"argument {i + 1}{after} is not UTF-8 text; give names, secrets, URLs and "
                                     "paths in UTF-8")


def _utf8(text: str) -> bool:
    """Whether ``text`` (from the command line or the environment) was UTF-8: undecodable bytes arrive as
    lone surrogates, which do not encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def http_url(text: str) -> str:
    """An argparse ``type``: an http(s) URL a request can go to (:func:`http_url_error`)."""
    why = http_url_error(text)
    if why is not None:
        raise argparse.ArgumentTypeError(why)
    return text


def http_url_error(text: str) -> str | None:
    """Why ``text`` is not an http(s) URL with a host and a valid port and without user info, or ``None``;
    the reason never shows a password."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        why = str(exc)
    else:
        why = ("white space or a control character" if any(c.isspace() or not c.isprintable() for c in text)
               else "not http or https" if parts.scheme.lower() not in ("http", "https")
               else "no host" if not parts.hostname else "port 0" if port == 0
               else "user info: give the user and password with their own options" if "@" in parts.netloc else "")
    if not why:
        return None
    return (f"{shown_url(text)!r} is not an http(s) URL ({why}); give e.g. http://192.0.2.10:8080/onvif/device_service "
            "(IPv6: http://[2001:db8::1]/…)")


def seconds(text: str) -> float:
    """An argparse ``type``: a duration in seconds, more than 0 and at most MAX_SECONDS (every wait is bounded)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"give more than 0 and at most {MAX_SECONDS:g} seconds, not {text}")
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
