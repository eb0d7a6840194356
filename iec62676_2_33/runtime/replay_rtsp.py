"""The replay RTSP server process, run by :class:`.replay_server.ReplayServer` (ANX-B-3).

A script for Debian's ``/usr/bin/python3`` (the interpreter with GStreamer's
bindings): only the standard library and ``gi`` are imported, never this
package. See :mod:`.replay_server` for the theory of operation: one mount per
recording, the segments played back to back, and a PLAY's ``Range: clock=``
rewritten to ``npt=`` before GStreamer seeks.
"""

from __future__ import annotations

import calendar
import ctypes
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import quote

#: How often the index file is looked at again (seconds).
RELOAD_INTERVAL = 2.0


def _clock_instant(text: str) -> float | None:
    """``20260101T120005Z`` or ``20260101T120005.25Z`` (RFC 2326 utc-time) as epoch seconds."""
    match = re.fullmatch(r"(\d{8})T(\d{6})(\.\d+)?Z", text.strip())
    if match is None:
        return None
    day, clock = match.group(1), match.group(2)
    try:
        parts = (int(day[:4]), int(day[4:6]), int(day[6:]), int(clock[:2]), int(clock[2:4]), int(clock[4:]))
        return calendar.timegm((*parts, 0, 0, 0)) + float(match.group(3) or 0.0)
    except (ValueError, OverflowError):
        return None


def _offset(segments: list[dict[str, float]], instant: float) -> float | None:
    """Seconds into the back-to-back timeline (the same rule as Recording.offset_of)."""
    offset = 0.0
    for segment in segments:
        if instant < segment["start"] + segment["duration"]:
            return offset + max(0.0, instant - segment["start"])
        offset += segment["duration"]
    return None


def _npt_range(value: str, segments: list[dict[str, float]]) -> str | None:
    """``clock=A-[B]`` → ``npt=a-[b]``; ``None`` when it cannot be served."""
    begin, _, end = value.strip()[len("clock="):].partition("-")
    start = _clock_instant(begin)
    if start is None:
        return None
    first = _offset(segments, start)
    if first is None:
        return None
    if not end.strip():
        return f"npt={first:.3f}-"
    stop = _clock_instant(end)
    last = None if stop is None else _offset(segments, stop)
    total = sum(s["duration"] for s in segments)
    return f"npt={first:.3f}-{(total if last is None else last):.3f}"


def _launch(token: str, segments: list[dict[str, float]], links: Path) -> str | None:
    """The launch line of ``token``'s mount. File names never enter it: every segment is reached through a
    link of our own naming (``<links>/<sha256 of the token>/part000000.mp4``), so a file named with quotes
    and ``!`` cannot add elements to the pipeline, and no token (``..``) can name a folder outside ``links``."""
    paths = [str(s["path"]) for s in segments]
    pay = " ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    if len(paths) > 1 and not all(p.lower().endswith(".mp4") for p in paths):
        print(f"recording {token}: several files that are not all MP4: not mounted", file=sys.stderr)
        return None
    folder = links / hashlib.sha256(token.encode()).hexdigest()[:32]
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for n, path in enumerate(paths):
        (folder / f"part{n:06d}{Path(path).suffix.lower()}").symlink_to(path)
    if len(paths) == 1:
        return f'( filesrc location="{next(folder.iterdir())}" ! parsebin{pay}'
    return f'( splitmuxsrc location="{folder}/part*.mp4"{pay}'


