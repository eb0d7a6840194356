"""``iec62676 cloud enroll``: configure a device's uplink remotely over ONVIF (PROV-1, UPL-13). Thin: the
flow is :func:`iec62676_2_33.enroll.enroll`."""

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
                        "anchor for the cloud's server certificate")
    p.add_argument("--remote", required=True, metavar="URL", help="the uplink address, e.g. https://cloud:8443/uplink")
    p.add_argument("--user-level", action="append", metavar="LEVEL",
                   help="UserLevel of the uplink (repeatable; default Administrator)")
    p.add_argument("--device-id", metavar="CN",
                   help="the identity the cloud knows the device by (default: its SerialNumber)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="with --cloud-proxy: wait this long for the device to show on the cloud")
    p.add_argument("--cloud-proxy", metavar="URL", help="the cloud's HTTP front (GET /devices), for --wait")
    p.set_defaults(handler=enroll_command)


def enroll_command(args: argparse.Namespace) -> int:
    from ..enroll import enroll
    from ..errors import ConfigurationError
    from ..pki import load_ca_dir

    if args.wait > 0 and not args.cloud_proxy:
        raise ConfigurationError("--wait needs --cloud-proxy (the cloud's GET /devices tells when the device is on)")
    password = args.password
    if password is None:
        lines = args.password_file.read_text(encoding="utf-8").splitlines()
        password = lines[0] if lines else ""
    result = enroll(args.device, username=args.user, password=password, ca=load_ca_dir(args.ca),
                    remote_address=args.remote, identity=args.device_id,
                    user_level=args.user_level or ["Administrator"], cloud_proxy=args.cloud_proxy, wait=args.wait)
    made = ", ".join(result.created) if result.created else "nothing new (already enrolled)"
    print(f"device {result.device_id} enrolled: uplink {result.remote_address} with certificate "
          f"{result.certificate_id}, policy {result.policy_id}; created {made}")
    if result.online:
        print(f"device {result.device_id} is connected to the cloud")
    return 0
