"""Layer 7: ``iec62676 device resources …`` — the device's resource registry (RQ-2, RQ-3, RQ-4, ADR-4).

Thin: parse arguments, call :class:`~..domain.registry.ResourceRegistry`.
The registry lives at ``<data>/resources.db`` (SQLite in WAL mode), so a
running ``device serve`` sees every change made here (RQ-4).

* ``load --data DIR FILE.jsonl`` — add or update the resources of a JSON Lines
  file (the format of :mod:`..domain.resources`): all lines or none; every bad
  line is reported with its number and nothing is applied (exit status 2).
  The file is streamed (a million lines load in bounded memory) with a
  progress bar on stderr when it is a terminal or with ``--progress``
  (:mod:`.progress`).
  A first-run command: it creates the data folder.
* ``list --data DIR [--format table|json] [--prefix P]`` — every resource, or
  those of one device prefix (ADR-4), ordered by token and read page by page;
  ``json`` prints one object per line, the format ``load`` reads.
* ``remove --data DIR --token T`` — remove one resource (a ``Deleted`` event).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..domain.filters import PrefixFilter, ResourceQuery
from ..domain.registry import REGISTRY_FILE, ResourceRegistry
from ..domain.resources import Resource
from .options import add_data
from .progress import add_progress, progress_bar

__all__ = ["PAGE", "REGISTRY_FILE", "format_row", "open_registry", "register_device_group"]

#: File name of the resource registry inside a device's data folder.
#: Resources read per registry query while listing.
PAGE = 1000


def open_registry(data: Path) -> ResourceRegistry:
    """The registry of the device whose data folder is ``data`` (created when missing)."""
    return ResourceRegistry(data / REGISTRY_FILE)


def _data(p: argparse.ArgumentParser, *, creates: bool = False) -> None:
    add_data(p, creates=creates)


def register_device_group(dsub: Any) -> None:
    """Add the ``resources`` group to the subparsers of ``iec62676 device``."""
    parser = dsub.add_parser("resources", help="the resources a device exposes to resource queries")
    rsub = parser.add_subparsers(dest="resources_command", required=True, parser_class=type(parser))

    p = rsub.add_parser("load", help="add or update the resources of a JSON Lines file (all lines or none)")
    _data(p, creates=True)
    p.add_argument("file", type=Path, metavar="FILE.jsonl",
                   help="one JSON object per line: token, kind, name, location {lon, lat, elevation}, "
                        "scopes [..], offline")
    add_progress(p)
    p.set_defaults(handler=resources_load)

    p = rsub.add_parser("list", help="list resources, ordered by token")
    _data(p)
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table: tab-separated columns; json: one object per line (the load format)")
    p.add_argument("--prefix", metavar="P", help="only the resources of this device prefix (ADR-4)")
    p.set_defaults(handler=resources_list)

    p = rsub.add_parser("remove", help="remove one resource")
    _data(p)
    p.add_argument("--token", required=True, metavar="T")
    p.set_defaults(handler=resources_remove)


def resources_load(args: argparse.Namespace) -> int:
    size = args.file.stat().st_size if args.file.is_file() else None
    with progress_bar(args, desc=args.file.name, unit="B", total=size, unit_scale=True) as bar, \
            open_registry(args.data) as registry:
        added, changed = registry.load_jsonl_counts(args.file, progress=bar.update)
        total = registry.count()
    print(f"{args.file}: {added} added, {changed} changed; {total} resource(s) in the registry")
    return 0


def _all(registry: ResourceRegistry, query: ResourceQuery) -> Iterator[Resource]:
    after: str | None = None
    while True:
        page = registry.query(query, after_token=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].token


def format_row(resource: Resource) -> str:
    """One table line: token, kind, name, ``lat,lon[,elevation]``, online state, scopes (``-`` = absent)."""
    loc = resource.location
    where = "-" if loc is None else f"{loc.lat},{loc.lon}" + ("" if loc.elevation is None else f",{loc.elevation}")
    state = "-" if resource.offline is None else ("offline" if resource.offline else "online")
    cells = [resource.token, resource.kind, resource.name if resource.name is not None else "-", where, state,
             " ".join(resource.scopes) or "-"]
    return "\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in cells)


def resources_list(args: argparse.Namespace) -> int:
    query = ResourceQuery(prefix=None if args.prefix is None else PrefixFilter(args.prefix))
    with open_registry(args.data) as registry:
        for resource in _all(registry, query):
            if args.format == "json":
                print(json.dumps(resource.to_json(), ensure_ascii=False))
            else:
                print(format_row(resource))
    return 0


def resources_remove(args: argparse.Namespace) -> int:
    with open_registry(args.data) as registry:
        registry.remove(args.token)
    print(f"resource {args.token} removed")
    return 0
