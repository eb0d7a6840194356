"""Layer 6 (domain): the resource registry — embedded SQLite with an R*Tree on location.

Implements the server side of RQ-1..RQ-9: it keeps the resources a VSS
exposes (RQ-2, RQ-3), turns every change into a property event (RQ-4) and
answers resource queries (RQ-5) with the Location (RQ-6, R*Tree), Prefix
(RQ-7), Scope (RQ-8) and Select (RQ-9) filters.

Theory of operation
-------------------
Tables (schema version 1, ``PRAGMA user_version``):

``resources``
    one row per resource: ``id`` (stable integer key, also the R*Tree id),
    ``token`` (UNIQUE — the resource's key), ``kind``, ``name``, ``lon``,
    ``lat``, ``elevation``, ``scopes`` (JSON list) and ``offline`` (0/1/NULL).
``resource_geo``
    R*Tree virtual table ``(id, min_lon, max_lon, min_lat, max_lat)`` holding
    a point box for every resource that has a location.
``changes``
    the append-only change log: ``seq`` (AUTOINCREMENT, so a number is never
    reused even after :meth:`ResourceRegistry.prune_changes`), ``token``,
    ``kind``, ``operation`` and the resource's JSON snapshot (NULL for
    ``Deleted``). Other processes follow it with :meth:`last_seq` and
    :meth:`changes_since`.

The file is a :class:`~.sqlite_file.SqliteFile`, with the durability of the
device store (WAL, ``synchronous=FULL``, private file; the reasons are in
:mod:`.sqlite_file`). Every change runs in one ``BEGIN IMMEDIATE`` transaction
that updates ``resources``, ``resource_geo`` and ``changes`` together, so a
crash (even ``kill -9``, even a power loss after the call returned) leaves the
old or the new state and the log always agrees with the table. Readers in
other processes are never blocked by the writer and see only committed changes.
A bulk load is one transaction, so it waits for the disk once.

Tokens (ADR-2, ADR-3): every resource entering the registry (``upsert_many``,
``load_jsonl``) must carry a remote token ``Prefix:LocalToken`` by the rule of
:mod:`.tokens` (:func:`check_remote_token`): a token without a prefix, or with
a local part over 36 characters, is refused and nothing is stored.

Events: :meth:`upsert` gives ``Initialized`` for a new token, ``Changed`` when
any data item differs (a change of ``offline`` is only visible when the new
resource carries the ``Offline`` item, as RQ-4 asks) and ``None`` when nothing
differs; the same token can never change its kind (tokens are unique in the
serving system, ADR-1; remove the resource first). ``Deleted`` events carry a
resource with only ``token`` and ``kind``; a subscription knows which tokens
it has signalled.

Queries return one page at a time, ordered by token (keyset pagination: pass
the last token of a page as ``after_token``), so a client can stream a
million-resource enumeration without it ever being in memory. With a Location
filter, the R*Tree gives the candidates inside the filter's bounding box(es)
(one ordered stream per box, plus the unlocated resources when
``include_unknown``), merged by token; every candidate is then checked by the
exact :meth:`ResourceQuery.matches`. :meth:`query_full_scan` walks the token
index instead and must give the same answer; it is the benchmark baseline.

One connection per registry object, opened with ``check_same_thread=False``
and guarded by a lock, so an asyncio runtime may call it from a thread pool.
``":memory:"`` gives a private in-memory registry.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import groupby, islice
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..errors import ConfigurationError
from .filters import PrefixFilter, ResourceQuery
from .resources import (
    GeoLocation,
    InvalidResource,
    PropertyOperation,
    Resource,
    ResourceEvent,
)
from .sqlite_file import NewerSchema, SqliteFile
from .tokens import InvalidToken, RemoteToken

__all__ = ["REGISTRY_FILE", "SCHEMA_VERSION", "ChangesPruned", "ResourceRegistry", "UnknownResource",
           "check_remote_token"]

#: The registry's file name inside a device's data folder.
REGISTRY_FILE = "resources.db"

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CHUNK = 20_000  # rows per executemany batch in bulk writes
#: The longest line of a resource file (a resource with its scopes takes well under 64 KiB); a longer one is a
#: bad line, and no more of it than this is held in memory.
MAX_LINE_BYTES = 1024 * 1024
#: Bad lines a load names one by one in its error (the rest are counted).
MAX_REPORTED_LINES = 50
def _bounded_lines(handle: BinaryIO) -> Iterator[tuple[bytes | None, int]]:
    """``(line, bytes read)`` for each line of ``handle``, read at most MAX_LINE_BYTES at a time: a longer line
    is skipped to its end and given as ``None`` (iterating a file reads a whole line, however long, into
    memory)."""
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield raw, len(raw)
            continue
        size = len(raw)
        while not raw.endswith(b"\n") and (raw := handle.readline(MAX_LINE_BYTES)):
            size += len(raw)
        yield None, size
_CACHE_KIB = 8 * 1024  # page cache per connection; a streamed enumeration of 1M rows fills it
_BULK_CACHE_KIB = 64 * 1024  # page cache during upsert_many: keeps index upkeep of bulk loads in memory

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    id        INTEGER PRIMARY KEY,
    token     TEXT NOT NULL UNIQUE,
    kind      TEXT NOT NULL,
    name      TEXT,
    lon       REAL,
    lat       REAL,
    elevation REAL,
    scopes    TEXT NOT NULL DEFAULT '[]',
    offline   INTEGER
);
CREATE INDEX IF NOT EXISTS resources_unlocated ON resources(token) WHERE lon IS NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS resource_geo
    USING rtree(id, min_lon, max_lon, min_lat, max_lat);
CREATE TABLE IF NOT EXISTS changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    token     TEXT NOT NULL,
    kind      TEXT NOT NULL,
    operation TEXT NOT NULL CHECK (operation IN ('Initialized', 'Changed', 'Deleted')),
    resource  TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COLUMNS = "r.token, r.kind, r.name, r.lon, r.lat, r.elevation, r.scopes, r.offline"
_Row = tuple[str, str, "str | None", "float | None", "float | None", "float | None", str, Any]


class UnknownResource(ConfigurationError, LookupError):
    """No resource has that token (also a :class:`LookupError`, like ``KeyError``)."""


class ChangesPruned(ConfigurationError):
    """The change log no longer reaches back to the requested position; re-read with query()."""


_new = object.__new__
_set = object.__setattr__


@functools.lru_cache(maxsize=4096)
def _scopes(text: str) -> tuple[str, ...]:
    """The scopes column (a JSON list); the resources of one device share it, so it is cached."""
    return tuple(json.loads(text))


def _row_to_resource(row: Sequence[Any]) -> Resource:
    """A stored row as a :class:`Resource`, built without validating it again.

    Every row was validated when it was written (``upsert_many`` takes
    ``Resource`` objects only), and validation was most of the cost of
    streaming a large enumeration, so reads fill the frozen dataclasses
    directly.
    """
    token, kind, name, lon, lat, elevation, scopes, offline = row
    location = None
    if lon is not None:
        location = _new(GeoLocation)
        _set(location, "lon", lon)
        _set(location, "lat", lat)
        _set(location, "elevation", elevation)
    resource = _new(Resource)
    _set(resource, "token", token)
    _set(resource, "kind", kind)
    _set(resource, "name", name)
    _set(resource, "location", location)
    _set(resource, "scopes", () if scopes == "[]" else _scopes(scopes))
    _set(resource, "offline", None if offline is None else bool(offline))
    return resource


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _snapshot(resource: Resource) -> str:
    return _encode(resource.to_json())


def check_remote_token(token: str) -> None:
    """ADR-2, ADR-3 where resources enter the registry: the token is ``Prefix:LocalToken``.

    The rule is :meth:`.tokens.RemoteToken.parse` (prefix required, local part at most 36 and the
    whole token at most 64 characters); a colon inside the local part is allowed, because an upper
    VSS of a hierarchy (GEN-1) serves ``Upper:Lower:token``.
    """
    try:
        RemoteToken.parse(token, allow_colon_in_local=True)
    except InvalidToken as exc:
        raise InvalidResource(str(exc)) from None


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Token bounds [lo, hi) of every token whose prefix is ``prefix`` (':' + 1 == ';')."""
    return prefix + ":", prefix + ";"


