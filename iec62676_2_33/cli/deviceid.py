"""Layer 7: ``iec62676 deviceid`` — explain and build Annex A device IDs (ANX-A-1 .. ANX-A-5).

``deviceid explain ID [--format table|json]`` prints what every field of a
20-digit device ID means; ``deviceid new --zone .. --agency .. --type ..
--network .. --serial ..`` prints the assembled 20-digit ID. Invalid input is
an :class:`~iec62676_2_33.domain.deviceid.InvalidDeviceId`, which the CLI
frame turns into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..domain.deviceid import DeviceId

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``deviceid`` command group to the ``iec62676`` parser."""
    group: argparse.ArgumentParser = subparsers.add_parser(
        "deviceid",
        help="explain or build Annex A 20-digit device IDs",
        description="Annex A 20-digit device IDs: zone(8) agency(2) type(3) network(1) serial(6).",
    )
    commands = group.add_subparsers(
        dest="deviceid_command", required=True, parser_class=type(group)
    )

    explain = commands.add_parser("explain", help="describe every field of a device ID")
    explain.add_argument("id", help="20-digit device ID, e.g. 32010001071321008015")
    explain.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )
    explain.set_defaults(handler=_explain)

    new = commands.add_parser("new", help="assemble a device ID from its fields")
    new.add_argument(
        "--zone", required=True, metavar="8DIGITS", help="province, city, district, unit (ANX-A-1)"
    )
    new.add_argument("--agency", required=True, metavar="NN", help="agency code (ANX-A-2)")
    new.add_argument(
        "--type",
        required=True,
        dest="device_type",
        metavar="NNN",
        help="device type code (ANX-A-3)",
    )
    new.add_argument("--network", required=True, metavar="N", help="network ID (ANX-A-4)")
    new.add_argument(
        "--serial", required=True, metavar="NNNNNN", help="serial within the network (ANX-A-4)"
    )
    new.set_defaults(handler=_new)


def _explain(args: argparse.Namespace) -> int:
    device_id = DeviceId.parse(args.id)
    rows = device_id.explain()
    if args.format == "json":
        document = {
            "device_id": str(device_id),
            "fields": [{"field": f, "digits": d, "meaning": m} for f, d, m in rows],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    header = ("field", "digits", "meaning")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(2)]
    print(f"device ID {device_id}")
    for field, digits, meaning in (header, *rows):
        print(f"{field:<{widths[0]}}  {digits:<{widths[1]}}  {meaning}")
    return 0


def _new(args: argparse.Namespace) -> int:
    device_id = DeviceId.build(
        zone=args.zone,
        agency=args.agency,
        device_type=args.device_type,
        network=args.network,
        serial=args.serial,
    )
    print(device_id)
    return 0
