"""Conformance kit: two instances of one device model do not share one reconnection sequence (UPL-9).

UPL-9 asks for an individual ascending interval *per device*, so that a fleet
that lost its cloud does not come back in step. ``EXT-SHARED-BACKOFF``
compares the uplinks of one device; a device that derives its sequence from
its configuration (the RemoteAddress) or from a constant seed passes it, yet
every unit of that model configured alike waits the same intervals.
``EXT-TWO-DUT-BACKOFF`` takes a second instance (``--dut2``) and gives both
the *same* K configurations (:data:`~.device_robustness.OUTAGE_UPLINKS`,
fewer when MaxUplinks leaves less room, two at least): identical
RemoteAddress values, distinct paths on an endpoint of the tool's cloud that
answers every upgrade request with 503 (an outage). Each instance has a
client certificate of its own (CN ``--identity`` and ``--identity``-2), and
the endpoint notes the CN of every refused connection, so it tells the
instances apart even when both dial from one address. Each configuration's
intervals are measured on each instance the way ``EXT-SHARED-BACKOFF``
measures them (three attempts, two intervals, ascending:
:func:`~.device_robustness.outage_intervals`) and compared per RemoteAddress
with its tolerance (:func:`~.device_robustness.same_intervals`).

One address alone is no verdict: two conforming devices whose first
intervals are spread over 3 s (1 … 4 s, doubling, as our device's) coincide
within the tolerance in about one run in 15 on the first interval, one in 30
on both (200,000 simulated pairs of our sequences). The case fails only when
*every* one of the K addresses coincides — for individual sequences about
(1/30)^K, one run in 800,000 with four, one in 900 with two — while a
sequence seeded from the configuration coincides every time.

The second instance gets a session of its own (:class:`~.device_session.DeviceSession`:
its client on the direct address, its enrolment, its first uplink to an
endpoint of its own) made with the tool's CA, so both instances trust the
same cloud certificate. At the end the case deletes every configuration it
set, on both instances.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import Iec62676Error
from ..sansio.upgrade import UpgradeServer
from ..transport.identity import peer_identity
from .device_cases import case
from .device_robustness import OUTAGE_INTERVALS, OUTAGE_UPLINKS, outage_intervals, same_intervals
from .device_session import DeviceSession
from .registry import Evidence
from .toolcloud import Endpoint, read_head
from .wire import Connection, RecordingStream

#: Suffix of the second instance's certificate CN (``--identity`` + this).
SECOND_IDENTITY_SUFFIX = "-2"


async def refuse_every_upgrade(stream: RecordingStream, conn: Connection) -> None:
    """The outage endpoint's handler: each upgrade request is answered 503 once its head is in; the client
    certificate's CN goes on the record (:attr:`Connection.identity`)."""
    try:
        if await read_head(stream) is not None:
            conn.identity = peer_identity(stream, "cn")
            conn.refused = True
            await stream.write(UpgradeServer().reject(503, "refused by the conformance tool",
                                                      body=b"refused by the conformance tool\n"))
    except (Iec62676Error, OSError):
        pass  # the device went away first: its attempt is on the record all the same
    finally:
        with contextlib.suppress(Iec62676Error, OSError):
            await stream.close()


def refused_intervals_of(endpoint: Endpoint, identity: str, path: str, since: float) -> list[float]:
    """The intervals between the refused attempts of the device known as ``identity`` on ``path``."""
    attempts = [c.opened_at for c in list(endpoint.connections)
                if c.refused and c.identity == identity and c.path == path and c.opened_at >= since]
    return [b - a for a, b in itertools.pairwise(attempts)]


