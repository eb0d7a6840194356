"""``iec62676 cloud enroll``: configure a device's uplink remotely over ONVIF (PROV-1, PROV-3, UPL-13, UPL-14).
Thin: the flow is :func:`iec62676_2_33.enroll.enroll`; ``--token-server`` picks the access-token variant."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(csub: Any) -> None:
    """Add ``enroll`` to the ``cloud`` command group."""
    p = csub.add_parser("enroll", help="enrol a device into this cloud over ONVIF: key pair on the device, "
                        "certificate from --ca, trust policy, SetUplink")
    p.add_argument("--device", required=True, metavar="URL",
                   help="the device service, e.g. http://192.0.2.10/onvif/device_service")
    p.add_argument("--user", required=True, help="a device user with Administrator rights")
    secret = p.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password", help="the user's password (visible to other local users: prefer --password-file)")
    secret.add_argument("--password-file", type=Path, metavar="FILE", help="read the password from the file's first line")
    p.add_argument("--ca", required=True, type=Path, metavar="DIR",
                   help="the cloud's CA folder (ca.pem, ca.key): signs the device certificate and is its trust "
                        "anchor for the cloud's server certificate (and, with --token-server, for the "
                        "authorization server's)")
    p.add_argument("--remote", required=True, metavar="URL", help="the uplink address, e.g. https://cloud:8443/uplink")
    p.add_argument("--user-level", action="append", metavar="LEVEL",
                   help="UserLevel of the uplink (repeatable; default Administrator)")
    p.add_argument("--curve", metavar="NAME", help="have the device generate an ECC key on this curve (e.g. "
                   "secp256r1, as its KeystoreCapabilities EllipticCurves list) instead of an RSA 2048 key")
    p.add_argument("--device-id", metavar="CN",
                   help="the identity the cloud knows the device by (default: its SerialNumber)")
    token = p.add_argument_group("access-token variant (instead of a client certificate)")
    token.add_argument("--token-server", metavar="URL",
                       help="the authorization server's RFC 8414 metadata URL or issuer, "
                            "e.g. https://auth.example.com/.well-known/oauth-authorization-server")
    token.add_argument("--client-id", help="the device's client id at the authorization server")
    token.add_argument("--client-secret", help="its client secret (prefer --client-secret-file)")
    token.add_argument("--client-secret-file", type=Path, metavar="FILE", help="read the secret from the file's "
                       "first line")
    token.add_argument("--client-auth", default="client_secret_basic",
                       choices=["client_secret_basic", "client_secret_post"],
                       help="how the device authenticates at the token endpoint (default client_secret_basic)")
    token.add_argument("--scope", help="the scope the device requests")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="with --cloud-proxy: wait this long for the device to show on the cloud")
    p.add_argument("--cloud-proxy", metavar="URL", help="the cloud's HTTP front (GET /devices), for --wait")
    p.set_defaults(handler=enroll_command)


def enroll_command(args: argparse.Namespace) -> int:
    from ..enroll import TokenClient, enroll
    from ..errors import ConfigurationError
    from ..pki import load_ca_dir

    if args.wait > 0 and not args.cloud_proxy:
        raise ConfigurationError("--wait needs --cloud-proxy (the cloud's GET /devices tells when the device is on)")
    password = args.password if args.password is not None else _first_line(args.password_file)
    token = None
    if args.token_server is not None:
        if not args.client_id or (args.client_secret is None) == (args.client_secret_file is None):
            raise ConfigurationError("--token-server needs --client-id and one of --client-secret, "
                                     "--client-secret-file")
        secret = args.client_secret if args.client_secret is not None else _first_line(args.client_secret_file)
        token = TokenClient(server_uri=args.token_server, client_id=args.client_id, client_secret=secret,
                            client_auth=args.client_auth, scope=args.scope)
    elif args.client_id or args.client_secret or args.client_secret_file or args.scope:
        raise ConfigurationError("--client-id, --client-secret(-file) and --scope belong to --token-server")
    result = enroll(args.device, username=args.user, password=password, ca=load_ca_dir(args.ca),
                    remote_address=args.remote, identity=args.device_id, token=token, curve=args.curve,
                    user_level=args.user_level or ["Administrator"], cloud_proxy=args.cloud_proxy, wait=args.wait)
    made = ", ".join(result.created) if result.created else "nothing new (already enrolled)"
    how = (f"certificate {result.certificate_id}" if result.authorization_server is None
           else f"authorization server {result.authorization_server}")
    print(f"device {result.device_id} enrolled: uplink {result.remote_address} with {how}, "
          f"policy {result.policy_id}; created {made}")
    if result.online:
        print(f"device {result.device_id} is connected to the cloud")
    return 0


def _first_line(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0] if lines else ""
