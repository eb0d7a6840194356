"""Layer 6: the durable SQLite file under a device's or a VSS's data folder (one lock, one connection).

:class:`~.store.DeviceStore` and :class:`~.vss.lower.LowerStore` keep their state
the same way, so they share this base: the file is created private (owner
only, :func:`~.domain.private_files.private_database`), opened in WAL mode with
``synchronous=FULL`` (a SET… answered 200 survives power loss) and foreign keys
on, its schema applied in one transaction; every write is one ``BEGIN
IMMEDIATE`` transaction under the object's lock, rolled back on any error, and
:meth:`_committing` is the hook a store uses to stamp each commit (the device
store bumps its generation there).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from .domain.private_files import private_database

__all__ = ["SqliteFile"]


class SqliteFile:
    """Base of the stores kept in one SQLite file; thread-safe (one re-entrant lock)."""

    def __init__(self, path: Path, schema: str) -> None:
        """Open (or create) ``path`` and apply ``schema`` (``;``-separated statements, idempotent).
        Raises :class:`sqlite3.DatabaseError` or :class:`OSError`; the caller names the store in its error."""
        self.path = path
        private_database(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._write() as db:
            for statement in filter(str.strip, schema.split(";")):
                db.execute(statement)

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
