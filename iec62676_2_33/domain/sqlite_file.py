"""Layer 6 (domain): the durable SQLite file under a data folder (one lock, one connection).

:class:`~iec62676_2_33.store.DeviceStore`, :class:`~iec62676_2_33.vss.lower.LowerStore`
and :class:`~.registry.ResourceRegistry` keep their state the same way, so they
share this base.

Durability (the same for every store)
-------------------------------------
* The file is created private (owner only, :func:`~.private_files.private_database`);
  ``":memory:"`` gives a private in-memory database instead (tests, scratch registries).
* WAL journal: readers in other processes (the CLI next to ``device serve``)
  are never blocked by the writer and see only committed transactions.
* ``synchronous=FULL``: every commit is on disk before it returns, so a change
  that was acknowledged (a SET… answered 200, CFG-6; a resource change already
  announced as an event with its sequence number, RQ-4) survives a power loss.
  ``NORMAL`` would only keep the file consistent and could lose the last
  commits: the registry would then hand out those sequence numbers again for
  other changes, and a follower would miss them. The price is one fsync of
  the WAL per commit (0.2 – 3 ms measured, ``docs/benchmarks.md``), so bulk
  writes commit in large transactions (the registry loads a million resources
  in one) and pay it once.
* Every write is one ``BEGIN IMMEDIATE`` transaction under the object's
  re-entrant lock, rolled back on any error; :meth:`SqliteFile._committing`
  is the hook a store uses to stamp each commit (the device store bumps its
  generation there). :meth:`SqliteFile._reading` is a consistent snapshot for
  reads spread over several statements.
* Foreign keys are on.

Schema: ``schema`` holds idempotent ``;``-separated statements (``CREATE …
IF NOT EXISTS``). Without ``version`` they are applied at every open. With
``version`` the file's ``PRAGMA user_version`` decides: older (a new file is
0) gets the schema and the new version in one transaction, equal is used as it
is (opening takes no write lock), newer raises :class:`NewerSchema`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from ..errors import ConfigurationError
from .private_files import private_database

__all__ = ["NewerSchema", "SqliteFile"]


class NewerSchema(ConfigurationError):
    """The file was written by a newer library (its schema version is above the one this code knows)."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(f"schema version {found} is newer than this library's {supported}")
        self.found = found
        self.supported = supported


class SqliteFile:
    """Base of the stores kept in one SQLite file; thread-safe (one re-entrant lock)."""

    def __init__(self, path: str | Path, schema: str, *, version: int | None = None,
                 timeout: float = 30.0) -> None:
        """Open (or create) ``path`` and bring its schema up to date (module docstring).
        Raises :class:`sqlite3.DatabaseError`, :class:`OSError` or :class:`NewerSchema`;
        the caller names the store in its error."""
        self.path = path
        if str(path) != ":memory:":
            private_database(Path(path))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            found = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version is not None and found > version:
                raise NewerSchema(found, version)
            if version is None or found < version:
                with self._write() as db:
                    for statement in filter(str.strip, schema.split(";")):
                        db.execute(statement)
                    if version is not None:
                        db.execute(f"PRAGMA user_version={int(version)}")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _committing(self, db: sqlite3.Connection) -> None:
        """Runs inside every write transaction just before COMMIT."""

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction; rolls back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._committing(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every statement inside sees the same committed state."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
