"""The replay RTSP server process, run by :class:`.replay_server.ReplayServer` (ANX-B-3).

A script for Debian's ``/usr/bin/python3`` (the interpreter with GStreamer's
bindings): only the standard library and ``gi`` are imported, never this
package. See :mod:`.replay_server` for the theory of operation: one mount per
recording, the segments played back to back, and a PLAY's ``Range: clock=``
rewritten to ``npt=`` before GStreamer seeks.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

#: How often the index file is looked at again (seconds).
RELOAD_INTERVAL = 2.0
#: Player connections served at once; one more is closed at once. Each costs little until its DESCRIBE,
#: which prepares a pipeline of its own (measured: 3 threads and about 0.85 MiB each).
MAX_CLIENTS = 32
#: Sessions one connection may hold (a player needs one per recording it plays); a SETUP beyond is 503.
MAX_SESSIONS_PER_CLIENT = 4
#: Sessions of all players at once (each holds a pipeline); a SETUP beyond is 503 (GStreamer's own check).
MAX_SESSIONS = 64
#: Seconds a player connection may go without a session (a player SETUPs right after it connects).
SESSIONLESS_TIMEOUT = 15.0
#: Largest request body read (no request a player sends needs one; GStreamer's default is 4 GiB, buffered).
MAX_BODY = 4096


def _clock_instant(text: str) -> float | None:
    """``20260101T120005Z`` or ``20260101T120005.25Z`` (RFC 2326 utc-time) as epoch seconds."""
    match = re.fullmatch(r"(\d{8})T(\d{6})(\.\d+)?Z", text.strip())
    if match is None:
        return None
    day, clock = match.group(1), match.group(2)
    try:  # datetime checks the fields (calendar.timegm would take 23:59:99 as the next minute)
        when = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), int(clock[:2]), int(clock[2:4]), int(clock[4:]),
                        tzinfo=UTC)
    except ValueError:
        return None
    return when.timestamp() + float(match.group(3) or 0.0)


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
    if stop is None or stop < start:  # not a time, or backwards (no reverse playback)
        return None
    last = _offset(segments, stop)
    return f"npt={first:.3f}-{(sum(s['duration'] for s in segments) if last is None else last):.3f}"


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
    pool = server.get_session_pool()
    pool.set_max_sessions(MAX_SESSIONS)
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

    def nothing_to_play(value: str) -> bool:
        """A range that ends where (or before) it starts, read as GStreamer reads it: its PLAY would abort
        the whole process (gst_rtsp_media_get_rates asserts), so it is refused first."""
        parsed, time_range = GstRtsp.rtsp_range_parse(value)
        if parsed != GstRtsp.RTSPResult.OK:
            return False  # GStreamer answers it itself
        _, start, stop = GstRtsp.rtsp_range_get_times(time_range)
        return Gst.CLOCK_TIME_NONE not in (start, stop) and stop <= start

    def pre_play(client: object, ctx: GstRtspServer.RTSPContext) -> GstRtsp.RTSPStatusCode:
        try:
            result, value = ctx.request.get_header(GstRtsp.RTSPHeaderField.RANGE, 0)
        except UnicodeDecodeError:  # the binding's str: a Range that is not UTF-8 is no range of ours
            return GstRtsp.RTSPStatusCode.BAD_REQUEST
        if result != GstRtsp.RTSPResult.OK:
            return GstRtsp.RTSPStatusCode.OK
        if not value.strip().startswith("clock="):
            return GstRtsp.RTSPStatusCode.INVALID_RANGE if nothing_to_play(value) else GstRtsp.RTSPStatusCode.OK
        segments = segments_for(ctx.uri.abspath)
        npt = None if not segments else _npt_range(value, segments)
        if npt is None or nothing_to_play(npt):
            return GstRtsp.RTSPStatusCode.INVALID_RANGE
        range_field = int(GstRtsp.RTSPHeaderField.RANGE)
        request = _current_request(rtsp_server_lib)
        rtsp_lib.gst_rtsp_message_remove_header(request, range_field, -1)
        rtsp_lib.gst_rtsp_message_add_header(request, range_field, npt.encode())
        return GstRtsp.RTSPStatusCode.OK

    def check_requirements(client: object, ctx: object, requirements: list[str]) -> str:
        return ", ".join(r for r in requirements if r != "onvif-replay")

    empty: set[str] = set()  # sessions without media at the last sweep

    def expire() -> bool:
        """GStreamer drops a session past its timeout only when asked to, and keeps the sessions whose
        player's connection closed (their media gone) until then: both would hold a place among MAX_SESSIONS.
        A session is dropped when it has no media at two sweeps in a row: the clients' thread adds a new
        session's media right after creating it, so one sweep may see it empty for a moment."""
        pool.cleanup()
        seen: set[str] = set()

        def sweep(_pool: object, session: GstRtspServer.RTSPSession) -> GstRtspServer.RTSPFilterResult:
            if session.filter(None):
                return GstRtspServer.RTSPFilterResult.KEEP
            token = session.get_sessionid()
            if token in empty:
                return GstRtspServer.RTSPFilterResult.REMOVE
            seen.add(token)
            return GstRtspServer.RTSPFilterResult.KEEP

        pool.filter(sweep)
        empty.clear()
        empty.update(seen)
        reap()
        return True

    def pre_setup(client: GstRtspServer.RTSPClient, ctx: GstRtspServer.RTSPContext) -> GstRtsp.RTSPStatusCode:
        result, _ = ctx.request.get_header(GstRtsp.RTSPHeaderField.SESSION, 0)
        if result != GstRtsp.RTSPResult.OK and len(client.session_filter(None)) >= MAX_SESSIONS_PER_CLIENT:
            return GstRtsp.RTSPStatusCode.SERVICE_UNAVAILABLE
        return GstRtsp.RTSPStatusCode.OK

    # Connected players and when each last had a session (or connected); "client-connected" and the sweep
    # come on this thread, "closed" on the clients' thread.
    clients: dict[GstRtspServer.RTSPClient, float] = {}
    counting = threading.Lock()

    def closed(client: GstRtspServer.RTSPClient) -> None:
        with counting:
            clients.pop(client, None)

    def close(client: GstRtspServer.RTSPClient) -> bool:
        client.close()
        return False

    def reap() -> None:
        """Close the connections that have held no session for SESSIONLESS_TIMEOUT seconds: idle
        connections would otherwise hold the MAX_CLIENTS places for good."""
        now = time.monotonic()
        with counting:
            held = list(clients.items())
        for client, since in held:
            if client.session_filter(None):
                with counting:
                    if client in clients:
                        clients[client] = now
            elif now - since > SESSIONLESS_TIMEOUT:
                print(f"a player connection without a session for {SESSIONLESS_TIMEOUT:g} s closed", file=sys.stderr)
                client.close()

    def connected(_server: object, client: GstRtspServer.RTSPClient) -> None:
        with counting:
            admitted = len(clients) < MAX_CLIENTS
            if admitted:
                clients[client] = time.monotonic()
        if not admitted:
            print(f"{MAX_CLIENTS} players are connected already: one more refused", file=sys.stderr)
            GLib.idle_add(close, client)  # once the server has attached it
            return
        client.connect("closed", closed)
        client.get_connection().set_content_length_limit(MAX_BODY)  # the client's own setting comes too late
        client.connect("pre-setup-request", pre_setup)
        client.connect("pre-play-request", pre_play)
        client.connect("check-requirements", check_requirements)

    server.connect("client-connected", connected)
    reload()
    GLib.timeout_add(int(RELOAD_INTERVAL * 1000), reload)
    GLib.timeout_add(int(RELOAD_INTERVAL * 1000), expire)
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
