"""``iec62676 conformance device|cloud|demo``: test a third-party device or cloud (TEST-1).

Thin: the cases and the session live in :mod:`iec62676_2_33.conformance`;
``demo`` runs the device cases against the library's own device, started for
the run from :mod:`iec62676_2_33.testing.harness` (CI keeps its reports). One
line per case as it finishes, then the summary; ``--junit`` and ``--html``
write the reports. Exit status 0 only when no case failed (skipped cases do
not count), 1 when one did, 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .options import first_line, http_url_error, seconds


def register(sub: Any) -> None:
    group = sub.add_parser("conformance", help="test a device or a cloud against the standard")
    csub = group.add_subparsers(dest="conformance_command", required=True, parser_class=type(group))
    p = csub.add_parser("device", help="test a device: the tool is the cloud it dials and the client on its "
                        "direct address")
    p.add_argument("--dut", required=True, metavar="URL",
                   help="the device service, e.g. http://192.0.2.10/onvif/device_service")
    p.add_argument("--user", required=True, help="a device user with Administrator rights")
    secret = p.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password", help="the user's password (prefer --password-file)")
    secret.add_argument("--password-file", type=Path, metavar="FILE", help="read the password from the file's "
                        "first line")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="where the tool's cloud listens for the device (port 0: any free one)")
    p.add_argument("--remote-host", metavar="NAME",
                   help="the host name or address the device dials (default: the --listen host)")
    p.add_argument("--cert", type=Path, metavar="CERT.pem", help="the cloud's server certificate (default: made "
                   "for the run by the tool's own CA)")
    p.add_argument("--key", type=Path, metavar="KEY.pem", help="its private key")
    p.add_argument("--ca", type=Path, metavar="DIR", help="a CA folder (ca.pem, ca.key) that certifies the "
                   "device's CSR and issued --cert (default: a CA made for the run)")
    p.add_argument("--identity", default="conformance-dut", metavar="CN",
                   help="the CN of the client certificate the device gets (default conformance-dut)")
    p.add_argument("--dut2", metavar="URL", help="a second instance of the same model (EXT-TWO-DUT-BACKOFF: the two "
                   "must not share one backoff sequence); its certificate's CN is the --identity plus -2")
    p.add_argument("--user2", help="a user of the second instance (default: --user)")
    secret2 = p.add_mutually_exclusive_group()
    secret2.add_argument("--password2", help="its password (default: the first instance's)")
    secret2.add_argument("--password2-file", type=Path, metavar="FILE", help="read it from the file's first line")
    _common(p)
    p.set_defaults(handler=device_command)

    d = csub.add_parser("demo", help="run the device cases against the library's own device, started for the run "
                        "with its default timers (what CI does)")
    d.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="the folder that receives junit.xml and report.html")
    d.add_argument("--full", action="store_true", help="include the long cases (about two minutes more)")
    d.set_defaults(handler=demo_command)

    c = csub.add_parser("cloud", help="test a cloud: the tool is the device that dials it")
    c.add_argument("--cloud", required=True, metavar="URL", help="the uplink address, e.g. https://cloud:8443/uplink "
                   "(wss://…: every case dials with the WebSocket handshake)")
    c.add_argument("--cert", type=Path, metavar="CERT.pem",
                   help="the device certificate the cloud accepts (mTLS); optional with an access-token source")
    c.add_argument("--key", type=Path, metavar="KEY.pem", help="its private key")
    c.add_argument("--token-file", type=Path, metavar="FILE", help="an access token the cloud accepts (first line)")
    c.add_argument("--token-server", metavar="URL", help="an authorization server to get the token from "
                   "(client credentials; the token endpoint, RFC 8414 metadata or the issuer)")
    c.add_argument("--client-id", help="the OAuth client ID at --token-server")
    c.add_argument("--client-secret-file", type=Path, metavar="FILE", help="its client secret (first line)")
    c.add_argument("--token-ca", type=Path, metavar="CA.pem",
                   help="trust anchor(s) for --token-server's certificate (default: the system store)")
    c.add_argument("--ca", required=True, type=Path, metavar="CA.pem",
                   help="the trust anchor(s) for the cloud's server certificate")
    c.add_argument("--wait-request", type=seconds, default=10.0, metavar="SECONDS",
                   help="how long to wait for the cloud to send a request over the uplink (default 10)")
    _common(c)
    c.set_defaults(handler=cloud_command)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", nargs="+", default=[], metavar="ID", help="run only these cases")
    p.add_argument("--skip-long", action="store_true", help="leave out the long cases (reported as skipped)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")


#: Width of the case ID column (the longest ID, EXT-TWO-DUT-BACKOFF, has 19 characters).
_ID_WIDTH = 20


def _printable(text: str) -> str:
    """``text`` with what a terminal would act on (escape sequences, other control characters) shown as
    Python escapes: a message can quote what the product under test sent."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_result(result: Any) -> None:
    print(f"{result.verdict.value.upper():4}  {result.case.id:<{_ID_WIDTH}} {result.case.title}"
          + ("" if result.verdict.value == "pass" else f"\n      {_printable(result.message)}"), flush=True)


