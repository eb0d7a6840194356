"""Layer 4: the sample recording store on disk — configured folders of MP4/MKV files (ANX-B-3, ANX-B-5).

The recordings a device serves with the sample store are configured in
``<data>/recordings.json`` (``iec62676 recordings add|list|remove``): a token,
the Media2 profile that made it (ANX-B-5) and a folder. Every ``.mp4`` /
``.mkv`` file of the folder whose name carries a UTC stamp
(:func:`~..domain.recordings.start_from_name`) is a segment; its duration
comes from ``ffprobe`` (one run per file, bounded by :data:`PROBE_TIMEOUT`,
cached by path, size and modification time; a file ffprobe cannot read is
left out and logged). :class:`FolderRecordingStore` looks at the folders again
when their modification time changes, so a growing recording is seen without a
restart.

A new index is built by one thread at a time, outside the lock that hands the
index out: while it probes a folder of new files, every other search answers
from the last whole index at once (only the very first index is waited for),
never from a half-built one, and no file is probed by two threads. The cache
of durations holds the files of the newest index only (a removed or rewritten
file leaves it) and at most :data:`MAX_PROBED` of them.

The configuration file is replaced atomically (write a temporary file,
``os.replace``): a crash leaves the old or the new list, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from ..domain.recordings import IndexedRecordingStore, Recording, RecordingConfig, RecordingFile, start_from_name
from ..errors import ConfigurationError

__all__ = [
    "RECORDINGS_FILE",
    "FolderRecordingStore",
    "load_recording_configs",
    "probe_duration",
    "save_recording_configs",
]

log = logging.getLogger(__name__)

RECORDINGS_FILE = "recordings.json"
#: Longest wait for one ffprobe run.
PROBE_TIMEOUT = 20.0
#: Most files indexed per recording folder (a folder is a list the store holds in memory).
MAX_FILES = 100_000
#: Most probed durations cached (files past it are probed again at each new index).
MAX_PROBED = 200_000
VIDEO_SUFFIXES = (".mp4", ".mkv")
#: Most recordings one device configures.
MAX_RECORDINGS = 1_000


def load_recording_configs(data_dir: str | Path) -> list[RecordingConfig]:
    """The configured recordings (none when the file does not exist)."""
    path = Path(data_dir) / RECORDINGS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: cannot read the recordings configuration: {exc}") from None
    if not isinstance(raw, list):
        raise ConfigurationError(f"{path}: the recordings configuration must be a JSON list")
    try:
        return [RecordingConfig(**{k: str(v) for k, v in entry.items()}) for entry in raw]
    except (TypeError, AttributeError) as exc:
        raise ConfigurationError(f"{path}: a recording entry is malformed: {exc}") from None


def save_recording_configs(data_dir: str | Path, configs: Iterable[RecordingConfig]) -> None:
    """Replace the configured recordings atomically."""
    entries = [{"token": c.token, "source_token": c.source_token, "folder": c.folder, "name": c.name,
                "description": c.description} for c in configs]
    if len({e["token"] for e in entries}) != len(entries):
        raise ConfigurationError("two recordings have the same token")
    if len(entries) > MAX_RECORDINGS:
        raise ConfigurationError(f"at most {MAX_RECORDINGS} recordings can be configured")
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".recordings-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(entries, out, indent=2, ensure_ascii=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, folder / RECORDINGS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def probe_duration(path: Path) -> float | None:
    """The duration of a media file in seconds (``ffprobe``), or ``None`` when it cannot be read."""
    try:
        done = subprocess.run(  # a fixed argument list, no shell
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
            capture_output=True, timeout=PROBE_TIMEOUT, check=False, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot probe %s: %s", path, exc)
        return None
    try:
        duration = float(done.stdout.strip())
    except ValueError:
        log.warning("cannot probe %s: ffprobe gave no duration (%s)", path, done.stderr.strip()[:200])
        return None
    return duration if duration > 0 else None


class FolderRecordingStore:
    """The configured recordings of a data folder, each indexed from its folder of video files."""

    def __init__(self, data_dir: str | Path) -> None:
        self._data_dir = Path(data_dir)
        self._lock = threading.Lock()  # guards _seen and _store: held for an instant, never during a probe
        self._indexing = threading.Lock()  # one index is built at a time, so no file is probed twice at once
        self._probed: dict[tuple[str, int, int], float | None] = {}  # only the builder reads or writes it
        self._seen: tuple[object, ...] | None = None
        self._store = IndexedRecordingStore(())

    def _stamp(self, configs: list[RecordingConfig]) -> tuple[object, ...]:
        def mtime(path: Path) -> int:
            try:
                return path.stat().st_mtime_ns
            except OSError:
                return -1
        return (mtime(self._data_dir / RECORDINGS_FILE),
                *((c, mtime(Path(c.folder))) for c in configs))

    def _files(self, config: RecordingConfig, probed: dict[tuple[str, int, int], float | None]
               ) -> list[RecordingFile]:
        """The segments of ``config``'s folder; the durations of the files that are still there are added to
        ``probed`` (from the last index's cache, or ffprobe)."""
        folder = Path(config.folder)
        try:
            entries = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        except OSError as exc:
            log.warning("recording %s: cannot list %s: %s", config.token, folder, exc.strerror or exc)
            return []
        files = []
        for path in entries[:MAX_FILES]:
            start = start_from_name(path.name)
            if start is None:
                continue
            try:
                stat = path.stat()
            except OSError:  # removed since the listing
                continue
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            duration = self._probed[key] if key in self._probed else probe_duration(path)
            if len(probed) < MAX_PROBED:
                probed[key] = duration
            if duration is not None:
                files.append(RecordingFile(path=str(path.resolve()), start=start, duration=duration))
        return files

    def _current(self) -> IndexedRecordingStore:
        """The index, built again when the configuration or a folder changed. It is built outside the lock
        that answers searches: while one thread probes new files, the others answer from the last whole
        index (they wait only for the very first one)."""
        configs = load_recording_configs(self._data_dir)
        stamp = self._stamp(configs)
        with self._lock:
            if stamp == self._seen:
                return self._store
            first = self._seen is None
        if not self._indexing.acquire(blocking=first):
            with self._lock:
                return self._store
        try:
            with self._lock:
                if stamp == self._seen:  # built by the thread this one waited for
                    return self._store
            probed: dict[tuple[str, int, int], float | None] = {}
            store = IndexedRecordingStore([(c, self._files(c, probed)) for c in configs])
            self._probed = probed  # the files of this index only: removed and changed files leave the cache
            with self._lock:
                self._store, self._seen = store, stamp
            return store
        finally:
            self._indexing.release()
    def recordings(self) -> list[Recording]:
        return self._current().recordings()

    def recording(self, token: str) -> Recording | None:
        return self._current().recording(token)
