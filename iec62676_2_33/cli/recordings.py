"""Layer 7: ``iec62676 recordings …`` — the recordings the sample store serves (ANX-B-3, ANX-B-5).

Thin: parse arguments, build a :class:`~..domain.recordings.RecordingConfig`
(which validates it) and keep the list in ``<data>/recordings.json``
(:mod:`..runtime.recording_files`). A recording is a folder of MP4/MKV files
whose names carry their UTC start (``cam_20260101T120000Z.mp4``), recorded
from the Media2 profile ``--source-token`` (edge-storage style, ANX-B-5).

* ``add --data DIR --token T --source-token S --folder F [--name N] [--description D]``
  — add or replace the recording keyed by ``--token``;
* ``list --data DIR [--format table|json]`` — every recording with its file count;
* ``remove --data DIR --token T``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..domain.recordings import RecordingConfig
from ..runtime.recording_files import FolderRecordingStore, load_recording_configs, save_recording_configs

__all__ = ["register"]


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="the device's data folder")


def register(subparsers: Any) -> None:
    """Add the ``recordings`` group to the ``iec62676`` parser."""
    parser = subparsers.add_parser("recordings", help="recordings served by Recording Search and Replay")
    rsub = parser.add_subparsers(dest="recordings_command", required=True, parser_class=type(parser))

    p = rsub.add_parser("add", help="add or replace the recording keyed by --token")
    _data(p)
    p.add_argument("--token", required=True, metavar="T", help="the recording token (1..64 characters, no '/')")
    p.add_argument("--source-token", required=True, metavar="S", help="the Media2 profile that recorded it")
    p.add_argument("--folder", required=True, type=Path, metavar="F",
                   help="folder of MP4/MKV files named with their UTC start, e.g. cam_20260101T120000Z.mp4")
    p.add_argument("--name", default="", metavar="N", help="display name of the recording's source")
    p.add_argument("--description", default="", metavar="D", help="what the recording holds")
    p.set_defaults(handler=recordings_add)

    p = rsub.add_parser("list", help="list the recordings and the files found for each")
    _data(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=recordings_list)

    p = rsub.add_parser("remove", help="remove a recording (its files stay)")
    _data(p)
    p.add_argument("--token", required=True, metavar="T")
    p.set_defaults(handler=recordings_remove)


def recordings_add(args: argparse.Namespace) -> int:
    config = RecordingConfig(token=args.token, source_token=args.source_token, folder=str(args.folder.resolve()),
                             name=args.name, description=args.description)
    configs = load_recording_configs(args.data)
    new = all(c.token != config.token for c in configs)
    save_recording_configs(args.data, [*(c for c in configs if c.token != config.token), config])
    print(f"recording {config.token} {'added' if new else 'replaced'} ({config.folder})")
    return 0


def recordings_list(args: argparse.Namespace) -> int:
    recordings = FolderRecordingStore(args.data).recordings()
    if args.format == "json":
        print(json.dumps([{"token": r.token, "source_token": r.config.source_token, "folder": r.config.folder,
                           "name": r.config.name, "files": len(r.files), "earliest": r.earliest,
                           "latest": r.latest} for r in recordings], indent=2, ensure_ascii=False))
        return 0
    for r in recordings:
        print(f"{r.token}\t{r.config.source_token}\t{len(r.files)} file(s)\t{r.config.folder}")
    return 0


def recordings_remove(args: argparse.Namespace) -> int:
    configs = load_recording_configs(args.data)
    if all(c.token != args.token for c in configs):
        print(f"iec62676: error: no recording with token {args.token!r}", file=sys.stderr)
        return 2
    save_recording_configs(args.data, [c for c in configs if c.token != args.token])
    print(f"recording {args.token} removed")
    return 0
