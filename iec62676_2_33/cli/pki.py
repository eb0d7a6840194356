"""Layer 7: ``iec62676 pki`` — a test CA and certificates for the uplink's TLS (UPL-11, UPL-13).

``pki ca`` creates a CA directory (``ca.pem`` + ``ca.key``); ``pki issue``
issues a server or client certificate from it into a directory of its own
(``cert.pem``, ``key.pem`` and the CA certificate as ``ca.pem``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import pki

#: The longest validity ``--days`` accepts (100 years).
MAX_DAYS = 36525
#: The longest common name (RFC 5280 ub-common-name).
MAX_CN = 64


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``pki`` command group to the top-level *subparsers*."""
    group = subparsers.add_parser("pki", help="create a test CA and issue TLS certificates")
    commands = group.add_subparsers(dest="pki_command", required=True, parser_class=type(group))
    _register_ca(commands)
    _register_issue(commands)


def _register_ca(commands: argparse._SubParsersAction[Any]) -> None:
    p = commands.add_parser("ca", help="create a CA directory (ca.pem + ca.key)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write")
    p.add_argument("--cn", type=_common_name, default="iec62676 test CA", metavar="NAME", help="CA common name")
    p.add_argument("--days", type=_days, default=3650, metavar="N", help=f"validity (1 to {MAX_DAYS})")
    p.add_argument("--force", action="store_true", help="replace an existing ca.key")
    p.set_defaults(handler=_ca)


def _register_issue(commands: argparse._SubParsersAction[Any]) -> None:
    p = commands.add_parser("issue", help="issue a server or client certificate from a CA")
    p.add_argument("--ca", type=Path, required=True, metavar="DIR", help="CA directory")
    p.add_argument("--cn", type=_common_name, required=True, metavar="NAME", help="subject common name")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--server",
        dest="kind",
        action="store_const",
        const="server",
        help="TLS server certificate (EKU serverAuth)",
    )
    kind.add_argument(
        "--client",
        dest="kind",
        action="store_const",
        const="client",
        help="TLS client certificate (EKU clientAuth)",
    )
    p.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="DNS:NAME|IP:ADDR",
        help="subjectAltName (repeatable; bare values: IP if they parse, else DNS)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write")
    p.add_argument("--days", type=_days, default=825, metavar="N", help=f"validity (1 to {MAX_DAYS})")
    p.set_defaults(handler=_issue)


def _days(text: str) -> int:
    """argparse type: a validity in days, 1 to MAX_DAYS."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DAYS} (100 years), not {value}")
    return value


def _common_name(text: str) -> str:
    """argparse type: an X.509 common name, 1 to MAX_CN characters (RFC 5280 ub-common-name)."""
    if not 1 <= len(text) <= MAX_CN:
        raise argparse.ArgumentTypeError(f"a common name has 1 to {MAX_CN} characters, not {len(text)}")
    return text


def _ca(args: argparse.Namespace) -> int:
    """Handler of ``pki ca``."""
    ca = pki.create_ca_dir(args.out, cn=args.cn, days=args.days, force=args.force)
    print(
        f"wrote CA {args.out / 'ca.pem'} and {args.out / 'ca.key'} "
        f"(sha256 {pki.fingerprint_sha256(ca.cert)})"
    )
    return 0


def _issue(args: argparse.Namespace) -> int:
    """Handler of ``pki issue``."""
    leaf = pki.issue_to_dir(args.ca, args.cn, args.kind, args.san, args.out, days=args.days)
    print(
        f"wrote {args.kind} certificate {args.out / 'cert.pem'}, key {args.out / 'key.pem'} "
        f"and CA {args.out / 'ca.pem'} (sha256 {pki.fingerprint_sha256(leaf.cert)})"
    )
    return 0
