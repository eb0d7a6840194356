"""Layer 4: the replay RTSP server — recordings played from their files, seeking on ``Range: clock=`` (ANX-B-3).

GetReplayUri answers ``rtsp://HOST:PORT/replay/<recording token>``; this is
the server behind it. It is GStreamer's RTSP server (``GstRtspServer``), which
exists for Debian's ``/usr/bin/python3`` only (``python3-gi``,
``gir1.2-gst-rtsp-server-1.0``: INTEROP.md), so it runs as a subprocess of
that interpreter (:mod:`.replay_rtsp`, run as a script): :class:`ReplayServer` writes the recordings' index (every
segment's path, UTC start and duration) to a JSON file, starts this module as
a script on it and waits (bounded) for the ``PORT <n>`` line.
:meth:`ReplayServer.refresh` rewrites the index (a thread does so every
:data:`REFRESH_INTERVAL` seconds); the server looks at it again every two
seconds and mounts or unmounts recordings.

The subprocess is supervised: a thread waits for it to end, and when it
ends before :meth:`ReplayServer.close` (a crash, an assertion in GStreamer,
``kill -9``) it is started again on the port it had (the replay URIs handed
out name that port; GStreamer's listener reuses the address, so connections
of the old process in TIME_WAIT do not block it), after a pause that doubles
from :data:`RESTART_DELAY` to :data:`MAX_RESTART_DELAY` while restarts keep
failing (the port taken by another program meanwhile, the process dying at
start), and is short again once a process served :data:`STABLE_AFTER`
seconds. Each restart is one warning line. Players connected to the old
process lose their session and set up again. :meth:`ReplayServer.close` stops
the supervisor first, so a process it is starting is ended too.

``device serve`` (:func:`~.device.run_device`) starts it with
:func:`start_replay_server` when recordings are configured. A host that
cannot run it (no GStreamer RTSP server: the interpreter or its bindings
missing, or no ``PORT`` line in time) is :class:`ReplayUnavailable`: one
warning line, and the device serves Recording Search while GetReplayUri
faults ``Receiver/ActionNotSupported`` -- an ONVIF client knows that fault as
"not offered here" and keeps searching, where a device that refused to start
would hide the recordings as well. A port it cannot bind is an operator's
error like any other ``--listen``: the device does not start. Through the
cloud, players reach this server over the uplink's RTSP relay
(:class:`~..domain.media.ReplayRelayBackend`).

Theory of operation (the subprocess)
------------------------------------
Each recording is one mount, ``/replay/<token>``, with its own media per
client (not shared: every player seeks on its own). The media timeline is the
recording's segments played back to back: one file is read by
``filesrc ! parsebin`` (MP4 or MKV), several MP4 files by ``splitmuxsrc``
over links named in time order; a recording of several MKV files is not
mounted (``splitmuxsrc`` reads MP4 only) and is logged. H.264 only, sent as
``rtph264pay``.

An ONVIF replay client asks for a time of day, not a media position: its PLAY
carries ``Range: clock=20260101T120005Z-`` (and ``Require: onvif-replay``,
accepted). Before GStreamer handles the PLAY, the ``pre-play-request`` hook
rewrites that header into ``Range: npt=<offset>-[<offset>]`` with the same
mapping as :meth:`~..domain.recordings.Recording.offset_of` (an instant in a
gap plays from the next file; after the recording: ``457 Invalid Range``), so
GStreamer's own seeking does the rest. A range with nothing to play (its end
at or before its start, in any unit: GStreamer would abort the process on it),
a ``clock=`` time that is no time of day and a Range that is not UTF-8 are
refused in that hook too (457, 400).

The process is bounded where GStreamer is not: at most ``MAX_CLIENTS`` player
connections (one more is closed at once; each DESCRIBE prepares a pipeline),
``MAX_SESSIONS_PER_CLIENT`` sessions per connection and ``MAX_SESSIONS`` in
all (503 beyond), request bodies of ``MAX_BODY`` bytes (413 and closed;
GStreamer's default buffers up to 4 GiB). Sessions past their timeout, and
those whose player's connection closed, are dropped every two seconds
(GStreamer keeps both until asked), and a connection that has held no session
for ``SESSIONLESS_TIMEOUT`` seconds is closed, so idle sockets cannot keep
the places. Request heads have no bound in GStreamer
(a head of endless header lines grows the process): what reaches this server
through the uplink's RTSP relay is cut by the relay's own bounds; the direct
port should stay on loopback. What remains of the ONVIF replay
profile (the RTP header extension with NTP times, ``Rate-Control: no``,
reverse playback) is not done.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

from ..errors import ConfigurationError
from .http_server import parse_listen

if TYPE_CHECKING:
    from ..domain.recordings import RecordingStore

__all__ = ["REPLAY_MOUNT", "SYSTEM_PYTHON", "ReplayServer", "ReplayUnavailable", "replay_available",
           "start_replay_server"]

log = logging.getLogger(__name__)

#: The interpreter that has GStreamer's introspection bindings (Debian's).
SYSTEM_PYTHON = "/usr/bin/python3"
#: Mount prefix of every recording.
REPLAY_MOUNT = "/replay"
#: Longest wait for the subprocess to announce its port.
START_TIMEOUT = 20.0
#: Longest wait for the subprocess to end at close().
STOP_TIMEOUT = 5.0
#: How often the index is written again for the subprocess (which reads it every two seconds).
REFRESH_INTERVAL = 2.0
#: First pause before the subprocess is started again after it ended; it doubles while restarts keep failing.
RESTART_DELAY = 0.5
#: Longest pause between two restarts.
MAX_RESTART_DELAY = 30.0
#: A process that served this many seconds ended by accident, not at start: the next pause is the first again.
STABLE_AFTER = 60.0
#: What a start failure asks the operator to check.
_NEEDS = "is GStreamer's RTSP server installed (python3-gi, gir1.2-gst-rtsp-server-1.0)?"


def replay_available() -> bool:
    """Are Debian's GStreamer RTSP server bindings installed?"""
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer")
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class ReplayUnavailable(ConfigurationError):
    """The replay server cannot run on this host (no GStreamer RTSP server); a port it cannot bind is a
    plain :class:`~..errors.ConfigurationError`."""


