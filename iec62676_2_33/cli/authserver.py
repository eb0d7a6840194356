"""``iec62676 authserver serve``: a small OAuth2 authorization server for tests and the demo (UPL-14).

Issues signed JWT access tokens with the client-credentials grant over TLS
and publishes its JWK Set; see :mod:`iec62676_2_33.testing.authserver`.
Client secrets given on the command line are visible to other local users
(``ps``): use it for tests and demonstrations. ``--tls-client`` clients
authenticate by a TLS client certificate issued by a ``--client-ca`` with the
given subject DN instead (RFC 8705 tls_client_auth).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    group = sub.add_parser("authserver", help="a small OAuth2 authorization server (tests, demo)")
    asub = group.add_subparsers(dest="authserver_command", required=True, parser_class=type(group))
    p = asub.add_parser("serve", help="issue JWT access tokens (client credentials) over TLS")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--cert", required=True, type=Path, metavar="CERT.pem", help="the server's TLS certificate")
    p.add_argument("--key", required=True, type=Path, metavar="KEY.pem", help="the TLS certificate's key")
    p.add_argument("--signing-key", required=True, type=Path, metavar="KEY.pem",
                   help="private key that signs the tokens (RSA, EC or Ed25519)")
    p.add_argument("--client", action="append", default=[], metavar="ID:SECRET:SUBJECT",
                   help="a client and the subject (device identity) its tokens carry (repeatable)")
    p.add_argument("--tls-client", action="append", default=[], metavar="ID:SUBJECT:DN",
                   help="a tls_client_auth client (RFC 8705): its TLS client certificate's subject DN, e.g. "
                        "cam-7:cam-7:CN=cam-7 (repeatable; needs --client-ca)")
    p.add_argument("--client-ca", action="append", default=[], type=Path, metavar="CA.pem",
                   help="CA certificate of the --tls-client certificates (repeatable)")
    p.add_argument("--issuer", help="the iss claim (default https://HOST:PORT)")
    p.add_argument("--audience", default="iec62676-uplink", help="the aud claim (default iec62676-uplink)")
    p.add_argument("--lifetime", type=int, default=300, help="token lifetime in seconds (default 300)")
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from ..testing.authserver import AuthServerOptions, parse_client, parse_tls_client, run_authserver

    clients = [parse_client(c) for c in args.client] + [parse_tls_client(c) for c in args.tls_client]
    options = AuthServerOptions(listen=args.listen, cert=args.cert, key=args.key, signing_key=args.signing_key,
                                clients=clients, issuer=args.issuer, audience=args.audience,
                                lifetime=args.lifetime, client_cas=args.client_ca)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_authserver(options, stop, announce=lambda text: print(text, flush=True))

    asyncio.run(main())
    return 0