class ResourceRegistry(SqliteFile):
    """The resources a server exposes, their change log and the resource queries over them."""

    path: str

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        """Open (or create) the registry file ``path`` (``":memory:"``: in memory); waits up to ``timeout``
        seconds for another process's write. Raises :class:`ConfigurationError` for a file that is not a
        registry or was written by a newer library."""
        try:
            super().__init__(str(path), _SCHEMA, version=SCHEMA_VERSION, timeout=timeout)
        except NewerSchema as e:
            raise ConfigurationError(
                f"resource registry {str(path)!r} has schema version {e.found}, newer than "
                f"this library's {SCHEMA_VERSION}; upgrade the library or use another file"
            ) from None
        except sqlite3.DatabaseError as e:
            raise ConfigurationError(f"{str(path)!r} is not a usable resource registry: {e}") from e
        self._db.execute(f"PRAGMA cache_size={-_CACHE_KIB}")

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _bulk_cache(self) -> Iterator[None]:
        """The larger page cache for the duration of a bulk write (a server's reads keep the small one)."""
        self._db.execute(f"PRAGMA cache_size={-_BULK_CACHE_KIB}")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA cache_size={-_CACHE_KIB}")

    def _next_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return (row[0] if row else 0) + 1

    def _log(self, events: list[tuple[PropertyOperation, Resource]]) -> list[ResourceEvent]:
        """Append ``events`` to the change log; returns them with their sequence numbers."""
        first = self._next_seq()
        out = [ResourceEvent(op, res, first + i) for i, (op, res) in enumerate(events)]
        self._db.executemany(
            "INSERT INTO changes(seq, token, kind, operation, resource) VALUES (?, ?, ?, ?, ?)",
            (
                (
                    e.seq,
                    e.resource.token,
                    e.resource.kind,
                    e.operation,
                    None if e.operation == "Deleted" else _snapshot(e.resource),
                )
                for e in out
            ),
        )
        return out

    def _lookup(self, token: str) -> tuple[int, Resource] | None:
        row = self._db.execute(
            f"SELECT r.id, {_COLUMNS} FROM resources r WHERE r.token = ?", (token,)
        ).fetchone()
        return None if row is None else (row[0], _row_to_resource(row[1:]))

    def _store(self, changes: dict[str, tuple[int | None, Resource | None]]) -> None:
        """Write the final state per token: (id or None if new, resource or None if deleted).

        Written in chunks so a million-row load never holds all its SQL rows at once.
        """
        next_id = self._db.execute("SELECT coalesce(max(id), 0) + 1 FROM resources").fetchone()[0]
        pending = iter(changes.values())
        while chunk := list(islice(pending, _CHUNK)):
            next_id = self._store_chunk(chunk, next_id)

    def _store_chunk(self, chunk: list[tuple[int | None, Resource | None]], next_id: int) -> int:
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        geo: list[tuple[int, float, float, float, float]] = []
        ungeo: list[tuple[int]] = []
        deletes: list[tuple[int]] = []
        for row_id, res in chunk:
            if res is None:
                if row_id is not None:
                    deletes.append((row_id,))
                continue
            loc = res.location
            values = (
                res.kind,
                res.name,
                None if loc is None else loc.lon,
                None if loc is None else loc.lat,
                None if loc is None else loc.elevation,
                _encode(list(res.scopes)) if res.scopes else "[]",
                None if res.offline is None else int(res.offline),
            )
            if row_id is None:
                row_id = next_id
                next_id += 1
                inserts.append((row_id, res.token, *values))
            else:
                updates.append((*values, row_id))
                if loc is None:
                    ungeo.append((row_id,))
            if loc is not None:
                geo.append((row_id, loc.lon, loc.lon, loc.lat, loc.lat))
        db = self._db
        if deletes:
            db.executemany("DELETE FROM resources WHERE id = ?", deletes)
            db.executemany("DELETE FROM resource_geo WHERE id = ?", deletes)
        if inserts:
            db.executemany(
                "INSERT INTO resources(id, token, kind, name, lon, lat, elevation, scopes, offline)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
        if updates:
            db.executemany(
                "UPDATE resources SET kind = ?, name = ?, lon = ?, lat = ?, elevation = ?,"
                " scopes = ?, offline = ? WHERE id = ?",
                updates,
            )
        if ungeo:
            db.executemany("DELETE FROM resource_geo WHERE id = ?", ungeo)
        if geo:
            db.executemany("INSERT OR REPLACE INTO resource_geo VALUES (?, ?, ?, ?, ?)", geo)
        return next_id

    # ------------------------------------------------------------------ changes

    def upsert(self, resource: Resource) -> ResourceEvent | None:
        """Add or update one resource: ``Initialized``, ``Changed`` or ``None`` (RQ-4)."""
        events = self.upsert_many([resource])
        return events[0] if events else None

    def upsert_many(self, resources: Iterable[Resource]) -> list[ResourceEvent]:
        """Add or update many resources in one transaction (all or nothing), in order.

        A token given twice is applied twice (the second gives ``Changed`` or
        nothing). Raises :class:`InvalidResource` if a token would change kind.
        """
        events: list[ResourceEvent] = []
        with self._lock, self._bulk_cache(), self._write():
            self._upsert_chunks(resources, events.extend)
        return events

    def _upsert_chunks(self, resources: Iterable[Resource], emit: Callable[[list[ResourceEvent]], None], *,
                       unique_tokens: bool = False) -> None:
        """Apply ``resources`` _CHUNK at a time inside the caller's transaction; each chunk's events go to
        ``emit``. Only one chunk is held at a time, so a stream of any length loads in bounded memory.
        ``unique_tokens``: the caller guarantees no token comes twice, so a registry empty at the start
        needs no lookups at all (a million-line load into an empty device)."""
        empty = self._db.execute("SELECT 1 FROM resources LIMIT 1").fetchone() is None
        pending = iter(resources)
        while chunk := list(islice(pending, _CHUNK)):
            state: dict[str, tuple[int | None, Resource | None]] = {}
            events: list[tuple[PropertyOperation, Resource]] = []
            for res in chunk:
                if not isinstance(res, Resource):
                    raise InvalidResource(f"upsert expects Resource objects, got {res!r}")
                check_remote_token(res.token)
                if res.token in state:
                    row_id, old = state[res.token]
                elif empty:
                    row_id, old = None, None
                else:
                    found = self._lookup(res.token)
                    row_id, old = (None, None) if found is None else found
                if old is None:
                    events.append(("Initialized", res))
                elif old.kind != res.kind:
                    raise InvalidResource(
                        f"token {res.token!r} already names a {old.kind}, not a {res.kind}; "
                        "tokens are unique in the serving system (ADR-1): remove it first"
                    )
                elif old != res:
                    events.append(("Changed", res))
                else:
                    continue
                state[res.token] = (row_id, res)
            self._store(state)
            emit(self._log(events))
            empty = empty and unique_tokens  # else later chunks may name tokens this one wrote

    def remove(self, token: str) -> ResourceEvent:
        """Remove a resource; its ``Deleted`` event. :class:`UnknownResource` if absent."""
        with self._write():
            if self._lookup(token) is None:
                raise UnknownResource(f"no resource has the token {token!r}")
            return self._remove_present([token])[0]

    def remove_many(self, tokens: Iterable[str]) -> list[ResourceEvent]:
        """Remove the resources of ``tokens`` that exist, in one transaction (one disk sync: a VSS
        following a lower system removes many at once); their ``Deleted`` events in order. Absent
        tokens are skipped."""
        wanted = list(tokens)
        if not wanted:
            return []
        with self._write():
            return self._remove_present(wanted)

    def _remove_present(self, tokens: Iterable[str]) -> list[ResourceEvent]:
        state: dict[str, tuple[int | None, Resource | None]] = {}
        events: list[tuple[PropertyOperation, Resource]] = []
        for token in tokens:
            found = None if token in state else self._lookup(token)
            if found is None:
                continue
            row_id, old = found
            state[token] = (row_id, None)
            events.append(("Deleted", Resource(old.token, old.kind)))
        if not state:
            return []
        self._store(state)
        return self._log(events)

    def set_prefix_offline(self, prefix: str, offline: bool) -> list[ResourceEvent]:
        """Mark every resource of the device ``prefix`` on- or offline; ``Changed`` per change."""
        if not isinstance(offline, bool):
            raise ConfigurationError(f"offline must be True or False, got {offline!r}")
        lo, hi = _prefix_range(PrefixFilter(prefix).prefix)
        with self._write():
            rows = self._db.execute(
                f"SELECT r.id, {_COLUMNS} FROM resources r WHERE r.token >= ? AND r.token < ?"
                " AND (r.offline IS NULL OR r.offline != ?) ORDER BY r.token",
                (lo, hi, int(offline)),
            ).fetchall()
            events: list[tuple[PropertyOperation, Resource]] = [
                ("Changed", replace(_row_to_resource(row[1:]), offline=offline)) for row in rows
            ]
            self._db.executemany(
                "UPDATE resources SET offline = ? WHERE id = ?",
                [(int(offline), row[0]) for row in rows],
            )
            return self._log(events)

    def load_jsonl(self, path: str | Path, *, progress: Callable[[int], None] | None = None,
                   ) -> list[ResourceEvent]:
        """Load resources from a JSON Lines file: all lines, or none if any line is bad; the events.

        Blank lines are skipped. Every bad line is reported, as ``line N: reason``,
        in one :class:`InvalidResource`; a token given on two lines is an error.
        ``progress`` is called with the number of bytes read since its last call.
        """
        events: list[ResourceEvent] = []
        self._load_jsonl(Path(path), events.extend, progress)
        return events

    def load_jsonl_counts(self, path: str | Path, *, progress: Callable[[int], None] | None = None,
                          ) -> tuple[int, int]:
        """:meth:`load_jsonl` for files of any size: (added, changed), the events are not kept."""
        counts = {"Initialized": 0, "Changed": 0}

        def count(events: list[ResourceEvent]) -> None:
            for event in events:
                counts[event.operation] += 1

        self._load_jsonl(Path(path), count, progress)
        return counts["Initialized"], counts["Changed"]

    def _load_jsonl(self, path: Path, emit: Callable[[list[ResourceEvent]], None],
                    progress: Callable[[int], None] | None) -> None:
        """Parse and apply in one pass and one transaction, _CHUNK lines at a time; roll back on any bad line.

        The tokens seen so far (to refuse a token given twice) are kept in a
        temporary table, not in memory, so a million-line file loads within
        a bounded memory budget.
        """
        try:
            handle = path.open("rb")
        except OSError as e:
            raise ConfigurationError(f"cannot read resource file {str(path)!r}: {e}") from e
        errors: list[str] = []
        with handle, self._lock, self._bulk_cache(), self._write():
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS load_tokens(token TEXT PRIMARY KEY, line INTEGER)"
                             " WITHOUT ROWID")
            self._db.execute("DELETE FROM temp.load_tokens")
            try:
                self._upsert_chunks(self._parse_lines(handle, errors, progress), emit, unique_tokens=True)
            finally:
                self._db.execute("DELETE FROM temp.load_tokens")
            if errors:
                shown = errors[:MAX_REPORTED_LINES]
                more = len(errors) - len(shown)
                raise InvalidResource(
                    f"{str(path)!r}: {len(errors)} bad line(s), nothing was loaded:\n  "
                    + "\n  ".join(shown) + (f"\n  … and {more} more" if more else "")
                )
        log.info("loaded resources from %s", path)

    def _parse_lines(self, handle: BinaryIO, errors: list[str],
                     progress: Callable[[int], None] | None) -> Iterator[Resource]:
        """The resources of ``handle``'s lines; bad lines go to ``errors`` (and then nothing more is yielded)."""
        for number, (raw, size) in enumerate(_bounded_lines(handle), 1):
            if progress is not None:
                progress(size)
            if raw is None:
                errors.append(f"line {number}: longer than {MAX_LINE_BYTES} bytes")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                errors.append(f"line {number}: not UTF-8 ({e.reason} at byte {e.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                resource = Resource.from_json(json.loads(line))
                check_remote_token(resource.token)
            except json.JSONDecodeError as e:
                errors.append(f"line {number}: not JSON ({e.msg} at column {e.colno})")
                continue
            except RecursionError:
                errors.append(f"line {number}: JSON nested too deep")
                continue
            except InvalidResource as e:
                errors.append(f"line {number}: {e}")
                continue
            if self._db.execute("INSERT OR IGNORE INTO temp.load_tokens VALUES (?, ?)",
                                (resource.token, number)).rowcount == 0:
                seen = self._db.execute("SELECT line FROM temp.load_tokens WHERE token = ?",
                                        (resource.token,)).fetchone()[0]
                errors.append(f"line {number}: token {resource.token!r} already given on line {seen}")
                continue
            if not errors:
                yield resource

    def prune_changes(self, up_to_seq: int) -> int:
        """Drop change-log entries with ``seq <= up_to_seq``; returns how many were dropped."""
        with self._write():
            cur = self._db.execute("DELETE FROM changes WHERE seq <= ?", (up_to_seq,))
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('pruned_seq', ?) ON CONFLICT(key)"
                " DO UPDATE SET value = max(value, excluded.value)",
                (min(up_to_seq, self._next_seq() - 1),),
            )
            return cur.rowcount

    # ------------------------------------------------------------------ reads

    def get(self, token: str) -> Resource | None:
        with self._lock:
            found = self._lookup(token)
        return None if found is None else found[1]

    def count(self) -> int:
        with self._lock:
            return cast(int, self._db.execute("SELECT count(*) FROM resources").fetchone()[0])

    def last_seq(self) -> int:
        """The sequence number of the newest change (0 if none)."""
        with self._lock:
            return self._next_seq() - 1

    def changes_since(self, seq: int, limit: int = 1000) -> list[ResourceEvent]:
        """Up to ``limit`` changes with a sequence number above ``seq``, oldest first.

        Raises :class:`ChangesPruned` when changes after ``seq`` were pruned.
        """
        if limit < 1:
            raise ConfigurationError(f"limit must be >= 1, got {limit!r}")
        with self._reading():
            pruned = self._db.execute("SELECT value FROM meta WHERE key = 'pruned_seq'").fetchone()
            if pruned is not None and seq < pruned[0]:
                raise ChangesPruned(
                    f"changes up to #{pruned[0]} were pruned; cannot follow from #{seq}. "
                    "Re-read the resources with query() and follow from last_seq()"
                )
            rows = self._db.execute(
                "SELECT seq, token, kind, operation, resource FROM changes WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [
            ResourceEvent(
                op,
                Resource(token, kind) if snap is None else Resource.from_json(json.loads(snap)),
                s,
            )
            for s, token, kind, op, snap in rows
        ]

    def query(
        self, query: ResourceQuery, *, after_token: str | None = None, limit: int = 100
    ) -> list[Resource]:
        """One page of matching resources, projected by the Select filter, ordered by token.

        Pass the last token of a page as ``after_token`` to get the next page;
        a page shorter than ``limit`` is the last one.
        """
        return self._query(query, after_token, limit, use_rtree=True)

    def query_full_scan(
        self, query: ResourceQuery, *, after_token: str | None = None, limit: int = 100
    ) -> list[Resource]:
        """Same answer as :meth:`query`, without the R*Tree (the benchmark baseline)."""
        return self._query(query, after_token, limit, use_rtree=False)

    def _query(
        self, query: ResourceQuery, after_token: str | None, limit: int, *, use_rtree: bool
    ) -> list[Resource]:
        if not isinstance(query, ResourceQuery):
            raise ConfigurationError(f"query must be a ResourceQuery, got {query!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be an integer >= 1, got {limit!r}")
        if query.kinds is not None and not query.kinds:
            return []
        where: list[str] = []
        params: list[Any] = []
        if after_token is not None:
            where.append("r.token > ?")
            params.append(after_token)
        if query.kinds is not None:
            kinds = sorted(query.kinds)
            where.append(f"r.kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        if query.prefix is not None:
            where.append("r.token >= ? AND r.token < ?")
            params.extend(_prefix_range(query.prefix.prefix))
        base = " AND ".join(where) or "1"

        out: list[Resource] = []
        with self._reading():
            location = query.location if use_rtree else None
            if location is None:
                streams: list[Iterator[_Row]] = [
                    self._db.execute(
                        f"SELECT {_COLUMNS} FROM resources r WHERE {base} ORDER BY r.token",
                        params,
                    )
                ]
            else:
                streams = [
                    self._db.execute(
                        f"SELECT {_COLUMNS} FROM resource_geo g CROSS JOIN resources r"
                        " ON r.id = g.id WHERE g.min_lon <= ? AND g.max_lon >= ?"
                        f" AND g.min_lat <= ? AND g.max_lat >= ? AND {base} ORDER BY r.token",
                        [max_lon, min_lon, max_lat, min_lat, *params],
                    )
                    for min_lon, min_lat, max_lon, max_lat in location.bounding_boxes()
                ]
                if location.include_unknown:
                    streams.append(
                        self._db.execute(
                            f"SELECT {_COLUMNS} FROM resources r INDEXED BY resources_unlocated"
                            f" WHERE r.lon IS NULL AND {base} ORDER BY r.token",
                            params,
                        )
                    )
            rows: Iterable[_Row] = (
                streams[0]
                if len(streams) == 1
                else (
                    next(g) for _, g in groupby(heapq.merge(*streams, key=_token_of), key=_token_of)
                )
            )
            for row in rows:
                resource = _row_to_resource(row)
                if query.matches(resource):
                    out.append(query.project(resource))
                    if len(out) >= limit:
                        break
            for stream in streams:
                cast(sqlite3.Cursor, stream).close()
        return out


def _token_of(row: _Row) -> str:
    return row[0]