def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libgstrtsp and libgstrtspserver, for editing the request being handled in place.

    PyGObject hands a signal handler a *copy* of the boxed ``GstRTSPMessage``
    (``ctx.request``): headers changed through the binding never reach the
    server (tried: GStreamer then answered the original ``clock=`` range).
    So the handler edits the real message through the C API.
    """
    rtsp = ctypes.CDLL("libgstrtsp-1.0.so.0")
    server = ctypes.CDLL("libgstrtspserver-1.0.so.0")
    server.gst_rtsp_context_get_current.restype = ctypes.c_void_p
    for name in ("gst_rtsp_message_remove_header", "gst_rtsp_message_add_header"):
        getattr(rtsp, name).restype = ctypes.c_int
    rtsp.gst_rtsp_message_remove_header.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    rtsp.gst_rtsp_message_add_header.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
    return rtsp, server


def _current_request(server_lib: ctypes.CDLL) -> int:
    """The ``GstRTSPMessage *request`` of the context being handled (``GstRTSPContext``: server, conn,
    client, request, … — rtsp-context.h, a public and stable layout)."""
    context = server_lib.gst_rtsp_context_get_current()
    if not context:
        raise RuntimeError("no RTSP request is being handled")
    request = ctypes.c_void_p.from_address(context + 3 * ctypes.sizeof(ctypes.c_void_p)).value
    if not request:
        raise RuntimeError("the RTSP context has no request")
    return request


def _serve(host: str, port: int, index_path: str, mount: str) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    rtsp_lib, rtsp_server_lib = _libraries()
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))
    mounts = server.get_mount_points()
    links = Path(index_path).parent / "links"  # inside the starter's folder: removed with it
    links.mkdir(exist_ok=True)
    state: dict[str, object] = {"mtime": None, "index": {}}

    def path_of(token: str) -> str:
        return f"{mount}/{quote(token, safe='')}"

    def reload() -> bool:
        try:
            mtime = os.stat(index_path).st_mtime_ns
            if mtime == state["mtime"]:
                return True
            with open(index_path, encoding="utf-8") as handle:
                index = json.load(handle)
        except (OSError, ValueError) as exc:
            print(f"cannot read the index: {exc}", file=sys.stderr)
            return True
        old = state["index"]
        assert isinstance(old, dict)
        for token in old:
            mounts.remove_factory(path_of(token))
        for token, segments in index.items():
            launch = _launch(token, segments, links) if segments else None
            if launch is None:
                continue
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(launch)
            factory.set_shared(False)
            mounts.add_factory(path_of(token), factory)
        state["mtime"], state["index"] = mtime, index
        return True

    def segments_for(path: str) -> list[dict[str, float]] | None:
        index = state["index"]
        assert isinstance(index, dict)
        for token, segments in index.items():
            mount = path_of(token)
            if path == mount or path.startswith(mount + "/"):
                return list(segments)
        return None

    def pre_play(client: object, ctx: GstRtspServer.RTSPContext) -> GstRtsp.RTSPStatusCode:
        result, value = ctx.request.get_header(GstRtsp.RTSPHeaderField.RANGE, 0)
        if result != GstRtsp.RTSPResult.OK or not value.strip().startswith("clock="):
            return GstRtsp.RTSPStatusCode.OK
        segments = segments_for(ctx.uri.abspath)
        npt = None if not segments else _npt_range(value, segments)
        if npt is None:
            return GstRtsp.RTSPStatusCode.INVALID_RANGE
        range_field = int(GstRtsp.RTSPHeaderField.RANGE)
        request = _current_request(rtsp_server_lib)
        rtsp_lib.gst_rtsp_message_remove_header(request, range_field, -1)
        rtsp_lib.gst_rtsp_message_add_header(request, range_field, npt.encode())
        return GstRtsp.RTSPStatusCode.OK

    def check_requirements(client: object, ctx: object, requirements: list[str]) -> str:
        return ", ".join(r for r in requirements if r != "onvif-replay")

    def connected(_server: object, client: GstRtspServer.RTSPClient) -> None:
        client.connect("pre-play-request", pre_play)
        client.connect("check-requirements", check_requirements)

    server.connect("client-connected", connected)
    reload()
    GLib.timeout_add(int(RELOAD_INTERVAL * 1000), reload)
    server.attach(None)
    print(f"PORT {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":  # pragma: no cover - the process itself - the subprocess
    import argparse

    parser = argparse.ArgumentParser(description="replay RTSP server (started by ReplayServer)")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--mount", required=True)
    arguments = parser.parse_args()
    _serve(arguments.host, arguments.port, arguments.index, arguments.mount)
