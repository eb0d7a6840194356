"""Conformance kit: one run against a device under test (TEST-1, UPL-1, UPL-11, UPL-13, PROV-1, CFG-2 … CFG-4).

The tool is two things at once, as the draft ONVIF uplink test specification
describes: the *client* on the device's direct address (its device, Security
and uplink services, WS-Security digest with the device's clock) and the
*cloud* the device dials (:class:`~.toolcloud.ToolCloud`). It configures the
device's uplink itself: the enrolment of :mod:`iec62676_2_33.enroll` makes the
device generate a key, certifies its CSR with the tool's CA (or the one the
engineer gives), installs that CA as trust anchor with a validation policy
and calls SetUplink; every later SetUplink reuses those objects. The draft
predates the MissingAuthentication fault (its cases configure no
CertificateID); here every uplink names the enrolled certificate.

Every exchange on the device's direct address -- the hand-written SOAP
requests and the zeep clients alike -- is bounded as a whole by
:mod:`iec62676_2_33.bounded_http`: one deadline (the target's ``timeout``) for
the whole answer and at most :data:`~iec62676_2_33.client.MAX_ANSWER` bytes,
so a device that trickles or floods its answer ends the case with a one-line
failure instead of holding the run. So is a request through the uplink
(:meth:`DeviceSession.tunnel`: its stream is reset), and the enrolment's
(:func:`~iec62676_2_33.enroll.enroll`).

Requests through the uplink carry ``X-Forwarded-Host`` and
``X-Forwarded-Proto`` naming the tool's cloud, as a cloud's HTTP front would,
so the device can build addresses (stream URIs) that lead back through it.

At the end the tool deletes the uplink configurations it made, so the device
is left as it was found (apart from the keystore objects, which a second run
reuses).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit

import zeep
from cryptography.hazmat.primitives import serialization

from ..bounded_http import BoundedTransport, ExchangeTimeout, exchange_client
from ..bounded_http import post as bounded_post
from ..client import MAX_ANSWER, SETTINGS, UplinkClient, mapped_errors, username_token
from ..enroll import EnrollmentResult, clock_offset, enroll
from ..errors import ConfigurationError, Iec62676Error
from ..namespaces import SOAP12_CONTENT_TYPE, TDS, TUP
from ..pki import CertKey, load_ca_dir, load_cert_pem, load_key_pem, make_ca, make_leaf
from ..runtime.cloud import HttpResponse
from ..runtime.http_server import parse_listen
from ..schemas import wsdl_path
from ..services.security import TAS
from ..transport.contexts import server_context
from ..uplinkconfig import UplinkConfiguration
from . import soapcheck
from .toolcloud import Endpoint, ToolCloud
from .wire import Connection

if TYPE_CHECKING:
    from .toolauth import TokenWorld

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How often conditions are polled.
POLL = 0.05
#: Seconds a new uplink must stay up before a case uses it.
SETTLE = 0.25


@dataclass
class DeviceTarget:
    """What to test and how (the ``conformance device`` options)."""

    dut: str  # the device service URL, e.g. http://192.0.2.7/onvif/device_service
    username: str
    password: str
    listen: str = "127.0.0.1:0"  # where the tool's cloud listens
    remote_host: str | None = None  # the host name the device dials (default: the listen host)
    cert: Path | None = None  # the cloud's server certificate (PEM) ...
    key: Path | None = None  # ... and key
    ca: Path | None = None  # a CA directory (ca.pem + ca.key) that certifies the device's CSR
    identity: str = "conformance-dut"  # the CN the device's client certificate gets
    silence_rule: float = 30.0  # UPL-8: "more than 30 s"; shorter only to test the tool itself
    silence_grace: float = 10.0  # how much later than the rule the device may close
    connect_timeout: float = 30.0
    notice_timeout: float = 10.0  # how soon the device must notice a closed uplink or a DeleteUplink
    backoff_window: float = 150.0
    timeout: float = 10.0
    dut2: str | None = None  # a second instance of the same model (EXT-TWO-DUT-BACKOFF) ...
    username2: str | None = None  # ... and its credentials (default: the first instance's)
    password2: str | None = None


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll until ``condition()`` is truthy; :class:`TimeoutError` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


class ToolPki:
    """The tool's CA, its server certificate, and the bad certificates the UPL-11 case offers."""

    def __init__(self, host: str, target: DeviceTarget) -> None:
        self.host = host
        if target.ca is not None:
            self.ca = load_ca_dir(target.ca)
        elif target.cert is not None:
            raise ConfigurationError("--cert needs --ca: the CA directory that also certifies the device's CSR")
        else:
            self.ca = make_ca("iec62676 conformance CA")
        if target.cert is not None:
            if target.key is None:
                raise ConfigurationError("--cert needs --key")
            self.server_pem = load_cert_pem(target.cert).public_bytes(serialization.Encoding.PEM)
            self.server_key_pem = target.key.read_bytes()
            load_key_pem(target.key)  # a clear error now rather than at the first handshake
        else:
            leaf = make_leaf(self.ca, "conformance cloud", kind="server", sans=[host])
            self.server_pem, self.server_key_pem = leaf.cert_pem(), leaf.key_pem()

    def context(self, leaf: CertKey | None = None, *, require_client_cert: bool = True) -> Any:
        """A server context: the given certificate (default: the cloud's), device certificates required
        (unless ``require_client_cert`` is false: the access-token endpoint, UPL-14)."""
        cert, key = (self.server_pem, self.server_key_pem) if leaf is None else (leaf.cert_pem(), leaf.key_pem())
        return server_context(cert, key, client_ca_pems=[self.ca.cert_pem()], require_client_cert=require_client_cert)

    def bad_certificates(self) -> dict[str, CertKey]:
        """UPL-11: a wrong name, an untrusted issuer, an expired certificate (each otherwise valid)."""
        now = dt.datetime.now(dt.UTC)
        stranger = make_ca("not the device's trust anchor")
        return {
            "wrong name": make_leaf(self.ca, "conformance cloud", kind="server", sans=["not-the-cloud.invalid"]),
            "untrusted CA": make_leaf(stranger, "conformance cloud", kind="server", sans=[self.host]),
            "expired": make_leaf(self.ca, "conformance cloud", kind="server", sans=[self.host],
                                 not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)),
        }


