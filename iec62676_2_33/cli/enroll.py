"""``iec62676 cloud enroll``: configure devices' uplinks remotely over ONVIF (PROV-1, PROV-3, UPL-13, UPL-14).

Thin: the flow is :func:`iec62676_2_33.enroll.enroll`; ``--token-server`` picks
the access-token variant. ``--device`` may be repeated: the devices are enrolled
``--jobs`` at a time (threads: each enrolment mostly waits on its device), a
line per device on stdout as each finishes and a progress bar on stderr
(:mod:`.progress`). A device that fails is one line on stderr; the others go
on, and the command ends with one error line and exit status 2 naming how many
failed. Ctrl-C begins no further device: it waits only for those being enrolled
(each call to a device is bounded), then exits 130. The password and the
client secret come from a flag, a file, an environment variable or a prompt
(:func:`.options.read_secret`); with
``--client-auth tls_client_auth`` there is no secret: the device gets a key and
a certificate from ``--ca`` for the token endpoint's TLS (RFC 8705).
"""

from __future__ import annotations

import argparse
import functools
import sys
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, Iec62676Error
from .options import CLIENT_SECRET_ENV, PASSWORD_ENV, add_secret, http_url, read_secret
from .progress import add_progress, emit, progress_bar

if TYPE_CHECKING:
    from ..enroll import EnrollmentResult

#: Most devices enrolled at the same time (``--jobs``).
MAX_JOBS = 32


def add_parser(csub: Any) -> None:
    """Add ``enroll`` to the ``cloud`` command group."""
    p = csub.add_parser("enroll", help="enrol a device into this cloud over ONVIF: key pair on the device, "
                        "certificate from --ca, trust policy, SetUplink")
    p.add_argument("--device", required=True, action="append", type=http_url, metavar="URL",
                   help="the device service, e.g. http://192.0.2.10/onvif/device_service; repeat for several "
                        "devices (the same user and password on each)")
    p.add_argument("--user", required=True, help="a device user with Administrator rights")
    add_secret(p, "password", PASSWORD_ENV, help_="the user's password")
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
                   help="the identity the cloud knows the device by (default: its SerialNumber); one device only")
    token = p.add_argument_group("access-token variant (instead of a client certificate)")
    token.add_argument("--token-server", metavar="URL",
                       help="the authorization server's RFC 8414 metadata URL or issuer, "
                            "e.g. https://auth.example.com/.well-known/oauth-authorization-server")
    token.add_argument("--client-id", help="the device's client id at the authorization server (one device only)")
    add_secret(p, "client-secret", CLIENT_SECRET_ENV, help_="the client secret of --client-id")
    token.add_argument("--client-auth", default="client_secret_basic",
                       choices=["client_secret_basic", "client_secret_post", "tls_client_auth"],
                       help="how the device authenticates at the token endpoint (default client_secret_basic; "
                            "tls_client_auth: by a certificate from --ca with CN = --device-id or --client-id)")
    token.add_argument("--scope", help="the scope the device requests")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="with --cloud-proxy: wait this long for the device to show on the cloud")
    p.add_argument("--cloud-proxy", type=http_url, metavar="URL", help="the cloud's HTTP front (GET /devices), for --wait")
    p.add_argument("--jobs", type=int, default=4, metavar="N",
                   help=f"enrol up to N of the --device list at the same time (1 to {MAX_JOBS}, default 4)")
    add_progress(p)
    p.set_defaults(handler=enroll_command)


def enroll_command(args: argparse.Namespace) -> int:
    from ..enroll import TokenClient, enroll
    from ..pki import load_ca_dir

    devices: list[str] = list(dict.fromkeys(args.device))
    if args.wait > 0 and not args.cloud_proxy:
        raise ConfigurationError("--wait needs --cloud-proxy (the cloud's GET /devices tells when the device is on)")
    if not 1 <= args.jobs <= MAX_JOBS:
        raise ConfigurationError(f"--jobs {args.jobs}: give 1 to {MAX_JOBS}")
    if len(devices) > 1 and (args.device_id or args.token_server):
        raise ConfigurationError("--device-id and --token-server name one device's identity: give one --device")
    token = None
    if args.token_server is not None:
        if not args.client_id:
            raise ConfigurationError("--token-server needs --client-id (and the client secret)")
        secret = None
        if args.client_auth != "tls_client_auth":
            secret = read_secret(args, "client-secret", CLIENT_SECRET_ENV) or ""
        elif args.client_secret is not None or args.client_secret_file is not None:
            raise ConfigurationError("--client-auth tls_client_auth sends no client secret: the device's "
                                     "certificate authenticates it")
        token = TokenClient(server_uri=args.token_server, client_id=args.client_id, client_secret=secret,
                            client_auth=args.client_auth, scope=args.scope)
    elif args.client_id or args.client_secret or args.client_secret_file or args.scope:
        raise ConfigurationError("--client-id, --client-secret(-file) and --scope belong to --token-server")
    password = read_secret(args, "password", PASSWORD_ENV) or ""
    ca = load_ca_dir(args.ca)
    job = functools.partial(enroll, username=args.user, password=password, ca=ca, remote_address=args.remote,
                            identity=args.device_id, token=token, curve=args.curve,
                            user_level=args.user_level or ["Administrator"], cloud_proxy=args.cloud_proxy,
                            wait=args.wait)
    if len(devices) == 1:
        print(_report(job(devices[0])), end="")
        return 0
    failed = 0
    with progress_bar(args, desc="enrolled", unit=" device", total=len(devices)) as bar, \
            ThreadPoolExecutor(max_workers=min(args.jobs, len(devices)), thread_name_prefix="enroll") as pool:
        futures: dict[Future[EnrollmentResult], str] = {pool.submit(job, url): url for url in devices}
        try:
            for future in as_completed(futures):
                try:
                    emit(bar, _report(future.result()), sys.stdout)
                except (Iec62676Error, OSError) as exc:  # what main() would report for one device
                    failed += 1
                    emit(bar, f"iec62676: {futures[future]}: {exc}\n", sys.stderr)
                bar.update(1)
        except KeyboardInterrupt:  # Ctrl-C: the devices not yet begun are not begun; the running ones end
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if failed:
        raise Iec62676Error(f"{failed} of {len(devices)} devices were not enrolled (see above)")
    return 0


def _report(result: EnrollmentResult) -> str:
    made = ", ".join(result.created) if result.created else "nothing new (already enrolled)"
    how = (f"certificate {result.certificate_id}" if result.authorization_server is None
           else f"authorization server {result.authorization_server}")
    text = (f"device {result.device_id} enrolled: uplink {result.remote_address} with {how}, "
            f"policy {result.policy_id}; created {made}\n")
    if result.online:
        text += f"device {result.device_id} is connected to the cloud\n"
    return text
