"""Conformance kit: parallel uplinks — one device, two clouds at once (TEST-1; UPL-10, UPL-16, CFG-3, CFG-4).

UPL-10 asks a device with several uplink configurations to establish all of
them and keep them in parallel. ``EXT-PARALLEL`` gives the device two
configurations at once, one to the tool's main endpoint and one to a second
endpoint of the tool's cloud (its own port and listener: a distinct cloud as
far as the device can tell), both set right after each other. Both must
connect and answer GetDeviceInformation through their own tunnel; then the
second is deleted: it must close, while the first stays the same connection
and still answers. A device whose ``MaxUplinks`` leaves room for fewer than
two configurations (beside those it already holds for others) is skipped,
saying so.
"""

from __future__ import annotations

import time

from ..namespaces import TDS
from .device_cases import answered, case, device_xaddr, note_connection
from .device_session import DeviceSession
from .registry import Evidence
from .toolcloud import Endpoint
from .wire import Connection


def _open(conn: Connection) -> bool:
    return conn.eof_at is None and conn.closed_at is None


@case("EXT-PARALLEL", "two uplinks to two clouds at once; deleting one leaves the other", "UPL-10", "UPL-16",
      "CFG-3", "CFG-4")
def parallel_uplinks(s: DeviceSession, ev: Evidence) -> None:
    """Two configurations set at once, to two endpoints of the tool's cloud: both connect and answer
    GetDeviceInformation over their own uplink; after DeleteUplink of the second it closes and the first
    is still the same connection and answers. Skipped when MaxUplinks leaves room for fewer than two."""
    client = s.uplink()
    caps = client.get_service_capabilities()
    main_address = s.main.url()
    others = [cfg.remote_address for cfg in client.get_uplinks() if cfg.remote_address != main_address]
    ev.note("capabilities", f"MaxUplinks {caps.max_uplinks}; configurations of others kept: {len(others)}")
    if caps.max_uplinks - len(others) < 2:
        ev.skip(f"MaxUplinks {caps.max_uplinks} leaves room for {max(caps.max_uplinks - len(others), 0)} "
                "configuration(s) beside the device's others; the case needs two")
    s.enrolment()
    if s.status(main_address) is not None:  # start from nothing on the main endpoint: both dials below are new
        s.delete_uplink(main_address)
    # A precondition, not this case's verdict (UPLINK-1-1-1 judges how soon DeleteUplink closes an uplink):
    # the old connection may take as long as a connect to go.
    for conn in s.main.live():
        try:
            s.wait_closed(conn, s.target.connect_timeout)
        except TimeoutError:
            ev.fail(f"the device kept the uplink open {s.target.connect_timeout:g} s after DeleteUplink")
    second = s.cloud.add_endpoint("second cloud", s.pki.context())
    second_address = second.url()
    try:
        since = time.monotonic()
        s.set_uplink(main_address)
        s.set_uplink(second_address)
        ev.note("SetUplink", f"{main_address}\n{second_address}\n(one right after the other)")
        conns: dict[str, Connection] = {}
        missing: list[str] = []
        for endpoint in (s.main, second):
            try:
                conns[endpoint.name] = s.wait_connected(endpoint, since)
            except TimeoutError:
                missing.append(endpoint.url())
        if missing:
            statuses = "; ".join(f"{a}: {s.status(a)}" for a in (main_address, second_address))
            ev.fail(f"the device connected {2 - len(missing)} of its 2 uplinks: none to {', '.join(missing)} within "
                    f"{s.target.connect_timeout:g} s (UPL-10: all of them, in parallel; GetUplinks: {statuses})")
        first, other = conns[s.main.name], conns[second.name]
        for label, endpoint, conn in (("main", s.main, first), ("second", second, other)):
            note_connection(ev, conn, label)
            _answers(s, ev, endpoint, f"GetDeviceInformation over the {label} uplink")
        ev.check(_open(first) and _open(other), "one uplink closed while both were configured (UPL-10)")
        s.delete_uplink(second_address)
        try:
            s.wait_closed(other, s.target.notice_timeout)
        except TimeoutError:
            ev.fail(f"the device kept the second uplink open {s.target.notice_timeout:g} s after its DeleteUplink")
        ev.note("DeleteUplink of the second", "the device closed the second uplink")
        ev.check(_open(first), "DeleteUplink of the second configuration also closed the uplink to the main cloud")
        _answers(s, ev, s.main, "GetDeviceInformation over the main uplink after DeleteUplink of the second")
        ev.check(_open(first), "the main uplink closed after DeleteUplink of the second configuration")
    finally:
        if s.status(second_address) is not None:
            s.delete_uplink(second_address)
        s.cloud.remove_endpoint(second)


def _answers(s: DeviceSession, ev: Evidence, endpoint: Endpoint, what: str) -> None:
    answered(ev, s.tunnel(endpoint, device_xaddr(s), TDS, "GetDeviceInformation"), what,
             "GetDeviceInformationResponse")
