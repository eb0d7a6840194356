"""CFG-6: the device store, the VSS store and the resource registry keep their files with one durability.

All three are :class:`~iec62676_2_33.domain.sqlite_file.SqliteFile`: WAL, ``synchronous=FULL`` (an
acknowledged change is on disk), owner-only files, one immediate transaction per write, rolled back on
error; a versioned schema (the registry's) is migrated when older, used as it is when equal (no write
lock taken) and refused when newer.
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from iec62676_2_33.domain.registry import REGISTRY_FILE, ResourceRegistry
from iec62676_2_33.domain.sqlite_file import NewerSchema, SqliteFile
from iec62676_2_33.store import DB_NAME, DeviceStore
from iec62676_2_33.vss.lower import VSS_DB, LowerStore

FULL = 2  # PRAGMA synchronous


def test_every_store_opens_its_file_with_the_same_durability(tmp_path: Path) -> None:
    """CFG-6: WAL journal, synchronous=FULL, foreign keys on, the file readable by its owner only."""
    device = tmp_path / "device"
    stores: list[tuple[SqliteFile, Path]] = [
        (DeviceStore(device), device / DB_NAME),
        (ResourceRegistry(device / REGISTRY_FILE), device / REGISTRY_FILE),
        (LowerStore(tmp_path / "vss"), tmp_path / "vss" / VSS_DB),
    ]
    for store, path in stores:
        with store:
            db = store._db
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal", path
            assert db.execute("PRAGMA synchronous").fetchone()[0] == FULL, path
            assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1, path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    """CFG-6: a write that raises is rolled back whole."""
    with SqliteFile(tmp_path / "f.db", "CREATE TABLE IF NOT EXISTS t (v INTEGER)") as store:
        with pytest.raises(RuntimeError), store._write() as db:
            db.execute("INSERT INTO t VALUES (1)")
            raise RuntimeError("half-way")
        with store._reading() as db:
            assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_a_versioned_schema_is_migrated_used_or_refused(tmp_path: Path) -> None:
    """CFG-6: user_version older -> schema applied and version set; equal -> opened without a write lock
    (another process may be writing); newer -> refused, the file untouched."""
    path = tmp_path / "v.db"
    with SqliteFile(path, "CREATE TABLE IF NOT EXISTS a (v)", version=1) as store:
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == 1
    with SqliteFile(path, "CREATE TABLE IF NOT EXISTS a (v); CREATE TABLE IF NOT EXISTS b (v)", version=2) as store:
        tables = {row[0] for row in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"a", "b"}
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == 2

    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with SqliteFile(path, "CREATE TABLE IF NOT EXISTS c (v)", version=2, timeout=0.1) as store:
            assert store._db.execute("SELECT count(*) FROM b").fetchone()[0] == 0
        writer.execute("ROLLBACK")
    finally:
        writer.close()

    with pytest.raises(NewerSchema) as refused:
        SqliteFile(path, "CREATE TABLE IF NOT EXISTS a (v)", version=1)
    assert (refused.value.found, refused.value.supported) == (2, 1)


def test_memory_database_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CFG-6: ``":memory:"`` is a private database in memory; nothing is created on disk."""
    monkeypatch.chdir(tmp_path)
    with ResourceRegistry(":memory:") as registry:
        assert registry.path == ":memory:"
        assert registry.count() == 0
    assert list(tmp_path.iterdir()) == []
