"""``iec62676 cloud serve``: the cloud side — accept device uplinks, optionally proxy HTTP and RTSP to them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from ..errors import shown_url
from .enroll import add_parser as add_enroll_parser
from .options import host_port, seconds


def register(sub: Any) -> None:
    cloud = sub.add_parser("cloud", help="cloud side: accept uplinks from devices")
    csub = cloud.add_subparsers(dest="cloud_command", required=True, parser_class=type(cloud))
    p = csub.add_parser("serve", help="listen for device uplinks (TLS; mTLS and/or access tokens; "
                        "h2c-reverse and WebSocket)")
    p.add_argument("--listen", required=True, type=host_port, metavar="HOST:PORT")
    p.add_argument("--cert", required=True, type=Path, metavar="CERT.pem", help="the cloud's server certificate")
    p.add_argument("--key", required=True, type=Path, metavar="KEY.pem")
    p.add_argument("--client-ca", action="append", default=[], type=Path, metavar="CA.pem",
                   help="CA(s) that issue device certificates (repeatable; mTLS mode)")
    p.add_argument("--identity", choices=("cn", "serial", "san"), default="cn",
                   help="which certificate field names the device (default cn)")
    p.add_argument("--proxy", type=host_port, metavar="HOST:PORT",
                   help="also serve the HTTP front: GET /devices, /devices/<id>/… (it acts with each device's "
                        "uplink UserLevel: loopback only unless --proxy-allow-remote)")
    p.add_argument("--proxy-allow-remote", action="store_true",
                   help="let --proxy bind a non-loopback address (put your own authentication in front)")
    p.add_argument("--device-domain", metavar="DOMAIN",
                   help="the proxy also routes Host: <device id>.DOMAIN to that device, paths unchanged, so a stock "
                        "ONVIF client can use http://<device id>.DOMAIN:PORT (give DOMAIN a wildcard DNS record)")
    p.add_argument("--device-ports", metavar="START-END",
                   help="also give each connected device a port of its own in this range (at most 4096 ports), on "
                        "the proxy's host: every request there goes to that device, paths unchanged; the port "
                        "derives from the device id and is kept in --device-ports-file (with --nats: in NATS, and every node "
                        "opens every device's port); GET /devices lists it")
    p.add_argument("--device-ports-file", type=Path, metavar="FILE",
                   help="where the device ports are kept (needed with --device-ports without --nats; created 0600): a port, once "
                        "a device's, never goes to another device unless freed with 'cloud ports release'")
    p.add_argument("--rtsp", type=host_port, metavar="HOST:PORT",
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
    p.add_argument("--proxy-protocol-from", action="append", default=[], metavar="CIDR",
                   help="the balancer's address(es): connections from there must open with a PROXY protocol v2 "
                        "header naming the device's address (repeatable; others speak TLS at once)")
    g = p.add_argument_group("cluster (needs the 'cluster' extra: pip install iec62676-2-33[cluster])")
    g.add_argument("--nats", metavar="nats://HOST:PORT", help="join a cluster of cloud nodes through this NATS "
                   "server (JetStream enabled)")
    g.add_argument("--node-id", metavar="N", help="this node's unique name in the cluster (letters, digits, - _)")
    g.add_argument("--internal", metavar="HOST:PORT",
                   help="listen here for requests other nodes relay (HTTP/2 over mutual TLS)")
    g.add_argument("--internal-advertise", metavar="HOST:PORT",
                   help="the address other nodes use for --internal (default: --internal with its bound port)")
    g.add_argument("--internal-cert", type=Path, metavar="CERT.pem",
                   help="this node's certificate (serverAuth and clientAuth, issued by --internal-ca)")
    g.add_argument("--internal-key", type=Path, metavar="KEY.pem")
    g.add_argument("--internal-ca", type=Path, metavar="CA.pem", help="the CA that issues node certificates")
    g.add_argument("--cluster-ttl", type=seconds, default=15.0, metavar="SECONDS",
                   help="a node that stops its heartbeat drops out of the registry after this (default 15)")
    p.set_defaults(handler=serve, log_default=logging.INFO)  # devices connecting, refused and why
    d = csub.add_parser("devices", help="list the devices of a cluster (from its NATS registry) as JSON")
    d.add_argument("--nats", required=True, metavar="nats://HOST:PORT")
    d.set_defaults(handler=devices)
    ports = csub.add_parser("ports", help="the device ports kept in a --device-ports-file or a cluster's NATS")
    psub = ports.add_subparsers(dest="ports_command", required=True, parser_class=type(cloud))
    r = psub.add_parser("release", help="free a device's port for another device (with the cloud stopped; in a "
                        "cluster, with the device disconnected)")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--file", type=Path, metavar="FILE", help="the cloud's --device-ports-file")
    where.add_argument("--nats", metavar="nats://HOST:PORT", help="the cluster's NATS server")
    r.add_argument("--device", required=True, metavar="ID", help="the device id whose port is freed")
    r.set_defaults(handler=release_port)
    add_enroll_parser(csub)


def _cluster(args: argparse.Namespace) -> Any:
    """The cluster options of ``--nats`` and its companions, or ``None`` for the single node."""
    from ..errors import ConfigurationError

    needed = {"--node-id": args.node_id, "--internal": args.internal, "--internal-cert": args.internal_cert,
              "--internal-key": args.internal_key, "--internal-ca": args.internal_ca}
    if args.nats is None:
        given = [flag for flag, value in needed.items() if value is not None]
        if given:
            raise ConfigurationError(f"{', '.join(given)} only make sense with --nats")
        return None
    missing = [flag for flag, value in needed.items() if value is None]
    if missing:
        raise ConfigurationError(f"--nats needs {', '.join(missing)} too")
    from ..cluster.node import ClusterOptions

    return ClusterOptions(nats=args.nats, node_id=args.node_id, internal=args.internal, cert=args.internal_cert,
                          key=args.internal_key, ca=args.internal_ca, ttl=args.cluster_ttl,
                          advertise=args.internal_advertise)


async def _nats(url: str) -> Any:
    """A NATS connection for one command: two attempts, no reconnects, nothing logged; one line (the last
    attempt's error, the URL without its password) when it cannot be made."""
    import nats

    from ..errors import ConfigurationError

    failed: list[Exception] = []

    async def note(exc: Exception) -> None:  # instead of the client's ERROR log with a traceback per attempt
        failed.append(exc)

    try:
        return await nats.connect(url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=1,
                                  error_cb=note)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        why = failed[-1] if failed else exc
        raise ConfigurationError(f"--nats {shown_url(url)}: cannot connect ({str(why) or type(why).__name__})") from None


def devices(args: argparse.Namespace) -> int:
    """``iec62676 cloud devices --nats URL``: the cluster's devices, each once, as JSON."""
    import json

    from ..cluster.registry import read_registry

    async def main() -> list[dict[str, object]]:
        nc = await _nats(args.nats)
        try:
            return [{"id": r.id, "node": r.node, "peer": r.peer, "auth_mode": r.auth_mode,
                     "connected_since": r.connected_since} for r in await read_registry(nc)]
        finally:
            await nc.close()

    print(json.dumps(asyncio.run(main()), indent=2))
    return 0


def release_port(args: argparse.Namespace) -> int:
    """``iec62676 cloud ports release --file FILE | --nats URL --device ID``."""
    if args.nats is None:
        from ..runtime.device_ports import release_port as release

        print(f"device {args.device}: port {release(args.file, args.device)} released")
        return 0
    from ..cluster.port_assignments import release_cluster_ports

    async def main() -> list[int]:
        nc = await _nats(args.nats)
        try:
            return await release_cluster_ports(nc, args.device)
        finally:
            await nc.close()

    released = asyncio.run(main())
    print(f"device {args.device}: port {', '.join(map(str, released))} released")
    return 0


def serve(args: argparse.Namespace) -> int:
    from ..runtime.cloud_server import CloudOptions, run_cloud

    options = CloudOptions(listen=args.listen, cert=args.cert, key=args.key, client_cas=args.client_ca,
                           identity=args.identity, proxy=args.proxy, proxy_allow_remote=args.proxy_allow_remote,
                           device_domain=args.device_domain, device_ports=args.device_ports,
                           device_ports_file=args.device_ports_file,
                           path=args.path, rtsp=args.rtsp, rtsp_allow_remote=args.rtsp_allow_remote,
                           jwt_issuers=args.jwt_issuer, jwt_audience=args.jwt_audience, jwt_keys=args.jwt_keys,
                           jwt_keys_ca=args.jwt_keys_ca, jwt_identity_claim=args.jwt_identity_claim,
                           proxy_protocol_from=args.proxy_protocol_from, cluster=_cluster(args))

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
