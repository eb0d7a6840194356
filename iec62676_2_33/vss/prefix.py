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
  and at most :data:`MAX_ANSWER` bytes of it (:class:`~..bounded_http.BoundedTransport`).
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

from datetime import timedelta

import zeep
import zeep.exceptions

from ..bounded_http import BoundedTransport
from ..client import SETTINGS, mapped_errors, username_token
from ..domain.deviceid import DeviceId, InvalidDeviceId
from ..errors import ConfigurationError, Iec62676Error, TransportError
from ..namespaces import TDS
from ..schemas import wsdl_path
from ..soap.envelope import excerpt
from .lower import check_prefix, check_url

__all__ = ["MAX_ANSWER", "announced_serial_number", "default_prefix"]

#: What a refusal asks the user to do instead.
_ASK = "pass --prefix P"
#: Bytes of a GetDeviceInformation answer read at most (a real one is well under 4 KiB).
MAX_ANSWER = 64 * 1024


def announced_serial_number(url: str, username: str | None, password: str | None, timeout: float) -> str:
    """The ``SerialNumber`` the device service at ``url`` answers to ``GetDeviceInformation``."""
    transport = BoundedTransport(timeout, max_bytes=MAX_ANSWER)
    client = zeep.Client(str(wsdl_path("devicemgmt")), settings=SETTINGS, transport=transport,
                         wsse=username_token(username, password, timedelta(0)))
    service = client.create_service(f"{{{TDS}}}DeviceBinding", url)
    try:
        with mapped_errors("GetDeviceInformation"):
            return str(service.GetDeviceInformation().SerialNumber or "").strip()
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
