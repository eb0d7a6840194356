"""Layer 7: ``iec62676 device media …`` — the device's media sources (STR-1, ANX-B-1).

Thin: parse arguments, build a :class:`~..domain.media.MediaSource`, store it
through :meth:`~..store.DeviceStore.put_media_source` (which runs the one
validation, :func:`~..domain.media.validate_media_source`). A running
``device serve`` serves every stored source as a Media2 profile.

* ``add --data DIR --token T --name N --rtsp rtsp://HOST:PORT/path [--snapshot URL]
  [--encoding H264 --width W --height H] [--rtsp-user U --rtsp-password-file F]``
  — add or replace the source keyed by ``--token`` (a first-run command: it
  creates the data folder). The camera-side password is
  read from a file (first line), never from the command line, so it stays out
  of shell history and process listings.
* ``list --data DIR [--format table|json]`` — every source; never a password.
* ``remove --data DIR --token T`` — remove one source.

``list`` and ``remove`` need an existing device (:func:`.options.add_data`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..domain.media import ENCODINGS, MediaSource
from ..store import DeviceStore
from .options import add_data, first_line

__all__ = ["register_media_group"]


def register_media_group(dsub: Any) -> None:
    """Add the ``media`` group to the subparsers of ``iec62676 device``."""
    parser = dsub.add_parser("media", help="media sources: the camera-side RTSP streams served as Media2 profiles")
    msub = parser.add_subparsers(dest="media_command", required=True, parser_class=type(parser))

    p = msub.add_parser("add", help="add or replace the media source keyed by --token")
    add_data(p, creates=True)
    p.add_argument("--token", required=True, metavar="T", help="the Media2 profile token (1..64 characters)")
    p.add_argument("--name", required=True, metavar="N", help="the profile's display name")
    p.add_argument("--rtsp", required=True, metavar="URL", help="the camera-side stream, rtsp://HOST:PORT/path")
    p.add_argument("--snapshot", metavar="URL", help="a JPEG snapshot URL, http(s)://…")
    p.add_argument("--encoding", default="H264", choices=ENCODINGS)
    p.add_argument("--width", type=int, metavar="W")
    p.add_argument("--height", type=int, metavar="H")
    p.add_argument("--rtsp-user", metavar="U", help="user name the camera's RTSP server wants")
    p.add_argument("--rtsp-password-file", type=Path, metavar="F",
                   help="file whose first line is the camera's RTSP password")
    p.set_defaults(handler=media_add)

    p = msub.add_parser("list", help="list media sources (never their passwords)")
    add_data(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=media_list)

    p = msub.add_parser("remove", help="remove a media source")
    add_data(p)
    p.add_argument("--token", required=True, metavar="T")
    p.set_defaults(handler=media_remove)


def media_add(args: argparse.Namespace) -> int:
    src = MediaSource(token=args.token, name=args.name, rtsp_url=args.rtsp, snapshot_url=args.snapshot,
                      encoding=args.encoding, width=args.width, height=args.height,
                      username=args.rtsp_user, password=None if args.rtsp_password_file is None else
                      first_line(args.rtsp_password_file, "--rtsp-password-file"))
    with DeviceStore(args.data) as store:
        new = store.put_media_source(src)
    print(f"media source {src.token} {'added' if new else 'replaced'} ({src.rtsp_url})")
    return 0


def _public(src: MediaSource) -> dict[str, object]:
    return {"token": src.token, "name": src.name, "rtsp": src.rtsp_url, "snapshot": src.snapshot_url,
            "encoding": src.encoding, "width": src.width, "height": src.height, "rtsp_user": src.username,
            "has_password": src.password is not None}


def media_list(args: argparse.Namespace) -> int:
    with DeviceStore(args.data) as store:
        sources = store.list_media_sources()
    if args.format == "json":
        print(json.dumps([_public(s) for s in sources], indent=2, ensure_ascii=False))
        return 0
    for s in sources:
        size = f"{s.width}x{s.height}" if s.width is not None else "-"
        user = f"\tuser={s.username}" if s.username is not None else ""
        print(f"{s.token}\t{s.name}\t{s.encoding}\t{size}\t{s.rtsp_url}{user}")  # never the password
    return 0


def media_remove(args: argparse.Namespace) -> int:
    with DeviceStore(args.data) as store:
        if not store.delete_media_source(args.token):
            print(f"iec62676: error: no media source with token {args.token!r}", file=sys.stderr)
            return 2
    print(f"media source {args.token} removed")
    return 0
