"""``iec62676 cloud serve``: the cloud side — accept device uplinks, optionally proxy HTTP to them."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    cloud = sub.add_parser("cloud", help="cloud side: accept uplinks from devices")
    csub = cloud.add_subparsers(dest="cloud_command", required=True, parser_class=type(cloud))
    p = csub.add_parser("serve", help="listen for device uplinks (TLS, mTLS, h2c-reverse)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--cert", required=True, type=Path, metavar="CERT.pem", help="the cloud's server certificate")
    p.add_argument("--key", required=True, type=Path, metavar="KEY.pem")
    p.add_argument("--client-ca", required=True, action="append", type=Path, metavar="CA.pem",
                   help="CA(s) that issue device certificates (repeatable)")
    p.add_argument("--identity", choices=("cn", "serial", "san"), default="cn",
                   help="which certificate field names the device (default cn)")
    p.add_argument("--proxy", metavar="HOST:PORT", help="also serve the HTTP front: GET /devices, /devices/<id>/…")
    p.add_argument("--path", help="accept upgrades only for this request path")
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from ..runtime.cloud_server import CloudOptions, run_cloud

    options = CloudOptions(listen=args.listen, cert=args.cert, key=args.key, client_cas=args.client_ca,
                           identity=args.identity, proxy=args.proxy, path=args.path)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_cloud(options, stop, announce=lambda text: print(text, flush=True))

    asyncio.run(main())
    return 0
