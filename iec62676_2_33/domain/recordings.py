"""Layer 6 (domain): recordings for Recording Search and Replay — the store interface, the index of a
folder of video files, search sessions and the replay time mapping (ANX-B-3, ANX-B-5).

A device or VSS presents its recordings *edge-storage style* (ANX-B-5): each
:class:`Recording` names the Media2 profile that made it (``source_token``),
so an upper VSS can tell which device a recording comes from and filter by
its prefix. Each recording has one video track (``VIDEO``) made of
:class:`RecordingFile` segments: a file, the UTC instant its first frame
was taken and its duration. Firmware plugs its own storage in as a
:class:`RecordingStore`; :class:`IndexedRecordingStore` is the sample one,
built from folder listings that the runtime makes (:mod:`..runtime.recording_files`).

Theory of operation
-------------------
No I/O and no clock here: the runtime lists and probes the files, and every
time-dependent call takes ``now`` (seconds since the epoch).

*Start times* come from the file name: a UTC stamp ``YYYYMMDDTHHMMSS[.ffffff]Z``
anywhere in it (``cam1_20260101T120000Z.mp4``) — what recorders such as
``splitmuxsink``/``ffmpeg -strftime`` write — parsed by :func:`start_from_name`.

*Searches* (:class:`SearchSessions`) are ONVIF's find/get/end jobs. A Find
computes the complete result at once (the index is in memory), so the state
is ``Completed`` as soon as it is created and a Get pages through the result
(``MaxResults`` per call, bounded by :data:`MAX_RESULTS_PER_CALL`). Its token
is random (80 bits), like a pull point's address: every READ_MEDIA
user may search, and only the one who was answered a token can page through,
or end, that search -- a counter would let one user take another's results. A session
lives ``KeepAliveTime`` past its last Find/Get; an expired one is purged on
the next call and its token is then unknown. At most ``max_sessions`` are
open at once (:class:`SearchError` ``ResourceProblem`` beyond), and a result
holds at most ``MaxMatches`` (bounded by :data:`MAX_MATCHES`) entries: the
results are taken from a generator, so no more are ever made.

*Events* (FindEvents) are the ONVIF recording-history events the files
imply: ``tns1:RecordingHistory/Track/State`` with ``IsDataPresent`` true at
the start of each file and false at its end, in time order (reverse order
when ``end < start``, as ONVIF's backward search); ``include_start_state``
adds each track's state at the start point first.

*Replay* maps a UTC instant to a position of the recording's media timeline,
which plays the files one after the other with no gap (:meth:`Recording.offset_of`):
an instant in a gap maps to the start of the next file.
"""

from __future__ import annotations

import heapq
import itertools
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ..errors import ConfigurationError, Iec62676Error
from .tokens import validate_reference_token

__all__ = [
    "MAX_MATCHES",
    "MAX_RESULTS_PER_CALL",
    "TRACK_TOKEN",
    "IndexedRecordingStore",
    "Recording",
    "RecordingConfig",
    "RecordingEvent",
    "RecordingFile",
    "RecordingStore",
    "SearchError",
    "SearchSessions",
    "match_limit",
    "recording_events",
    "start_from_name",
]

#: The one track of a sample recording.
TRACK_TOKEN = "VIDEO"
#: Most results one search may hold, whatever MaxMatches asks.
MAX_MATCHES = 10_000
#: Most results one Get…SearchResults answers.
MAX_RESULTS_PER_CALL = 1_000
#: Longest KeepAliveTime accepted (an abandoned search must not hold a slot for long).
MAX_KEEP_ALIVE = 3600.0
#: tt:Name is at most 64 characters; tt:Description has no limit on the wire, ours is 1024.
MAX_NAME = 64
MAX_DESCRIPTION = 1024

#: Random bytes of a search token: 80 bits, short enough that a VSS's ``joint-search-…`` stays a local token
#: (at most MAX_LOCAL_TOKEN characters, ADR-3) that an upper VSS can prefix.
_TOKEN_BYTES = 10

_STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\.\d{1,6})?Z")


class SearchError(Iec62676Error):
    """A search request refused; ``code``/``subcodes`` are its ONVIF fault."""

    def __init__(self, message: str, *, code: str = "Sender",
                 subcodes: tuple[str, ...] = ("InvalidArgVal", "InvalidToken")) -> None:
        super().__init__(message)
        self.code = code
        self.subcodes = subcodes