def _list(registry: Any) -> int:
    for case in registry.cases.values():
        print(f"{case.id:<{_ID_WIDTH}} {'(long) ' if case.long else ''}{case.title} [{', '.join(case.requirements)}]")
    return 0


def _finish(report: Any, args: argparse.Namespace) -> int:
    from ..conformance import write_reports

    write_reports(report, junit=args.junit, html_file=args.html)
    print(f"{'PASSED' if report.passed else 'FAILED'}: {report.summary()}")
    return 0 if report.passed else 1


def device_command(args: argparse.Namespace) -> int:
    from ..conformance import DEVICE_CASES, DeviceSession, DeviceTarget, run

    if args.list:
        return _list(DEVICE_CASES)
    DEVICE_CASES.select(args.only)  # an unknown ID is a usage error before anything starts
    for flag, url in (("--dut", args.dut), ("--dut2", args.dut2)):
        why = None if url is None else http_url_error(url)
        if why is not None:
            raise ConfigurationError(f"argument {flag}: {why}")
    password = args.password if args.password is not None else first_line(args.password_file, "--password-file")
    password2 = args.password2 if args.password2_file is None else first_line(args.password2_file, "--password2-file")
    if args.dut2 is not None and args.dut2 == args.dut:
        raise ConfigurationError("--dut2 names the same device service as --dut: give a second instance")
    target = DeviceTarget(dut=args.dut, username=args.user, password=password, listen=args.listen,
                          remote_host=args.remote_host, cert=args.cert, key=args.key, ca=args.ca,
                          identity=args.identity, dut2=args.dut2, username2=args.user2, password2=password2)
    with DeviceSession(target) as session:
        print(f"testing {args.dut}; the tool's cloud listens on {session.main.url()}", flush=True)
        report = run(DEVICE_CASES, session, target=args.dut, only=args.only, skip_long=args.skip_long,
                     on_result=_print_result)
    return _finish(report, args)


def demo_command(args: argparse.Namespace) -> int:
    import tempfile

    from ..conformance import DEVICE_CASES, DeviceSession, DeviceTarget, run
    from ..errors import Iec62676Error
    from ..testing.harness import RunningDevice, seed_device

    with tempfile.TemporaryDirectory(prefix="iec62676-demo-") as tmp:
        data = Path(tmp) / "device"
        seed_device(data)
        device = RunningDevice(data, settings=None)
        try:
            if device.device_service is None:
                raise Iec62676Error("the library's own device started without its direct port")
            target = DeviceTarget(dut=device.device_service, username=device.username, password=device.password)
            with DeviceSession(target) as session:
                print(f"testing the library's own device at {device.device_service}; the tool's cloud listens on "
                      f"{session.main.url()}", flush=True)
                report = run(DEVICE_CASES, session, target=f"iec62676 device serve (this library, {device.url})",
                             skip_long=not args.full, on_result=_print_result)
        finally:
            device.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    args.junit, args.html = args.out / "junit.xml", args.out / "report.html"
    return _finish(report, args)


def cloud_command(args: argparse.Namespace) -> int:
    from ..conformance import run
    from ..conformance.cloud_cases import CLOUD_CASES, CloudSession, CloudTarget

    if args.list:
        return _list(CLOUD_CASES)
    CLOUD_CASES.select(args.only)
    token = None
    if args.token_file is not None or args.token_server is not None:
        from ..conformance.tokensource import TokenSource

        token = TokenSource(token=None if args.token_file is None else first_line(args.token_file, "--token-file"),
                            server_uri=args.token_server, client_id=args.client_id,
                            client_secret=None if args.client_secret_file is None else
                            first_line(args.client_secret_file, "--client-secret-file"), ca=args.token_ca)
    target = CloudTarget(url=args.cloud, cert=args.cert, key=args.key, ca=args.ca, wait_request=args.wait_request,
                         token=token)
    session = CloudSession(target)
    print(f"testing the cloud at {args.cloud}", flush=True)
    report = run(CLOUD_CASES, session, target=args.cloud, only=args.only, skip_long=args.skip_long,
                 on_result=_print_result)
    return _finish(report, args)
