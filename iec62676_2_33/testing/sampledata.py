"""Layer 7 (examples): deterministic sample resources around a city centre, for the demo,
the examples and the benchmarks (RQ-2, RQ-3, ADR-2, ADR-4, ANX-A-1 .. ANX-A-5).

Theory of operation
-------------------
The generator walks *devices* in order; each device contributes the resources
of its layout (an IP camera: its VideoSource, a main and a sub-stream
MediaProfile and a Recording; every fifth camera is a PTZ camera with a
PTZConfiguration as well) until exactly ``count`` resources have been made.
Every token is a remote token ``<device ID>:<local token>`` (ADR-2): the
prefix is the device's Annex A 20-digit ID (built with :meth:`DeviceId.build`:
zone = the district's GB/T 2260 code + a unit, an agency code, device type
132 "IPC", network 1 and a running serial), the same for all resources of the
device (ADR-4).

The first ``station_devices`` devices are the cameras of a central station
(like the metro ticket check of ANX-A-5: city-level zone ``32010001``…, agency
07): they stand within ``station_radius_m`` of the centre, always located and
online, so "within 100 m of the centre" finds a known group whatever
``count`` is. Every other device stands at a uniformly random point of the
disc of ``radius_m`` around the centre (exact great-circle placement: distance
``R·sqrt(u)``, random bearing); the quadrant of the bearing picks its
district. A fraction of those report no location at all
(``unknown_fraction``), a fraction are offline (``offline_fraction``). Scopes
name the city, the district (or the station building), the hardware and the
device (``onvif://www.onvif.org/location/city/nanjing`` …).

Everything comes from one :class:`random.Random` seeded with ``seed`` and
only its ``random()`` values are used, so the output is the same on every
platform and Python version, and ``generate(n)`` is a prefix of
``generate(m)`` for ``n < m``. Generation streams: a million resources never
sit in memory at once.

Command line (writes JSON Lines, the format of ``device resources load``)::

    python -m iec62676_2_33.testing.sampledata --count 300 --out examples/resources-city.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..domain.deviceid import DeviceId
from ..domain.filters import EARTH_RADIUS_M
from ..domain.resources import GeoLocation, Resource
from ..domain.tokens import RemoteToken
from ..errors import ConfigurationError

__all__ = [
    "CITIES",
    "DEFAULT_SEED",
    "NANJING",
    "City",
    "District",
    "generate",
    "generate_json",
    "main",
    "write_jsonl",
]

#: The seed of the committed example and of the benchmarks.
DEFAULT_SEED = 62676

_SCOPE = "onvif://www.onvif.org/"


@dataclass(frozen=True)
class District:
    """A district of a city: its six-digit GB/T 2260 code (ANX-A-1) and a scope-friendly name."""

    code: str
    name: str


@dataclass(frozen=True)
class City:
    """A city centre (WGS 84 degrees, ground elevation in metres), the city's own six-digit
    code and the four districts around it, by quadrant of the bearing from the centre:
    NE, SE, SW, NW."""

    name: str
    code: str
    lon: float
    lat: float
    elevation: float
    districts: tuple[District, District, District, District]


#: Nanjing, city 320100 of the Annex A example (ANX-A-5); its four central districts.
NANJING = City("nanjing", code="320100", lon=118.7969, lat=32.0603, elevation=12.0, districts=(
    District("320102", "xuanwu"),   # NE
    District("320104", "qinhuai"),  # SE
    District("320105", "jianye"),   # SW
    District("320106", "gulou"),    # NW
))

#: Built-in cities by name.
CITIES: dict[str, City] = {NANJING.name: NANJING}

#: ANX-A-2 agency codes the sample devices belong to: urban roadway, society
#: community, traffic roadway, city management, education.
_AGENCIES = ("00", "01", "04", "08", "11")
#: ANX-A-2 agency 07 (related to traffic management) runs the central station, as in ANX-A-5.
_STATION_AGENCY = "07"
#: ANX-A-3 device type 132: IP camera.
_IPC = "132"
#: ANX-A-4 network ID 1: surveillance alarm network (as in the ANX-A-5 example).
_NETWORK = "1"
#: Police-station units (ANX-A-1 unit 01..04) that operate the devices.
_UNITS = 4
#: Largest device serial (six digits).
_MAX_DEVICES = 999_999

#: (kind, local token, name suffix) of every camera; PTZ cameras add the last entry.
_CAMERA = (
    ("VideoSource", "VideoSource_1", "video source"),
    ("MediaProfile", "Profile_1", "main stream"),
    ("MediaProfile", "Profile_2", "sub stream"),
    ("Recording", "Recording_1", "recording"),
)
_PTZ = ("PTZConfiguration", "PTZ_1", "PTZ")
#: Every n-th camera is a PTZ camera.
_PTZ_EVERY = 5


def _destination(city: City, distance: float, bearing: float) -> tuple[float, float]:
    """The point ``distance`` metres from the centre along ``bearing`` (radians), on the sphere."""
    phi1, lam1 = math.radians(city.lat), math.radians(city.lon)
    delta = distance / EARTH_RADIUS_M
    phi2 = math.asin(math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(bearing))
    lam2 = lam1 + math.atan2(math.sin(bearing) * math.sin(delta) * math.cos(phi1),
                             math.cos(delta) - math.sin(phi1) * math.sin(phi2))
    lon = (math.degrees(lam2) + 540.0) % 360.0 - 180.0
    return lon, math.degrees(phi2)


def _fraction(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{what} must be a number from 0 to 1, got {value!r}")
    return float(value)


def generate(count: int, *, seed: int = DEFAULT_SEED, city: City | str = NANJING, radius_m: float = 5000.0,
             unknown_fraction: float = 0.05, offline_fraction: float = 0.02, station_devices: int = 8,
             station_radius_m: float = 60.0) -> Iterator[Resource]:
    """Exactly ``count`` resources (see the module docstring), as :class:`Resource` objects."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigurationError(f"count must be an integer >= 0, got {count!r}")
    if isinstance(city, str):
        if city not in CITIES:
            raise ConfigurationError(f"unknown city {city!r}; built in: {', '.join(sorted(CITIES))}")
        city = CITIES[city]
    if isinstance(radius_m, bool) or not isinstance(radius_m, (int, float)) or not 0 < radius_m <= 100_000:
        raise ConfigurationError(f"radius_m must be a number of metres in (0, 100000], got {radius_m!r}")
    unknown = _fraction(unknown_fraction, "unknown_fraction")
    if isinstance(station_devices, bool) or not isinstance(station_devices, int) or station_devices < 0:
        raise ConfigurationError(f"station_devices must be an integer >= 0, got {station_devices!r}")
    if (isinstance(station_radius_m, bool) or not isinstance(station_radius_m, (int, float))
            or not 0 < station_radius_m <= radius_m):
        raise ConfigurationError(f"station_radius_m must be a number of metres in (0, radius_m], "
                                 f"got {station_radius_m!r}")
    offline = _fraction(offline_fraction, "offline_fraction")
    if count > _MAX_DEVICES * len(_CAMERA):
        raise ConfigurationError(f"count {count} is too large: at most {_MAX_DEVICES} devices "
                                 f"({_MAX_DEVICES * len(_CAMERA)} resources) fit the six-digit serial")
    return _generate(count, random.Random(seed), city, float(radius_m), unknown, offline, station_devices,
                     float(station_radius_m))