class DeviceSession:
    """The state of one ``conformance device`` run; a context manager."""

    def __init__(self, target: DeviceTarget) -> None:
        self.target = target
        host, port = parse_listen(target.listen)
        url_host = target.remote_host or host
        if url_host in ("0.0.0.0", "::", ""):
            raise ConfigurationError(f"--listen {target.listen} is a wildcard address: give --remote-host, the "
                                     "name or address the device dials")
        self.pki = ToolPki(url_host, target)
        self.cloud = ToolCloud(host, url_host)
        try:
            self.main = self.cloud.add_endpoint("main", self.pki.context(), port=port)
        except BaseException:
            self.cloud.stop()
            raise
        self.created_addresses: set[str] = set()
        self._configured: dict[str, tuple[str, ...]] = {}  # address -> UserLevel the tool last set
        self._enrolment: EnrollmentResult | None = None
        self._xaddrs: dict[str, str] | None = None
        self._uplink: UplinkClient | None = None
        self._security: Any = None
        self._offset: dt.timedelta | None = None
        self._http = exchange_client(target.timeout)
        self._token_world: TokenWorld | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._uplink is not None:
                for address in sorted(self.created_addresses):
                    try:
                        self._uplink.delete_uplink(address)
                    except Iec62676Error as exc:  # already gone, or the device is gone: nothing to undo
                        log.info("could not delete the uplink %s the run made: %s", address, exc)
        finally:
            self._http.close()
            self.cloud.stop()

    # -- the device's direct address ---------------------------------------------
    def post(self, url: str, namespace: str, operation: str, inner: str = "") -> soapcheck.SoapAnswer:
        """A SOAP request without authentication (PRE_AUTH operations) on the direct address: the whole answer
        within the target's timeout and :data:`~..client.MAX_ANSWER` bytes."""
        body = soapcheck.envelope(namespace, operation, inner)
        content_type = f'{SOAP12_CONTENT_TYPE}; action="{namespace}/{operation}"'
        answer = bounded_post(self._http, url, {"content-type": content_type}, body, timeout=self.target.timeout,
                              max_bytes=MAX_ANSWER)
        return soapcheck.parse(answer.status, answer.body)

    def get_services(self, include_capability: bool) -> soapcheck.SoapAnswer:
        flag = "true" if include_capability else "false"
        return self.post(self.target.dut, TDS, "GetServices", f"<m:IncludeCapability>{flag}</m:IncludeCapability>")

    def xaddrs(self) -> dict[str, str]:
        """Namespace → XAddr from GetServices (IncludeCapability false)."""
        if self._xaddrs is None:
            answer = self.get_services(False)
            if answer.fault is not None or answer.body is None:
                raise ConfigurationError(f"GetServices at {self.target.dut} failed: "
                                         f"{answer.fault.chain() if answer.fault else answer.text[:200]}")
            found: dict[str, str] = {}
            for service in answer.body:
                ns, xaddr = service.find(f"{{{TDS}}}Namespace"), service.find(f"{{{TDS}}}XAddr")
                if ns is not None and xaddr is not None and ns.text and xaddr.text:
                    found[ns.text.strip()] = xaddr.text.strip()
            self._xaddrs = found
        return self._xaddrs

    def time_offset(self) -> dt.timedelta:
        if self._offset is None:
            transport = BoundedTransport(self.target.timeout, max_bytes=MAX_ANSWER)
            client = zeep.Client(str(wsdl_path("devicemgmt")), settings=SETTINGS, transport=transport)
            device = client.create_service(f"{{{TDS}}}DeviceBinding", self.target.dut)
            with mapped_errors(self.target.dut):
                now = device.GetSystemDateAndTime()
            self._offset = clock_offset(now.UTCDateTime, dt.datetime.now(dt.UTC))
        return self._offset

    def uplink(self) -> UplinkClient:
        """The uplink service on the direct address (WS-Security digest, SEC-2)."""
        if self._uplink is None:
            address = self.xaddrs().get(TUP)
            if address is None:
                raise ConfigurationError(f"the device at {self.target.dut} lists no uplink service ({TUP})")
            self._uplink = UplinkClient(address, username=self.target.username, password=self.target.password,
                                        time_offset=self.time_offset(), timeout=self.target.timeout)
        return self._uplink

    def security(self) -> Any:
        """The Security (keystore) service on the direct address, or None when the device has none."""
        if self._security is None:
            address = self.xaddrs().get(TAS)
            if address is None:
                return None
            transport = BoundedTransport(self.target.timeout, max_bytes=MAX_ANSWER)
            client = zeep.Client(str(wsdl_path("security")), settings=SETTINGS, transport=transport,
                                 wsse=username_token(self.target.username, self.target.password, self.time_offset()))
            self._security = client.create_service(f"{{{TAS}}}SecurityBinding", address)
        return self._security

    # -- configuring the uplink ----------------------------------------------------
    def enrolment(self) -> EnrollmentResult:
        """The device's client certificate and trust policy for the tool's cloud (made once per run)."""
        if self._enrolment is None:
            address = self.main.url()
            self._enrolment = enroll(self.target.dut, username=self.target.username, password=self.target.password,
                                     ca=self.pki.ca, remote_address=address, identity=self.target.identity,
                                     timeout=self.target.timeout)
            self.created_addresses.add(address)
            self._configured[address] = ("Administrator",)
        return self._enrolment

    def token_world(self) -> TokenWorld:
        """The tool's authorization server and its token endpoint (started once per run, UPL-14)."""
        if self._token_world is None:
            from .toolauth import start_token_world

            self._token_world = start_token_world(self.cloud, self.pki, self.target.identity)
        return self._token_world

    def configuration(self, address: str, user_level: Sequence[str] = ("Administrator",)) -> UplinkConfiguration:
        cred = self.enrolment()
        return UplinkConfiguration(remote_address=address, user_level=tuple(user_level),
                                   certificate_id=cred.certificate_id,
                                   cert_path_validation_policy_id=cred.policy_id)

    def set_uplink(self, address: str, user_level: Sequence[str] = ("Administrator",)) -> None:
        self.uplink().set_uplink(self.configuration(address, user_level))
        self.created_addresses.add(address)
        self._configured[address] = tuple(user_level)

    def delete_uplink(self, address: str) -> None:
        self.uplink().delete_uplink(address)
        self.created_addresses.discard(address)
        self._configured.pop(address, None)

    def clear_uplinks(self) -> list[str]:
        """Annex A.2 of the draft: delete every configuration; returns the addresses deleted."""
        addresses = [cfg.remote_address for cfg in self.uplink().get_uplinks()]
        for address in addresses:
            self.delete_uplink(address)
        return addresses

    def status(self, address: str) -> tuple[str, str | None] | None:
        """(Status, Error) of one configuration from GetUplinks, None when it is not listed."""
        for cfg in self.uplink().get_uplinks():
            if cfg.remote_address == address:
                return cfg.status, cfg.error
        return None

    # -- the uplink -----------------------------------------------------------------
    def connect(self, endpoint: Endpoint | None = None, user_level: Sequence[str] = ("Administrator",),
                path: str = "/uplink") -> Connection:
        """The device's live uplink to ``endpoint`` with ``user_level``: SetUplink and a new connection
        unless the tool configured exactly that already (then the live connection, waited for)."""
        endpoint = endpoint or self.main
        address = endpoint.url(path)
        self.enrolment()  # its own SetUplink comes first, so "since" below follows it
        if self._configured.get(address) == tuple(user_level):
            return self.wait_connected(endpoint, 0.0)
        self.uplink()  # its first use asks the device's time: a round trip that must not widen "since"
        # "since" before SetUplink: the device may dial while its answer is still on the way back. A connection
        # up now serves the configuration being replaced: the device closes it, however late that happens.
        since = time.monotonic()
        replaced = [conn for conn in list(endpoint.connections) if conn.eof_at is None and conn.closed_at is None]
        self.set_uplink(address, user_level)
        return self.wait_connected(endpoint, since, replaced=replaced)

    def wait_connected(self, endpoint: Endpoint, since: float, timeout: float | None = None,
                       identity: str | None = None, replaced: Sequence[Connection] = ()) -> Connection:
        """The latest connection opened after ``since``, not one of ``replaced``, that got its 101, is the device's
        registered channel (as ``identity``, default the enrolled certificate's) and stayed up for :data:`SETTLE`
        seconds (a dial the device started before a reconfiguration may still complete, and is then closed at
        once)."""
        identity = identity or self.enrolment().device_id
        gone = {id(conn) for conn in replaced}

        def up() -> Connection | None:
            channel = self.cloud.channel(endpoint, identity)
            for conn in reversed(list(endpoint.connections)):
                if (conn.opened_at >= since and id(conn) not in gone and conn.switched_at is not None
                        and conn.eof_at is None and conn.closed_at is None and channel is not None
                        and channel.info.peer == conn.peer):
                    return conn if time.monotonic() - conn.switched_at >= SETTLE else None
            return None

        return wait_for(up, timeout or self.target.connect_timeout,
                        f"the device to connect to {endpoint.url()} as {identity!r}")

    def wait_closed(self, conn: Connection, timeout: float) -> float:
        """When the device's side of ``conn`` ended (its end of stream or a reset)."""
        wait_for(lambda: conn.eof_at is not None or conn.closed_at is not None, timeout,
                 "the device to close the uplink")
        return conn.eof_at or conn.closed_at or time.monotonic()

    def tunnel(self, endpoint: Endpoint, xaddr: str, namespace: str, operation: str, inner: str = "",
               timeout: float | None = None, identity: str | None = None) -> soapcheck.SoapAnswer:
        """A SOAP request through the uplink of ``identity`` (default the enrolled certificate's); no
        authentication: the UserLevel applies, UPL-12. The whole answer within ``timeout`` (default the
        target's) and :data:`~..client.MAX_ANSWER` bytes."""
        body = soapcheck.envelope(namespace, operation, inner)
        parts = urlsplit(xaddr)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        assert endpoint.listener is not None
        listener = endpoint.listener
        identity = identity or self.enrolment().device_id
        wait = timeout or self.target.timeout

        fields = soapcheck.headers(namespace, operation, len(body))
        fields += [("x-forwarded-host", urlsplit(endpoint.url()).netloc), ("x-forwarded-proto", "https")]

        async def call() -> HttpResponse:  # request(): the whole answer within the deadline; and the byte budget
            try:
                return await listener.request(identity, "POST", path, fields, body, timeout=wait, max_body=MAX_ANSWER)
            except TimeoutError:
                raise ExchangeTimeout(f"no whole answer through the uplink within {wait:g} s") from None

        response = self.cloud.call(call, wait + 5)
        return soapcheck.parse(response.status, response.body)