def start_replay_server(store: RecordingStore, listen: str) -> ReplayServer | None:
    """The replay server for ``store`` on ``listen`` (``HOST:PORT``, port 0: a free one), or ``None`` when
    this host cannot run it: then one warning line says so, and the device serves Recording Search while
    GetReplayUri faults ``Receiver/ActionNotSupported`` (:mod:`..services.recording`). A port it cannot
    bind raises :class:`~..errors.ConfigurationError`, like the device's own ``listen``. Blocks up to
    :data:`START_TIMEOUT` seconds (run it in a thread)."""
    host, port = parse_listen(listen)
    if not _loopback(host):
        log.warning("the replay RTSP server on %s has no authentication of its own: whoever reaches it can play "
                    "every recording (GetReplayUri's access control does not guard it); prefer loopback and the "
                    "cloud's RTSP front", listen)
    try:
        return ReplayServer(store, host=host, port=port)
    except ReplayUnavailable as exc:
        log.warning("recordings are searchable but not replayed: %s", exc)
        return None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _announced_port(line: str) -> int | None:
    """The port of the subprocess's ``PORT <n>`` line (``-1``: it could not bind), ``None`` for anything else."""
    word, _, number = line.strip().partition(" ")
    try:
        return int(number) if word == "PORT" else None
    except ValueError:
        return None


def _index(store: RecordingStore) -> dict[str, list[dict[str, object]]]:
    return {r.token: [{"path": f.path, "start": f.start, "duration": f.duration} for f in r.files]
            for r in store.recordings()}


def _drain(process: subprocess.Popen[str]) -> None:
    """Log what a subprocess says (its stderr), so its pipe never fills."""
    assert process.stderr is not None
    for text in process.stderr:
        log.info("replay server: %s", text.rstrip()[:300])