def _generate(count: int, rng: random.Random, city: City, radius: float, unknown: float,
              offline: float, station_devices: int, station_radius: float) -> Iterator[Resource]:
    made = 0
    serial = 0
    city_scope = f"{_SCOPE}location/city/{city.name}"
    while made < count:
        serial += 1
        # one fixed sequence of draws per device keeps the stream stable
        u_dist, u_bearing, u_unit, u_agency, u_unknown, u_offline, u_height = (rng.random() for _ in range(7))
        bearing = 2 * math.pi * u_bearing
        district = city.districts[min(3, int(bearing / (math.pi / 2)))]
        at_station = serial <= station_devices
        unit = f"{1 + int(u_unit * _UNITS):02d}"
        if at_station:  # city level (district 00), like the ANX-A-5 example
            zone, agency = f"{city.code[:4]}00{unit}", _STATION_AGENCY
        else:
            zone = f"{district.code}{unit}"
            agency = _AGENCIES[min(len(_AGENCIES) - 1, int(u_agency * len(_AGENCIES)))]
        device = DeviceId.build(zone=zone, agency=agency, device_type=_IPC, network=_NETWORK, serial=serial)
        location = None
        if at_station or u_unknown >= unknown:
            distance = (station_radius if at_station else radius) * math.sqrt(u_dist)
            lon, lat = _destination(city, distance, bearing)
            location = GeoLocation(round(lon, 7), round(lat, 7), round(city.elevation + 3 + 9 * u_height, 1))
        ptz = serial % _PTZ_EVERY == 0
        label = f"{'PTZ camera' if ptz else 'Camera'} {serial:06d}"
        place = "building/central-station" if at_station else f"district/{district.name}"
        scopes = (city_scope, f"{_SCOPE}location/{place}",
                  f"{_SCOPE}hardware/{'PTZ-IPC' if ptz else 'IPC'}", f"{_SCOPE}name/Camera-{serial:06d}")
        is_offline = not at_station and u_offline < offline
        for kind, local, suffix in (*_CAMERA, _PTZ) if ptz else _CAMERA:
            if made == count:
                return
            token = RemoteToken.of(device.as_prefix(), local).format()
            yield Resource(token=token, kind=kind, name=f"{label} {suffix}", location=location,
                           scopes=scopes, offline=is_offline)
            made += 1


def generate_json(count: int, **options: Any) -> Iterator[dict[str, Any]]:
    """The same resources in their JSON form (what ``device resources load`` reads)."""
    for resource in generate(count, **options):
        yield resource.to_json()


def write_jsonl(out: str | Path | IO[str], count: int, **options: Any) -> int:
    """Write ``count`` resources as JSON Lines to a path or a text stream; returns the count."""
    if isinstance(out, (str, Path)):
        with open(out, "w", encoding="utf-8", newline="\n") as handle:
            return write_jsonl(handle, count, **options)
    written = 0
    for obj in generate_json(count, **options):
        out.write(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n")
        written += 1
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iec62676_2_33.testing.sampledata",
                                     description="write deterministic sample resources as JSON Lines")
    parser.add_argument("--count", type=int, required=True, help="number of resources")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--city", default=NANJING.name, choices=sorted(CITIES))
    parser.add_argument("--radius", type=float, default=5000.0, metavar="METRES")
    parser.add_argument("--unknown-fraction", type=float, default=0.05)
    parser.add_argument("--offline-fraction", type=float, default=0.02)
    parser.add_argument("--station-devices", type=int, default=8)
    parser.add_argument("--station-radius", type=float, default=60.0, metavar="METRES")
    parser.add_argument("--out", type=Path, help="output file (default: standard output)")
    args = parser.parse_args(argv)
    options = {"seed": args.seed, "city": args.city, "radius_m": args.radius,
               "unknown_fraction": args.unknown_fraction, "offline_fraction": args.offline_fraction,
               "station_devices": args.station_devices, "station_radius_m": args.station_radius}
    try:
        write_jsonl(args.out if args.out is not None else sys.stdout, args.count, **options)
    except ConfigurationError as exc:
        print(f"iec62676: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
