"""Layer 6: the lower systems of a VSS and the prefixes routed to them (GEN-1, ADR-2, ADR-4).

Theory of operation
-------------------
``<data>/vss.db`` (SQLite, WAL, ``synchronous=FULL``, owner-only like the
device store: :func:`~..domain.private_files.private_database`) holds:

``lowers``
    one row per lower system: its ``prefix`` (a valid remote-token prefix,
    ADR-2; the same for every token of that system, ADR-4) and how it is
    reached — a ``url`` of its device service with the ``username`` and the
    ``password`` the VSS signs its requests with (sealed at rest under the data
    folder's secret, :mod:`~..domain.sealed`), or an ``uplink`` device ID (the
    system dials the VSS's embedded cloud listener).
``routes``
    prefixes a lower system answered in tokens that already were remote tokens
    (``Q:Local`` of a device further down, clause 6): ``Q`` is routed to the
    lower system that announced it. The resource mirror writes them; they go
    with their lower system. A prefix stays with the first lower system that
    announced it until that one is removed: another lower system answering the
    same prefix is logged, never routed to (it could otherwise take over the
    devices of a system beside it), and a configured prefix is never learnt. At
    most :data:`MAX_ROUTES` are kept, at most :data:`MAX_ROUTES_PER_LOWER` of
    them for one lower system (so one lower system cannot fill the table and
    leave the devices of the others without a route); the
    table is read from memory and reloaded only when this or another process
    changed the file (SQLite's ``data_version``).
``meta``
    ``vss_id``: a random identity of this VSS, carried in the hop header of
    every forwarded request so a configuration loop is detected.

Each change is one ``BEGIN IMMEDIATE`` transaction. Reads take a lock so one
object may be shared by the worker threads.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..domain.sealed import Sealer
from ..domain.sqlite_file import SqliteFile
from ..domain.tokens import InvalidToken, RemoteToken
from ..errors import ConfigurationError
from .adaption import expose_token

__all__ = ["MAX_ROUTES", "MAX_ROUTES_PER_LOWER", "VSS_DB", "LowerStore", "LowerSystem", "check_prefix", "check_url"]

log = logging.getLogger(__name__)

VSS_DB = "vss.db"
#: At most this many lower systems per VSS (each has a mirror thread and a connection).
MAX_LOWERS = 256
#: Most learnt prefixes (devices below the lower systems) a VSS routes.
MAX_ROUTES = 100_000
#: Most learnt prefixes routed to one lower system (a sixteenth of :data:`MAX_ROUTES`): its share of the table.
MAX_ROUTES_PER_LOWER = MAX_ROUTES // 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lowers (
    prefix   TEXT PRIMARY KEY,
    url      TEXT,
    username TEXT,
    password BLOB,
    uplink   TEXT,
    CHECK ((url IS NULL) != (uplink IS NULL))
);
CREATE TABLE IF NOT EXISTS routes (
    prefix TEXT PRIMARY KEY,
    lower  TEXT NOT NULL REFERENCES lowers(prefix) ON DELETE CASCADE
)
"""


def check_prefix(prefix: str) -> str:
    """A lower system's prefix must be usable as ``prefix:LocalToken`` (ADR-2, ADR-3)."""
    try:
        RemoteToken.of(prefix, "x")
    except InvalidToken as exc:
        raise ConfigurationError(f"--prefix {prefix!r}: {exc}") from None
    return prefix


def check_url(url: str) -> str:
    """A lower system's device service address: ``http(s)://host[:port]/…`` without user info."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.fragment:
        raise ConfigurationError(f"--url {url!r}: expected http(s)://host[:port]/onvif/device_service "
                                 "without user info (credentials go to --user/--password)")
    return url


@dataclass(frozen=True)
class LowerSystem:
    """One lower system: reached by ``url`` (with credentials) or through the uplink of ``uplink``."""

    prefix: str
    url: str | None = None
    username: str | None = None
    password: str | None = None
    uplink: str | None = None

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if (self.url is None) == (self.uplink is None):
            raise ConfigurationError("a lower system is reached either by --url or by --uplink, not both")
        if self.url is not None:
            check_url(self.url)

    def __repr__(self) -> str:  # the password stays out of every log
        where = self.url or f"uplink {self.uplink}"
        return f"LowerSystem(prefix={self.prefix!r}, {where})"

    @property
    def reached_by(self) -> str:
        return self.url if self.url is not None else f"uplink:{self.uplink}"

    def service_url(self, path: str) -> str:
        """The lower system's service at ``path`` (the conventional ONVIF paths, GEN-2)."""
        if self.url is None:
            return f"http://uplink{path}"  # the host is ignored on an uplink (zeep_transport)
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{path}"


