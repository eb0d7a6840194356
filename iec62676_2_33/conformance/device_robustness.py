"""Conformance kit: a device under stress — hostile HTTP/2 frames from a cloud, and an outage of the cloud
several of its uplinks dial (TEST-1; UPL-3, UPL-9, UPL-10, UPL-15, UPL-16).

``EXT-HOSTILE`` keeps the device's uplink to the tool's (legitimate) cloud up
and points a second configuration, one batch at a time, at an endpoint that
plays the batches of :mod:`.hostile`; after each batch the device must still
hold and serve the legitimate uplink and answer on its direct address, and
after a malformed frame it must have ended the hostile connection.

``EXT-SHARED-BACKOFF`` points several configurations at paths the tool's
cloud refuses (an outage): each one's reconnection intervals must ascend, and
they must not all follow one shared sequence; a device whose uplinks all wait
the same intervals sends them back to a recovering cloud in step, the very
thing UPL-9's individual intervals are there to prevent. Coinciding by chance
is possible, so the case fails only when every configuration matches the first
within :data:`STEP_ABS` + :data:`STEP_REL` (the absolute part covers the
scheduling and handshake jitter of a loaded machine); with first intervals
spread over 3 s (1 … 4 s, as our device picks them) four configurations
coincide that closely about once in ten thousand runs. The measuring part
(:func:`outage_intervals`, :func:`same_intervals`) also serves
``EXT-TWO-DUT-BACKOFF`` (:mod:`.device_pair`), which compares two instances.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from ..namespaces import TDS
from .device_cases import answered, case, device_xaddr, not_ascending, refused_intervals
from .device_session import DeviceSession, wait_for
from .hostile import BATCHES, HostilePlayer, Played
from .registry import Evidence
from .wire import Connection

#: Seconds the hostile endpoint reads the device's reaction to a batch.
HOSTILE_WINDOW = 3.0
#: Configurations EXT-SHARED-BACKOFF points at the refusing cloud (fewer when MaxUplinks leaves less room).
OUTAGE_UPLINKS = 4
#: Intervals each of them must show.
OUTAGE_INTERVALS = 2
#: Two intervals are "the same" when they differ by at most STEP_ABS seconds plus STEP_REL of the longer.
STEP_ABS, STEP_REL = 0.1, 0.01


def _reaction(played: Played) -> str:
    frames = played.conn.frames
    goaway = [f.describe() for f in frames if f.type == 7]
    resets = sum(1 for f in frames if f.type == 3)
    end = "the device ended the connection" if played.device_closed else \
        f"the connection was still open after {HOSTILE_WINDOW:g} s"
    return (f"sent {played.sent} of the batch's bytes; {end}; GOAWAY: {', '.join(goaway) or 'none'}; "
            f"RST_STREAM frames: {resets}; frames from the device: {len(frames)}")


def _still_serving(s: DeviceSession, ev: Evidence, main: Connection, after: str) -> None:
    """The legitimate uplink is the same connection and answers; so does the direct address."""
    if main.eof_at is not None or main.closed_at is not None:
        ev.fail(f"after {after}: the device dropped its uplink to the legitimate cloud")
    try:
        answer = s.tunnel(s.main, device_xaddr(s), TDS, "GetDeviceInformation")
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the verdict
        ev.fail(f"after {after}: the device no longer answers the legitimate cloud "
                f"({type(exc).__name__}: {str(exc)[:200]})")
    answered(ev, answer, f"GetDeviceInformation over the legitimate uplink after {after}",
             "GetDeviceInformationResponse")
    direct = s.get_services(False)
    ev.check(direct.status == 200 and direct.fault is None,
             f"after {after}: GetServices on the device's direct address answered HTTP {direct.status}")
    if main.eof_at is not None or main.closed_at is not None:
        ev.fail(f"after {after}: the device dropped its uplink to the legitimate cloud")


def _finished(player: HostilePlayer, path: str) -> Callable[[], Played | None]:
    def finished() -> Played | None:
        played = player.played.get(path)
        return played if played is not None and played.finished else None
    return finished


@case("EXT-HOSTILE", "survives hostile HTTP/2 frames and keeps serving", "UPL-3", "UPL-10", "UPL-15", "UPL-16")
def hostile_frames(s: DeviceSession, ev: Evidence) -> None:
    """A second uplink goes to a hostile cloud that sends malformed frames, a 1 MiB header block, SETTINGS
    and PING floods and a rapid reset, one batch per connection. The device must end the connection on each
    malformed frame (RFC 9113 §5.4.1), and after every batch still hold its uplink to the legitimate cloud,
    answer GetDeviceInformation over it and GetServices on its direct address."""
    main = s.connect()
    client = s.uplink()
    max_uplinks = client.get_service_capabilities().max_uplinks
    if 0 < max_uplinks <= len(client.get_uplinks()):
        ev.skip(f"MaxUplinks {max_uplinks} leaves no room for a second uplink beside the legitimate one")
    player = HostilePlayer(window=HOSTILE_WINDOW)
    endpoint = s.cloud.add_endpoint("hostile", s.pki.context(), handler=player.handle)
    problems: list[str] = []
    try:
        for n, batch in enumerate(BATCHES):
            path = player.path(n)
            address = endpoint.url(path)
            s.set_uplink(address)
            try:
                played = wait_for(_finished(player, path), s.target.connect_timeout + HOSTILE_WINDOW + 5,
                                  f"the device to connect to {path}")
            except TimeoutError:
                problems.append(f"{batch.name}: the device did not connect to the hostile endpoint")
                continue
            finally:
                s.delete_uplink(address)
            ev.note(batch.name, _reaction(played))
            if batch.must_close and not played.device_closed:
                problems.append(f"{batch.name}: the device did not end the connection within {HOSTILE_WINDOW:g} s "
                                "(a connection error, RFC 9113 §5.4.1)")
            _still_serving(s, ev, main, batch.name)
    finally:
        s.cloud.remove_endpoint(endpoint)
    ev.check(not problems, "; ".join(problems))


def same_intervals(a: list[float], b: list[float]) -> bool:
    """Two sequences of intervals coincide: each pair within :data:`STEP_ABS` + :data:`STEP_REL`."""
    return all(math.isclose(x, y, rel_tol=STEP_REL, abs_tol=STEP_ABS) for x, y in zip(a, b, strict=False))


def outage_intervals(s: DeviceSession, ev: Evidence, keys: Sequence[str], intervals: Callable[[str], list[float]],
                     since: float) -> dict[str, list[float]]:
    """Wait until every configuration in ``keys`` shows :data:`OUTAGE_INTERVALS` reconnection intervals
    (``intervals(key)``), or the backoff window since ``since`` is over; note each one's intervals and fail
    unless each has enough and they ascend (UPL-9). Returns each key's first :data:`OUTAGE_INTERVALS`."""
    deadline = since + s.target.backoff_window
    while True:
        seen = {key: intervals(key) for key in keys}
        if all(len(v) >= OUTAGE_INTERVALS for v in seen.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for key, found in seen.items():
        ev.note(f"intervals of {key} (s)", ", ".join(f"{i:.3f}" for i in found) or "none")
    for key, found in seen.items():
        ev.check(len(found) >= OUTAGE_INTERVALS, f"{key}: only {len(found) + 1} attempt(s) in "
                                                 f"{s.target.backoff_window:g} s")
        problem = not_ascending(found[:OUTAGE_INTERVALS])
        if problem:
            ev.fail(f"{key}: {problem}")
    return {key: found[:OUTAGE_INTERVALS] for key, found in seen.items()}


@case("EXT-SHARED-BACKOFF", "several uplinks to one unreachable cloud back off individually", "UPL-9", "UPL-10",
      long=True)
def individual_backoff(s: DeviceSession, ev: Evidence) -> None:
    """Several configurations dial one cloud that refuses them all (an outage): each one's reconnection
    intervals ascend, they do not all follow one shared sequence (they would return in step), and the
    first uplink stays up meanwhile."""
    client = s.uplink()
    caps = client.get_service_capabilities()
    s.connect()
    room = caps.max_uplinks - len(client.get_uplinks()) if caps.max_uplinks > 0 else OUTAGE_UPLINKS
    count = min(OUTAGE_UPLINKS, room)
    if count < 2:
        ev.skip(f"MaxUplinks {caps.max_uplinks} leaves room for {max(room, 0)} more configuration(s); the case "
                "needs two")
    paths = [f"/conformance-outage-{n}" for n in range(count)]
    s.main.refuse_paths.update(paths)
    since = time.monotonic()
    try:
        for path in paths:
            s.set_uplink(s.main.url(path))
        seen = outage_intervals(s, ev, paths, lambda path: refused_intervals(s, path, since), since)
        first = seen[paths[0]]
        if all(same_intervals(first, seen[path]) for path in paths[1:]):
            ev.fail(f"all {count} uplinks wait the same intervals ({', '.join(f'{i:.2f}' for i in first)} s): one "
                    "shared sequence, so they reconnect in step (UPL-9 asks for individual intervals)")
        ev.check(s.cloud.channel(s.main, s.enrolment().device_id) is not None,
                 "the first uplink did not stay connected beside the refused ones (UPL-10)")
    finally:
        s.main.refuse_paths.difference_update(paths)
        for path in paths:
            if s.status(s.main.url(path)) is not None:
                s.delete_uplink(s.main.url(path))