@contextlib.contextmanager
def second_instance(s: DeviceSession) -> Iterator[DeviceSession]:
    """A session for ``--dut2`` sharing the tool's CA (and cloud host); closed, its configurations deleted,
    on leaving."""
    target = s.target
    assert target.dut2 is not None
    host = s.cloud.host
    with tempfile.TemporaryDirectory(prefix="iec62676-conformance-ca-") as folder:
        ca = target.ca
        if ca is None:  # the run's own CA, handed over as the CA folder --ca would name (read at once)
            ca = Path(folder)
            s.pki.ca.write(ca, "ca")
        twin = DeviceSession(dataclasses.replace(
            target, dut=target.dut2, username=target.username2 or target.username,
            password=target.password if target.password2 is None else target.password2,
            listen=f"[{host}]:0" if ":" in host else f"{host}:0", remote_host=s.cloud.url_host, cert=None,
            key=None, ca=ca, identity=target.identity + SECOND_IDENTITY_SUFFIX, dut2=None, username2=None,
            password2=None))
    try:
        yield twin
    finally:
        twin.close()


@case("EXT-TWO-DUT-BACKOFF", "two instances of one model do not share one backoff sequence", "UPL-9", "UPL-10",
      long=True)
def two_instances_backoff(s: DeviceSession, ev: Evidence) -> None:
    """Two instances of one model get the same configurations, each to a path the tool's cloud refuses (an
    outage): per RemoteAddress their reconnection intervals ascend, and they do not coincide on every
    address (a sequence derived from the configuration or a constant seed sends every unit back in step)."""
    if not s.target.dut2:
        ev.skip("no second instance given (--dut2): the case compares two instances of one model")
    with second_instance(s) as twin:
        instances = {"instance 1": s, "instance 2": twin}
        ev.note("instances", "\n".join(f"{name}: {x.target.dut} (certificate CN {x.target.identity})"
                                       for name, x in instances.items()))
        caps = {name: x.uplink().get_service_capabilities().max_uplinks for name, x in instances.items()}
        none = [f"{name} has MaxUplinks {m}" for name, m in caps.items() if m <= 0]
        if none:
            ev.skip(f"{'; '.join(none)}: no room for the configurations the case compares")
        for x in instances.values():
            x.connect()
        rooms = {name: caps[name] - len(x.uplink().get_uplinks()) for name, x in instances.items()}
        ev.note("MaxUplinks", "; ".join(f"{name}: {caps[name]}, room for {rooms[name]} more" for name in instances))
        count = min(OUTAGE_UPLINKS, *rooms.values())
        if count < 2:
            ev.skip(f"MaxUplinks leaves room for {max(count, 0)} more configuration(s) on both instances; the case "
                    "needs two")
        outage = s.cloud.add_endpoint("outage", s.pki.context(), handler=refuse_every_upgrade)
        addresses = [outage.url(f"/conformance-pair-{n}") for n in range(count)]
        try:
            since = time.monotonic()
            for x in instances.values():
                for address in addresses:
                    x.set_uplink(address)
            keys = {f"{address} on {name}": (x.enrolment().device_id, urlsplit(address).path)
                    for address in addresses for name, x in instances.items()}
            seen = outage_intervals(s, ev, list(keys),
                                    lambda key: refused_intervals_of(outage, *keys[key], since), since)
            same = [address for address in addresses
                    if same_intervals(seen[f"{address} on instance 1"], seen[f"{address} on instance 2"])]
            ev.note("addresses where both instances wait the same intervals", "\n".join(same) or "none")
            if len(same) == count:
                first = seen[f"{addresses[0]} on instance 1"]
                ev.fail(f"both instances wait the same intervals on all {count} addresses (the first: "
                        f"{', '.join(f'{i:.2f}' for i in first)} s): one sequence derived from the configuration "
                        "or a constant seed, so every unit of the model reconnects in step (UPL-9 asks for "
                        f"individual intervals per device; {OUTAGE_INTERVALS} intervals compared per address)")
        finally:
            for x in instances.values():
                for address in addresses:
                    if x.status(address) is not None:
                        x.delete_uplink(address)
            s.cloud.remove_endpoint(outage)