class LowerStore(SqliteFile):
    """``<data>/vss.db``: lower systems, learnt routes and the VSS identity (thread-safe)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._routes: dict[str, str] | None = None
        self._prefixes: frozenset[str] = frozenset()
        self._routes_version = -1
        try:
            super().__init__(self.data_dir / VSS_DB, _SCHEMA)  # creates the data folder
            self._sealer = Sealer(self.data_dir)
            with self._write() as db:
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('vss_id', ?)", (secrets.token_hex(8),))
        except (sqlite3.DatabaseError, OSError) as exc:
            raise ConfigurationError(f"{self.data_dir / VSS_DB} is not a usable VSS store: {exc}") from exc

    def _committing(self, db: sqlite3.Connection) -> None:
        self._routes = None  # this connection's own commits do not change its data_version

    @property
    def vss_id(self) -> str:
        with self._lock:
            return str(self._db.execute("SELECT value FROM meta WHERE key = 'vss_id'").fetchone()[0])

    def put(self, lower: LowerSystem) -> None:
        """Add or replace a lower system."""
        sealed = None if lower.password is None else self._sealer.seal(f"lower:{lower.prefix}", lower.password.encode())
        with self._write() as db:
            known = db.execute("SELECT 1 FROM lowers WHERE prefix = ?", (lower.prefix,)).fetchone()
            if not known and db.execute("SELECT COUNT(*) FROM lowers").fetchone()[0] >= MAX_LOWERS:
                raise ConfigurationError(f"a VSS takes at most {MAX_LOWERS} lower systems")
            db.execute("INSERT INTO lowers (prefix, url, username, password, uplink) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT(prefix) DO UPDATE SET url = excluded.url, username = excluded.username,"
                       " password = excluded.password, uplink = excluded.uplink",
                       (lower.prefix, lower.url, lower.username, sealed, lower.uplink))
            db.execute("DELETE FROM routes WHERE prefix = ?", (lower.prefix,))  # a configured prefix wins

    def remove(self, prefix: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM lowers WHERE prefix = ?", (prefix,)).rowcount > 0

    def list(self) -> list[LowerSystem]:
        with self._lock:
            rows = self._db.execute("SELECT prefix, url, username, password, uplink FROM lowers ORDER BY prefix")
            return [LowerSystem(prefix=p, url=u, username=n,
                                password=None if pw is None else self._sealer.open(f"lower:{p}", pw).decode(),
                                uplink=up) for p, u, n, pw, up in rows.fetchall()]

    def routes(self) -> dict[str, str]:
        """Learnt prefix -> the configured prefix of the lower system that announced it (do not modify)."""
        return self._tables()[0]

    def prefixes(self) -> frozenset[str]:
        """The configured prefixes of the lower systems (read from memory like :meth:`routes`)."""
        return self._tables()[1]

    def _tables(self) -> tuple[dict[str, str], frozenset[str]]:
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if self._routes is None or version != self._routes_version:
                self._routes = dict(self._db.execute("SELECT prefix, lower FROM routes").fetchall())
                self._prefixes = frozenset(p for (p,) in self._db.execute("SELECT prefix FROM lowers"))
                self._routes_version = version
            return self._routes, self._prefixes

    def expose(self, lower: str, token: str) -> str:
        """``token``, named by lower system ``lower``, as the VSS exposes it (:func:`.adaption.expose_token`
        with this store's prefixes and routes); a prefix it carries that nobody has is first learnt as
        ``lower``'s route (taken or over the quota: the token gets ``lower``'s prefix). Raises
        :class:`~..domain.tokens.InvalidToken` when the exposed token would be too long."""
        kept = expose_token(token, lower, self.prefixes(), self.routes())[1]
        if kept is not None and kept not in self.routes():
            self.learn(lower, [kept])
        return expose_token(token, lower, self.prefixes(), self.routes(), learning=False)[0]

    def learn(self, lower: str, prefixes: Iterable[str]) -> None:
        """Route each of ``prefixes`` to ``lower`` unless configured or already routed elsewhere (module
        docstring), up to :data:`MAX_ROUTES` in all and :data:`MAX_ROUTES_PER_LOWER` for ``lower``."""
        known, configured = self._tables()
        prefixes = set(prefixes)
        new = {p for p in prefixes if p not in known and p not in configured}
        taken = {p for p in prefixes if p != lower and (known.get(p, lower) != lower or p in configured)}
        if taken:
            log.warning("lower system %s answered prefixes of another lower system (kept there): %s",
                        lower, ", ".join(sorted(taken)[:5]))
        if not new:
            return
        room = min(MAX_ROUTES - len(known), MAX_ROUTES_PER_LOWER - sum(1 for o in known.values() if o == lower))
        if len(new) > room:
            log.warning("the VSS routes at most %d prefixes, %d of one lower system: %d of lower system %s left out",
                        MAX_ROUTES, MAX_ROUTES_PER_LOWER, len(new) - max(room, 0), lower)
            new = set(sorted(new)[:max(room, 0)])
        rows = [(p, lower) for p in new]
        if not rows:
            return
        with self._write() as db:
            db.executemany("INSERT INTO routes (prefix, lower) SELECT ?, ? WHERE NOT EXISTS"
                           " (SELECT 1 FROM lowers WHERE prefix = ?1)"
                           " ON CONFLICT(prefix) DO NOTHING", rows)