def _stop(process: subprocess.Popen[str]) -> None:
    """End ``process`` (terminate, then kill; each wait bounded) and close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class ReplayServer:
    """The replay RTSP server subprocess for the recordings of ``store``; ``base`` is the prefix of
    replay URIs (``rtsp://host:port/replay``)."""

    def __init__(self, store: RecordingStore, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._store = store
        self._host = host
        self._folder = tempfile.TemporaryDirectory(prefix="iec62676-replay-")
        self._index_path = Path(self._folder.name) / "index.json"
        self._closing = threading.Event()
        self._lock = threading.Lock()  # guards _process against close() while the supervisor replaces it
        self.refresh()
        try:
            self._process, bound = self._spawn(port)
        except ConfigurationError:
            self._folder.cleanup()
            raise
        shown = f"[{host}]" if ":" in host else host
        self._port = bound
        self.base = f"rtsp://{shown}:{bound}{REPLAY_MOUNT}"
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
        self._refresher.start()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _spawn(self, port: int) -> tuple[subprocess.Popen[str], int]:
        """Start the subprocess on ``port`` and wait (bounded) for its ``PORT`` line: the process and its
        port; on failure the process is gone and the reason raised in one line."""
        try:
            process = subprocess.Popen(  # a fixed argument list, no shell
                [SYSTEM_PYTHON, str(Path(__file__).with_name("replay_rtsp.py")), "--host", self._host, "--port",
                 str(port), "--index", str(self._index_path), "--mount", REPLAY_MOUNT],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            raise ReplayUnavailable(f"cannot start the replay server ({SYSTEM_PYTHON}): {exc.strerror or exc}; "
                                    f"{_NEEDS}") from None
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(process.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while reader.is_alive() and time.monotonic() < deadline and not self._closing.is_set():
            reader.join(0.1)  # a close() meanwhile ends the wait
        bound = _announced_port(line[0] if line else "")
        if bound is None or bound <= 0:
            failure = self._start_failure(process, port, bound)
            _stop(process)
            raise failure
        threading.Thread(target=_drain, args=(process,), daemon=True).start()
        return process, bound

    def _start_failure(self, process: subprocess.Popen[str], port: int, bound: int | None) -> ConfigurationError:
        """Why the subprocess announced no port, in one line."""
        if bound is not None:  # GStreamer could not bind: it announces -1 and keeps running
            return ConfigurationError(f"the replay server cannot listen on {self._host}:{port} "
                                      "(in use or not an address of this host)")
        if process.poll() is None:
            return ReplayUnavailable(f"the replay server did not start within {START_TIMEOUT:g} s; {_NEEDS}")
        try:
            said = process.communicate(timeout=STOP_TIMEOUT)[1]
        except subprocess.TimeoutExpired:
            said = ""
        last = next((text.strip() for text in reversed(said.splitlines()) if text.strip()), "no message")
        return ReplayUnavailable(f"the replay server exited at start ({last[:200]}); {_NEEDS}")

    def _supervise(self) -> None:
        """Start the subprocess again whenever it ends before :meth:`close`, on the same port (the replay URIs
        handed out name it), after a pause that doubles from :data:`RESTART_DELAY` to :data:`MAX_RESTART_DELAY`
        while it keeps failing and is :data:`RESTART_DELAY` again once a process served
        :data:`STABLE_AFTER` seconds. One line is logged per restart."""
        delay = RESTART_DELAY
        while True:
            started = time.monotonic()
            reason = f"exit status {self._process.wait()}"
            if time.monotonic() - started >= STABLE_AFTER:
                delay = RESTART_DELAY
            process = None
            while process is None:
                if self._closing.is_set():
                    return
                log.warning("the replay server stopped (%s): starting it again on port %d in %g s",
                            reason[:300], self._port, delay)
                if self._closing.wait(delay):
                    return
                delay = min(delay * 2, MAX_RESTART_DELAY)
                try:
                    process = self._spawn(self._port)[0]
                except ConfigurationError as exc:
                    reason = str(exc)
            with self._lock:
                if not self._closing.is_set():
                    self._process = process
                    continue
            _stop(process)  # close() came while it started
            return

    def _refresh_loop(self) -> None:
        """New files and recordings reach the subprocess within :data:`REFRESH_INTERVAL` seconds."""
        while not self._closing.wait(REFRESH_INTERVAL):
            try:
                self.refresh()
            except (OSError, ConfigurationError) as exc:
                log.warning("replay index not refreshed: %s", exc)

    def refresh(self) -> None:
        """Write the current index of the store for the subprocess (atomically), when it changed."""
        text = json.dumps(_index(self._store))
        if text == getattr(self, "_written", None):
            return
        fd, tmp = tempfile.mkstemp(dir=self._folder.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, self._index_path)
        self._written = text

    def close(self) -> None:
        """Stop the supervisor, the refresher and the subprocess (each wait bounded)."""
        with self._lock:
            self._closing.set()
            process = self._process
        _stop(process)
        self._supervisor.join(START_TIMEOUT + STOP_TIMEOUT)
        self._refresher.join(STOP_TIMEOUT)
        self._folder.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
