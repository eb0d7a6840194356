"""``iec62676 vss …``: an upper-level VSS — its lower systems and ``serve`` (GEN-1, Annex B).

A VSS uses a device's data folder (``iec62676 device user add --data DIR …``
for its users); ``vss lower add|list|remove`` keep its lower systems in the
same folder, and a running ``vss serve`` picks changes up within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .options import PASSWORD_ENV, add_secret, http_url, read_secret, seconds


def _existing_vss(text: str) -> Path:
    """A data folder that holds a VSS's lower systems or a device (its users): a mistyped folder is an error,
    not a new, empty VSS."""
    from ..store import DB_NAME
    from ..vss.lower import VSS_DB

    path = Path(text)
    if not any((path / name).is_file() for name in (VSS_DB, DB_NAME)):
        why = "does not exist" if not path.exists() else f"holds no VSS ({VSS_DB}) and no device ({DB_NAME})"
        raise argparse.ArgumentTypeError(f"{text} {why}; create it with 'vss lower add' or 'device user add'")
    return path


def _data(p: argparse.ArgumentParser, *, creates: bool = False) -> None:
    p.add_argument("--data", required=True, type=Path if creates else _existing_vss, metavar="DIR",
                   help="the VSS's data folder" + (" (created when missing)" if creates else ""))


def register(sub: Any) -> None:
    vss = sub.add_parser("vss", help="upper-level VSS: lower systems, token adaption, serve")
    vsub = vss.add_subparsers(dest="vss_command", required=True, parser_class=type(vss))

    lower = vsub.add_parser("lower", help="the lower systems (devices or VSSs) this VSS exposes")
    lsub = lower.add_subparsers(dest="lower_command", required=True, parser_class=type(lower))
    p = lsub.add_parser("add", help="add or replace a lower system, reached by URL or through an uplink")
    _data(p, creates=True)
    p.add_argument("--prefix", help="the prefix of its remote tokens (default: the system's Annex A device ID: "
                   "the SerialNumber it announces, or the --uplink device ID)")
    p.add_argument("--url", type=http_url, metavar="http://HOST:PORT/onvif/device_service")
    p.add_argument("--user", help="the VSS's account at the lower system (with --url)")
    add_secret(p, "password", PASSWORD_ENV, help_="the VSS's password at the lower system (with --user)")
    p.add_argument("--uplink", metavar="DEVICE_ID", help="the lower system dials this VSS (--uplink-listen)")
    p.add_argument("--timeout", type=seconds, default=10.0,
                   help="seconds the system at --url has to announce its device ID (default 10)")
    p.set_defaults(handler=lower_add)
    p = lsub.add_parser("list", help="list the lower systems")
    _data(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=lower_list)
    p = lsub.add_parser("remove", help="remove a lower system")
    _data(p)
    p.add_argument("--prefix", required=True)
    p.set_defaults(handler=lower_remove)

    p = vsub.add_parser("serve", help="serve the VSS: the device's services, adapted for the lower systems")
    _data(p)
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--rtsp", metavar="HOST:PORT", help="RTSP front relaying the lower systems' streams")
    p.add_argument("--rtsp-open", action="store_true",
                   help="serve the RTSP front without authentication (default: RTSP Digest of the VSS's users)")
    p.add_argument("--uplink-listen", metavar="HOST:PORT", help="embed a cloud listener for lower systems on uplinks")
    p.add_argument("--cert", type=Path, metavar="CERT.pem", help="the listener's server certificate")
    p.add_argument("--key", type=Path, metavar="KEY.pem")
    p.add_argument("--client-ca", action="append", default=[], type=Path, metavar="CA.pem",
                   help="CA(s) that issue the lower systems' client certificates (repeatable)")
    p.add_argument("--timeout", type=seconds, default=10.0, help="seconds a lower system has to answer (default 10)")
    p.set_defaults(handler=serve, log_default=logging.INFO)  # lower systems on- and offline, uplinks


def lower_add(args: argparse.Namespace) -> int:
    from ..vss.lower import LowerStore, LowerSystem
    from ..vss.prefix import default_prefix

    if args.url is None and args.uplink is None:
        raise ConfigurationError("give --url (with --user/--password) or --uplink DEVICE_ID")
    password_given = args.password is not None or args.password_file is not None
    if args.uplink is not None and (args.user is not None or password_given):
        raise ConfigurationError("--user/--password go with --url; an uplink carries its own UserLevel")
    if args.user is None and password_given:
        raise ConfigurationError("--user and --password go together")
    if args.url is not None and args.uplink is not None:
        raise ConfigurationError("a lower system is reached either by --url or by --uplink, not both")
    # the password, like every secret: --password, --password-file, $IEC62676_PASSWORD or a prompt
    password = read_secret(args, "password", PASSWORD_ENV) if args.user is not None else None
    prefix = args.prefix or default_prefix(url=args.url, username=args.user, password=password,
                                           uplink=args.uplink, timeout=args.timeout)
    lower = LowerSystem(prefix=prefix, url=args.url, username=args.user, password=password, uplink=args.uplink)
    with LowerStore(args.data) as store:
        store.put(lower)
    print(f"lower system {prefix} stored ({lower.reached_by})")
    return 0


def lower_list(args: argparse.Namespace) -> int:
    from ..vss.lower import LowerStore

    with LowerStore(args.data) as store:
        lowers = store.list()
    if args.json:
        print(json.dumps([{"prefix": x.prefix, "url": x.url, "user": x.username, "uplink": x.uplink}
                          for x in lowers], indent=2))
    for x in [] if args.json else lowers:
        print(f"{x.prefix}\t{x.reached_by}" + (f"\tuser={x.username}" if x.username else ""))
    return 0


def lower_remove(args: argparse.Namespace) -> int:
    from ..vss.lower import LowerStore

    with LowerStore(args.data) as store:
        if not store.remove(args.prefix):
            raise ConfigurationError(f"no lower system has the prefix {args.prefix!r}")
    print(f"lower system {args.prefix} removed")
    return 0


def serve(args: argparse.Namespace) -> int:
    from ..runtime.cloud_server import CloudOptions, build_authenticator
    from ..vss.runtime import VssOptions, run_vss

    uplink = None
    if args.uplink_listen is not None:
        if args.cert is None or args.key is None or not args.client_ca:
            raise ConfigurationError("--uplink-listen needs --cert, --key and --client-ca")
        uplink = CloudOptions(listen=args.uplink_listen, cert=args.cert, key=args.key, client_cas=args.client_ca)
        build_authenticator(uplink)
    options = VssOptions(rtsp=args.rtsp, rtsp_open=args.rtsp_open, uplink=uplink, timeout=args.timeout)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_vss(args.data, args.listen, stop, announce=lambda text: print(text, flush=True), options=options)

    asyncio.run(main())
    return 0