def start_from_name(name: str) -> float | None:
    """The UTC instant a ``YYYYMMDDTHHMMSS[.ffffff]Z`` stamp in ``name`` gives (epoch seconds), else ``None``."""
    match = _STAMP.search(name)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    return when.timestamp() + float(match.group(7) or 0.0)


@dataclass(frozen=True, kw_only=True)
class RecordingConfig:
    """A configured recording: its token, the Media2 profile that made it, and the folder of its files."""

    token: str
    source_token: str
    folder: str
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        for what, token in (("recording token", self.token), ("source token", self.source_token)):
            try:
                validate_reference_token(token)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{what}: {exc}") from None
        if "/" in self.token or any(ch.isspace() for ch in self.token) or self.token in (".", ".."):
            raise ConfigurationError(f"recording token {self.token!r} must not contain '/' or whitespace, nor be "
                                     "'.' or '..' (it becomes a path segment of replay URIs)")
        if not self.folder:
            raise ConfigurationError("a recording needs the folder of its files")
        if len(self.name) > MAX_NAME or not self.name.isprintable():
            raise ConfigurationError(f"recording name must be at most {MAX_NAME} printable characters")
        if len(self.description) > MAX_DESCRIPTION or not self.description.isprintable():
            raise ConfigurationError(f"recording description must be at most {MAX_DESCRIPTION} printable characters")


@dataclass(frozen=True, kw_only=True)
class RecordingFile:
    """One segment: ``path``, the UTC instant of its first frame (epoch seconds) and its duration."""

    path: str
    start: float
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, kw_only=True)
class Recording:
    """A recording and its segments (sorted by start, not overlapping)."""

    config: RecordingConfig
    files: tuple[RecordingFile, ...]

    @property
    def token(self) -> str:
        return self.config.token

    @property
    def earliest(self) -> float | None:
        return self.files[0].start if self.files else None

    @property
    def latest(self) -> float | None:
        return max(f.end for f in self.files) if self.files else None

    def offset_of(self, instant: float) -> float | None:
        """Seconds into the media timeline (the files played back to back) where ``instant`` is;
        an instant before the first file or in a gap maps to the next file's start; after the last
        file: ``None``."""
        offset = 0.0
        for segment in self.files:
            if instant < segment.end:
                return offset + max(0.0, instant - segment.start)
            offset += segment.duration
        return None

    def data_present(self, instant: float) -> bool:
        return any(f.start <= instant < f.end for f in self.files)


@dataclass(frozen=True, kw_only=True)
class RecordingEvent:
    """A ``tns1:RecordingHistory/Track/State`` event of one track."""

    recording_token: str
    track_token: str
    time: float
    data_present: bool
    start_state: bool = False


class RecordingStore(Protocol):
    """What firmware plugs in: its recordings, each with its segments."""

    def recordings(self) -> list[Recording]: ...

    def recording(self, token: str) -> Recording | None: ...


def _segments(files: Iterable[RecordingFile]) -> tuple[RecordingFile, ...]:
    """Sorted by start; a segment overlapping its predecessor is cut to start where that one ends."""
    out: list[RecordingFile] = []
    for segment in sorted(files, key=lambda f: (f.start, f.path)):
        if segment.duration <= 0:
            continue
        if out and segment.start < out[-1].end:
            cut = out[-1].end - segment.start
            if cut >= segment.duration:
                continue
            segment = RecordingFile(path=segment.path, start=out[-1].end, duration=segment.duration - cut)
        out.append(segment)
    return tuple(out)


class IndexedRecordingStore:
    """The sample :class:`RecordingStore`: configured recordings with the files the runtime found for each."""

    def __init__(self, indexed: Iterable[tuple[RecordingConfig, Iterable[RecordingFile]]]) -> None:
        self._recordings: dict[str, Recording] = {}
        for config, files in indexed:
            if config.token in self._recordings:
                raise ConfigurationError(f"recording {config.token!r} is configured twice")
            self._recordings[config.token] = Recording(config=config, files=_segments(files))

    def recordings(self) -> list[Recording]:
        return list(self._recordings.values())

    def recording(self, token: str) -> Recording | None:
        return self._recordings.get(token)


# --------------------------------------------------------------------------- searches

