"""Layer 7: ``iec62676 query`` — a resource query against a server's event service (RQ-5 … RQ-10).

``iec62676 query --url URL [--user U --password P] --topic KIND
[--near LAT,LON --radius METRES [--height H] [--include-unknown]] [--prefix P]
[--scope S …] [--select PATH …] [--follow] [--format table|json]`` prints the
matching resources; with ``--follow`` it then prints every live change until
interrupted (Ctrl-C). ``URL`` is the event service, e.g.
``http://127.0.0.1:8080/onvif/event_service`` (a device base URL is completed).
While the initial list is enumerated a progress bar counts the resources on
stderr when it is a terminal or with ``--progress`` (:mod:`.progress`); stdout
holds only the list.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from ..domain.filters import LocationFilter
from ..domain.resources import RESOURCE_KINDS, Resource
from ..errors import ConfigurationError
from ..query import ResourceChange, ResourceQueryClient
from .options import PASSWORD_ENV, add_secret, http_url, read_secret, seconds
from .progress import add_progress, emit, progress_bar

__all__ = ["register"]

EVENT_PATH = "/onvif/event_service"


def register(subparsers: Any) -> None:
    """Add the ``query`` command to the ``iec62676`` parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "query", help="resource query: list matching resources, optionally follow changes",
        description="Subscribe to a server's event service with resource filters and print the "
                    "matching resources (RQ-5); --follow keeps printing live changes.")
    p.add_argument("--url", required=True, type=http_url, help="event service URL, e.g. http://HOST:PORT/onvif/event_service")
    p.add_argument("--user", help="user name (WS-Security UsernameToken)")
    add_secret(p, "password", PASSWORD_ENV, help_="the password of --user")
    p.add_argument("--topic", action="append", required=True, choices=RESOURCE_KINDS, metavar="KIND",
                   help="resource kind (topic tns1:Resource/KIND); repeat for several. "
                        f"One of: {', '.join(RESOURCE_KINDS)}")
    p.add_argument("--near", metavar="LAT,LON", help="centre of the location filter (degrees)")
    p.add_argument("--radius", type=float, metavar="METRES", help="radius of the location filter")
    p.add_argument("--height", type=float, metavar="H", help="height of the centre, metres")
    p.add_argument("--include-unknown", action="store_true", help="also resources without a location")
    p.add_argument("--prefix", help="only resources of this device prefix (RQ-7)")
    p.add_argument("--scope", action="append", default=[], metavar="S", help="scope filter entry (RQ-8); repeatable")
    p.add_argument("--select", action="append", default=[], metavar="PATH",
                   help="data item to return, e.g. /Name, /Location, /Scope/location (RQ-9); repeatable")
    p.add_argument("--follow", action="store_true", help="after the list, print live changes until interrupted")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.add_argument("--timeout", type=seconds, default=10.0, metavar="S",
                   help="PullMessages timeout while following (the heartbeat interval, RQ-10)")
    add_progress(p)
    p.set_defaults(handler=run_query)


def _location(args: argparse.Namespace) -> LocationFilter | None:
    if args.near is None:
        if args.radius is not None or args.height is not None or args.include_unknown:
            raise ConfigurationError("--radius, --height and --include-unknown need --near LAT,LON")
        return None
    if args.radius is None:
        raise ConfigurationError("--near needs --radius METRES")
    try:
        lat, lon = (float(part) for part in args.near.split(","))
    except ValueError:
        raise ConfigurationError(f"--near {args.near!r}: expected LAT,LON in degrees, e.g. 50.11,8.68") from None
    return LocationFilter(lon=lon, lat=lat, radius=args.radius, height=args.height,
                          include_unknown=args.include_unknown)


def _url(url: str) -> str:
    return url if url.rstrip("/").endswith(EVENT_PATH) else url.rstrip("/") + EVENT_PATH


def _json(resource: Resource, operation: str | None) -> str:
    obj = resource.to_json()
    if operation is not None:
        obj = {"operation": operation, **obj}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _row(resource: Resource, operation: str | None) -> str:
    loc = resource.location
    where = "" if loc is None else f"{loc.lat:.6f},{loc.lon:.6f}" + ("" if loc.elevation is None else
                                                                      f",{loc.elevation:g}")
    offline = "" if resource.offline is None else ("offline" if resource.offline else "online")
    cells = [resource.token, resource.kind, resource.name or "", where, offline, " ".join(resource.scopes)]
    if operation is not None:
        cells.insert(0, operation)
    return "\t".join(cells)


def _line(resource: Resource, operation: str | None, fmt: str) -> str:
    return (_json(resource, operation) if fmt == "json" else _row(resource, operation)) + "\n"


def run_query(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    if (args.password is not None or getattr(args, "password_file", None) is not None) and args.user is None:
        raise ConfigurationError("--password needs --user")
    location = _location(args)
    password = read_secret(args, "password", PASSWORD_ENV) if args.user is not None else None
    client = ResourceQueryClient(_url(args.url), username=args.user, password=password,
                                 pull_timeout=args.timeout)
    with client.subscribe(args.topic, location=location, prefix=args.prefix, scopes=args.scope,
                          select=args.select) as subscription:
        if args.format == "table":
            stream.write("token\tkind\tname\tlat,lon[,elevation]\tstate\tscopes\n")
        count = 0
        with progress_bar(args, desc="resources", unit=" resource") as bar:
            for resource in subscription.resources():
                emit(bar, _line(resource, None, args.format), stream)
                bar.update(1)
                count += 1
        if args.format == "table":
            stream.write(f"# {count} resource(s)\n")
            stream.flush()
        if args.follow:
            change: ResourceChange
            for change in subscription.changes():
                stream.write(_line(change.resource, change.operation, args.format))
                stream.flush()
    return 0
