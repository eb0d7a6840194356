"""``iec62676 cloud serve``: the cloud side — accept device uplinks, optionally proxy HTTP and RTSP to them."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from .enroll import add_parser as add_enroll_parser


def register(sub: Any) -> None:
    cloud = sub.add_parser("cloud", help="cloud side: accept uplinks from devices")
    csub = cloud.add_subparsers(dest="cloud_command", required=True, parser_class=type(cloud))
    p = csub.add_parser("serve", help="listen for device uplinks (TLS; mTLS and/or access tokens; "
                        "h2c-reverse and WebSocket)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--cert", required=True, type=Path, metavar="CERT.pem", help="the cloud's server certificate")
    p.add_argument("--key", required=True, type=Path, metavar="KEY.pem")
    p.add_argument("--client-ca", action="append", default=[], type=Path, metavar="CA.pem",
                   help="CA(s) that issue device certificates (repeatable; mTLS mode)")
    p.add_argument("--identity", choices=("cn", "serial", "san"), default="cn",
                   help="which certificate field names the device (default cn)")
    p.add_argument("--proxy", metavar="HOST:PORT",
                   help="also serve the HTTP front: GET /devices, /devices/<id>/… (it acts with each device's "
                        "uplink UserLevel: loopback only unless --proxy-allow-remote)")
    p.add_argument("--proxy-allow-remote", action="store_true",
                   help="let --proxy bind a non-loopback address (put your own authentication in front)")
    p.add_argument("--rtsp", metavar="HOST:PORT",
                   help="also serve live video to RTSP players: rtsp://HOST:PORT/devices/<id>/<media token> "
                        "(RTSP over TCP; loopback only unless --rtsp-allow-remote)")
    p.add_argument("--rtsp-allow-remote", action="store_true",
                   help="let --rtsp bind a non-loopback address (put your own authentication in front)")
    p.add_argument("--path", help="accept upgrades only for this request path")
    p.add_argument("--jwt-issuer", action="append", default=[], metavar="ISS",
                   help="trusted access-token issuer (repeatable; access-token mode)")
    p.add_argument("--jwt-audience", metavar="AUD", help="the audience access tokens must name")
    p.add_argument("--jwt-keys", metavar="FILE|URL", help="the issuers' JWK Set: a file or an https URL")
    p.add_argument("--jwt-keys-ca", action="append", default=[], type=Path, metavar="CA.pem",
                   help="trust anchors for an https --jwt-keys URL (default: the system store)")
    p.add_argument("--jwt-identity-claim", default="sub", metavar="CLAIM",
                   help="the claim that names the device (default sub)")
    p.set_defaults(handler=serve)
    add_enroll_parser(csub)


def serve(args: argparse.Namespace) -> int:
    from ..runtime.cloud_server import CloudOptions, run_cloud

    options = CloudOptions(listen=args.listen, cert=args.cert, key=args.key, client_cas=args.client_ca,
                           identity=args.identity, proxy=args.proxy, proxy_allow_remote=args.proxy_allow_remote,
                           path=args.path, rtsp=args.rtsp, rtsp_allow_remote=args.rtsp_allow_remote,
                           jwt_issuers=args.jwt_issuer, jwt_audience=args.jwt_audience, jwt_keys=args.jwt_keys,
                           jwt_keys_ca=args.jwt_keys_ca, jwt_identity_claim=args.jwt_identity_claim)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_cloud(options, stop, announce=lambda text: print(text, flush=True))

    from ..runtime.cloud_server import build_authenticator

    build_authenticator(options)  # a usage error now, before anything listens
    asyncio.run(main())
    return 0