def recording_events(recordings: Sequence[Recording], start: float, end: float | None,
                     include_start_state: bool) -> Iterator[RecordingEvent]:
    """The track-state events between ``start`` and ``end`` (``None``: no end), in search order, made as they
    are taken: each track's events are already in time order (its segments neither overlap nor touch out of
    order), so the tracks are merged, and a search that keeps the first MaxMatches never holds the rest."""
    backward = end is not None and end < start
    low, high = (end, start) if backward and end is not None else (start, end)

    def track(rec: Recording) -> Iterator[RecordingEvent]:
        for segment in reversed(rec.files) if backward else rec.files:
            edges = ((segment.start, True), (segment.end, False))
            for instant, present in reversed(edges) if backward else edges:
                if low <= instant and (high is None or instant <= high):
                    yield RecordingEvent(recording_token=rec.token, track_token=TRACK_TOKEN, time=instant,
                                         data_present=present)

    if include_start_state:
        yield from (RecordingEvent(recording_token=rec.token, track_token=TRACK_TOKEN, time=start,
                                   data_present=rec.data_present(start), start_state=True) for rec in recordings)
    yield from heapq.merge(*(track(rec) for rec in recordings), reverse=backward,
                           key=lambda e: (e.time, e.recording_token, e.data_present))


def match_limit(max_matches: int | None) -> int:
    """How many results a search keeps: its MaxMatches (at least 1), at most :data:`MAX_MATCHES`."""
    if max_matches is not None and max_matches < 1:
        raise SearchError("MaxMatches must be at least 1", subcodes=("InvalidArgVal",))
    return min(max_matches or MAX_MATCHES, MAX_MATCHES)


@dataclass
class _Session:
    kind: str
    results: list[object]
    keep_alive: float
    expires: float
    end_point: float | None
    delivered: int = 0


@dataclass
class SearchSessions:
    """Open searches (find → get … → end), bounded in number and expiring after their KeepAliveTime."""

    max_sessions: int = 16
    _sessions: dict[str, _Session] = field(default_factory=dict, init=False, repr=False)

    def _purge(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]

    def open(self, now: float, kind: str, results: Callable[[], Iterable[object]], *, keep_alive: float,
             max_matches: int | None, end_point: float | None = None) -> str:
        """Start a search of ``kind`` whose results ``results()`` yields (the first ``max_matches`` are
        taken); answers its SearchToken."""
        if not 0.0 < keep_alive <= MAX_KEEP_ALIVE:
            raise SearchError(f"KeepAliveTime must be in (0, {MAX_KEEP_ALIVE:g}] seconds",
                              subcodes=("InvalidArgVal",))
        limit = match_limit(max_matches)
        self._purge(now)
        if len(self._sessions) >= self.max_sessions:
            raise SearchError(f"all {self.max_sessions} search sessions are in use; end one (EndSearch) or "
                              "let it expire", code="Receiver", subcodes=("Action", "ResourceProblem"))
        token = f"search-{secrets.token_hex(_TOKEN_BYTES)}"
        self._sessions[token] = _Session(kind, list(itertools.islice(results(), limit)), keep_alive,
                                         now + keep_alive, end_point)
        return token

    def _session(self, now: float, token: str, kind: str | None) -> _Session:
        self._purge(now)
        session = self._sessions.get(token)
        if session is None or (kind is not None and session.kind != kind):
            raise SearchError(f"no open search with token {token[:64]!r} (ended, expired or never started)")
        session.expires = now + session.keep_alive
        return session

    def results(self, now: float, token: str, kind: str, max_results: int | None) -> tuple[list[object], bool]:
        """The next results of search ``token`` (at most ``max_results``) and whether all are delivered."""
        if max_results is not None and max_results < 1:
            raise SearchError("MaxResults must be at least 1", subcodes=("InvalidArgVal",))
        session = self._session(now, token, kind)
        count = min(max_results or MAX_RESULTS_PER_CALL, MAX_RESULTS_PER_CALL)
        batch = session.results[session.delivered:session.delivered + count]
        session.delivered += len(batch)
        return batch, session.delivered >= len(session.results)

    def end(self, now: float, token: str) -> float:
        """End search ``token``; answers the point in time it had reached (its end point, else ``now``)."""
        session = self._session(now, token, None)
        del self._sessions[token]
        return session.end_point if session.end_point is not None else now

    def __len__(self) -> int:
        return len(self._sessions)
