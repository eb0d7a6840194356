"""Layer 5: the default prefix of a lower system — its Annex A device ID (ADR-4, ANX-A-1 … ANX-A-5).

Theory of operation
-------------------
Clause 6 lets a VSS choose the prefix of a lower system's remote tokens;
Annex A proposes the 20-digit device ID, unique in the whole hierarchy, so
that every level keeps the prefix the device already has. ``vss lower add``
without ``--prefix`` therefore takes the lower system's device ID, from where
the system announces it:

* **Reached by URL**: the ``SerialNumber`` of ``GetDeviceInformation`` (the
  ONVIF field that identifies the unit; ``device-info.json``'s
  ``serial_number`` on this project's devices and VSSs), asked with the
  account the VSS will use, within ``timeout`` seconds for the whole answer
  (not only per read: a server that sends a byte now and then is cut off),
  and at most :data:`MAX_ANSWER` bytes of it (:class:`BoundedTransport`).
* **Reached by uplink**: the device ID the cloud listener knows the device by
  (its client certificate's identity). ``cloud enroll`` makes that the
  device's ``SerialNumber`` by default, so both ways give one device the same
  prefix.

Either is the prefix only when it is an Annex A device ID
(:meth:`~..domain.deviceid.DeviceId.parse`: exactly 20 ASCII digits, which is
always a valid prefix). Anything else — no answer in time, a fault, a serial
number of another shape — is one :class:`~..errors.ConfigurationError` line
that asks for ``--prefix``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import requests
import urllib3
import zeep
import zeep.exceptions
from zeep.transports import Transport

from ..client import SETTINGS, mapped_errors, username_token
from ..domain.deviceid import DeviceId, InvalidDeviceId
from ..errors import ConfigurationError, Iec62676Error, TransportError
from ..namespaces import TDS
from ..schemas import wsdl_path
from ..soap.envelope import excerpt
from .lower import check_prefix, check_url

__all__ = ["MAX_ANSWER", "BoundedTransport", "announced_serial_number", "default_prefix"]

#: What a refusal asks the user to do instead.
_ASK = "pass --prefix P"
#: Bytes of a GetDeviceInformation answer read at most (a real one is well under 4 KiB).
MAX_ANSWER = 64 * 1024


class BoundedTransport(Transport):
    """zeep's transport whose answers are read within ``operation_timeout`` in all and up to ``max_bytes``
    (requests' own timeout bounds each read only, and it reads a body whole)."""

    def __init__(self, timeout: float, *, max_bytes: int = MAX_ANSWER) -> None:
        super().__init__(timeout=timeout, operation_timeout=timeout)  # type: ignore[no-untyped-call]
        self.max_bytes = max_bytes

    def post(self, address: str, message: Any, headers: Any) -> requests.Response:
        deadline = time.monotonic() + self.operation_timeout
        response = self.session.post(address, data=message, headers=headers, timeout=self.operation_timeout,
                                     stream=True)
        body = bytearray()
        with response:
            try:  # read1: what has arrived (read(n) would wait for all n bytes, past the deadline)
                while chunk := response.raw.read1(4096, decode_content=True):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise TransportError(f"an answer longer than {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise TransportError(f"no whole answer within {self.operation_timeout:g} s")
            except urllib3.exceptions.HTTPError as exc:
                raise TransportError(f"the answer broke off ({type(exc).__name__})") from None
        response._content = bytes(body)
        return response


def announced_serial_number(url: str, username: str | None, password: str | None, timeout: float) -> str:
    """The ``SerialNumber`` the device service at ``url`` answers to ``GetDeviceInformation``."""
    transport = BoundedTransport(timeout)
    client = zeep.Client(str(wsdl_path("devicemgmt")), settings=SETTINGS, transport=transport,
                         wsse=username_token(username, password, timedelta(0)))
    service = client.create_service(f"{{{TDS}}}DeviceBinding", url)
    try:
        with mapped_errors("GetDeviceInformation"):
            try:
                return str(service.GetDeviceInformation().SerialNumber or "").strip()
            except requests.Timeout:  # zeep's transport (requests): connect or a read over the deadline
                raise TransportError(f"no answer within {timeout:g} s") from None
            except requests.ConnectionError as exc:
                raise TransportError(f"cannot connect ({type(exc).__name__})") from None
    except zeep.exceptions.Error as exc:  # an answer that is not the operation's (mapped_errors took the rest)
        raise TransportError(f"GetDeviceInformation: {type(exc).__name__}") from None


def default_prefix(*, url: str | None = None, username: str | None = None, password: str | None = None,
                   uplink: str | None = None, timeout: float = 10.0) -> str:
    """The Annex A device ID of the lower system at ``url`` (asked) or on ``uplink`` (its device ID)."""
    if uplink is not None:
        where, announced = f"the uplink device ID {excerpt(uplink, 40)}", uplink
    elif url is not None:
        check_url(url)
        try:
            announced = announced_serial_number(url, username, password, timeout)
        except Iec62676Error as exc:
            reason = " ".join(str(exc).split())[:160]  # one line, whatever the system answered
            raise ConfigurationError(f"cannot ask {url} for its Annex A device ID ({reason}); "
                                     f"{_ASK}") from None
        where = f"the lower system's SerialNumber {excerpt(announced, 40)}"
    else:
        raise ConfigurationError("give --url (with --user/--password) or --uplink DEVICE_ID")
    try:
        return check_prefix(DeviceId.parse(announced).as_prefix())
    except InvalidDeviceId:
        raise ConfigurationError(f"{where} is not an Annex A device ID (20 digits) to use as the prefix; "
                                 f"{_ASK}") from None
