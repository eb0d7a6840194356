"""Layer 6: the durable device store (embedded SQLite, stdlib).

Holds what a device must keep across restarts: uplink configurations (CFG-6),
users and their levels (SEC-1/SEC-2), the keystore (certificates with private
keys, referenced by CertificateID, UPL-13), certification path validation
policies (ID → trust anchors, UPL-11) and authorization server configurations
(UPL-14).

Durability: WAL journal with ``synchronous=FULL`` and one ``BEGIN IMMEDIATE``
transaction per change, so a process killed at any instant leaves either the
old or the new state, and a change that was acknowledged is on disk (CFG-6).
Every write bumps ``generation`` so another process (the running ``device
serve``) notices changes made by the CLI.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .domain.private_files import private_database
from .errors import ConfigurationError
from .uplinkconfig import UplinkConfiguration, too_many

DB_NAME = "device.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uplinks (
    remote_address TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    user_level TEXT NOT NULL,
    certificate_id TEXT,
    cert_path_validation_policy_id TEXT,
    authorization_server TEXT
);
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL, level TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (id TEXT PRIMARY KEY, cert_pem BLOB NOT NULL, key_pem BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS policies (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS policy_anchors (
    policy_id TEXT NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    cert_pem BLOB NOT NULL,
    PRIMARY KEY (policy_id, position)
);
CREATE TABLE IF NOT EXISTS auth_servers (
    token TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    policy_id TEXT
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', '0');
INSERT OR IGNORE INTO meta (key, value) VALUES ('device_salt', lower(hex(randomblob(16))));
"""

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass(frozen=True, kw_only=True)
class AuthServerConfig:
    """An authorization server configuration (UPL-14): OAuth2 client-credentials endpoint."""

    token: str
    url: str
    client_id: str
    client_secret: str
    policy_id: str | None = None


class DeviceStore:
    """The device's persistent state in ``<data_dir>/device.db``. Thread-safe."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        private_database(self.path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._write() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise ConfigurationError(f"{self.path} is not a usable device store: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction; bumps the generation; rolls back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def generation(self) -> int:
        """A counter that grows with every committed change (also by other processes)."""
        return int(str(self._read("SELECT value FROM meta WHERE key = 'generation'")[0][0]))

    def device_salt(self) -> str:
        """A random value drawn once per device store: seeds the device's own backoff (UPL-9)."""
        return str(self._read("SELECT value FROM meta WHERE key = 'device_salt'")[0][0])

    # -- uplinks (CFG-2, CFG-3, CFG-4, CFG-6) --------------------------------
    def list_uplinks(self) -> list[UplinkConfiguration]:
        rows = self._read(
            "SELECT remote_address, user_level, certificate_id, cert_path_validation_policy_id,"
            " authorization_server FROM uplinks ORDER BY position")
        return [_uplink(row) for row in rows]

    def get_uplink(self, remote_address: str) -> UplinkConfiguration | None:
        rows = self._read(
            "SELECT remote_address, user_level, certificate_id, cert_path_validation_policy_id,"
            " authorization_server FROM uplinks WHERE remote_address = ?", (remote_address,))
        return _uplink(rows[0]) if rows else None

    def put_uplink(self, cfg: UplinkConfiguration, *, max_uplinks: int) -> bool:
        """Add or replace the entry keyed by RemoteAddress; True when it was new.

        The MaxUplinks check runs inside the transaction, so concurrent writers
        cannot exceed it; when it fails nothing is written.
        """
        with self._write() as db:
            exists = db.execute("SELECT 1 FROM uplinks WHERE remote_address = ?",
                                (cfg.remote_address,)).fetchone() is not None
            if not exists:
                count, top = db.execute("SELECT COUNT(*), COALESCE(MAX(position), 0) FROM uplinks").fetchone()
                if count >= max_uplinks:
                    raise too_many(max_uplinks)
                position = top + 1
            else:
                position = db.execute("SELECT position FROM uplinks WHERE remote_address = ?",
                                      (cfg.remote_address,)).fetchone()[0]
            db.execute(
                "INSERT OR REPLACE INTO uplinks (remote_address, position, user_level, certificate_id,"
                " cert_path_validation_policy_id, authorization_server) VALUES (?, ?, ?, ?, ?, ?)",
                (cfg.remote_address, position, " ".join(cfg.user_level), cfg.certificate_id,
                 cfg.cert_path_validation_policy_id, cfg.authorization_server))
        return not exists

    def delete_uplink(self, remote_address: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM uplinks WHERE remote_address = ?", (remote_address,)).rowcount > 0

    # -- users (SEC-1, SEC-2) -------------------------------------------------
    def put_user(self, name: str, password: str, level: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO users (name, password, level) VALUES (?, ?, ?)",
                       (name, password, level))

    def get_user(self, name: str) -> tuple[str, str] | None:
        """(password, level) of a user, or None."""
        rows = self._read("SELECT password, level FROM users WHERE name = ?", (name,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def list_users(self) -> list[tuple[str, str]]:
        """(name, level) pairs; passwords are never listed."""
        return [(str(n), str(lv)) for n, lv in self._read("SELECT name, level FROM users ORDER BY name")]

    def delete_user(self, name: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    # -- keystore (UPL-13) ----------------------------------------------------
    def put_certificate(self, certificate_id: str, cert_pem: bytes, key_pem: bytes) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO certificates (id, cert_pem, key_pem) VALUES (?, ?, ?)",
                       (certificate_id, cert_pem, key_pem))

    def get_certificate(self, certificate_id: str) -> tuple[bytes, bytes] | None:
        """(certificate chain PEM, private key PEM) or None."""
        rows = self._read("SELECT cert_pem, key_pem FROM certificates WHERE id = ?", (certificate_id,))
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None  # type: ignore[arg-type]

    def list_certificates(self) -> list[str]:
        return [str(r[0]) for r in self._read("SELECT id FROM certificates ORDER BY id")]

    def has_certificate(self, certificate_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM certificates WHERE id = ?", (certificate_id,)))

    # -- certification path validation policies (UPL-11) ----------------------
    def put_policy(self, policy_id: str, anchors_pem: Sequence[bytes]) -> None:
        if not anchors_pem:
            raise ConfigurationError(f"policy {policy_id!r} needs at least one trust anchor")
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO policies (id) VALUES (?)", (policy_id,))
            db.execute("DELETE FROM policy_anchors WHERE policy_id = ?", (policy_id,))
            db.executemany("INSERT INTO policy_anchors (policy_id, position, cert_pem) VALUES (?, ?, ?)",
                           [(policy_id, i, pem) for i, pem in enumerate(anchors_pem)])

    def get_policy(self, policy_id: str) -> list[bytes] | None:
        if not self.has_policy(policy_id):
            return None
        rows = self._read("SELECT cert_pem FROM policy_anchors WHERE policy_id = ? ORDER BY position",
                          (policy_id,))
        return [bytes(r[0]) for r in rows]  # type: ignore[arg-type]

    def has_policy(self, policy_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM policies WHERE id = ?", (policy_id,)))

    def list_policies(self) -> list[str]:
        return [str(r[0]) for r in self._read("SELECT id FROM policies ORDER BY id")]

    # -- authorization servers (UPL-14) ---------------------------------------
    def put_auth_server(self, cfg: AuthServerConfig) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO auth_servers (token, url, client_id, client_secret, policy_id)"
                " VALUES (?, ?, ?, ?, ?)", (cfg.token, cfg.url, cfg.client_id, cfg.client_secret, cfg.policy_id))

    def get_auth_server(self, token: str) -> AuthServerConfig | None:
        rows = self._read("SELECT token, url, client_id, client_secret, policy_id FROM auth_servers"
                          " WHERE token = ?", (token,))
        if not rows:
            return None
        t, url, cid, secret, policy = rows[0]
        return AuthServerConfig(token=str(t), url=str(url), client_id=str(cid), client_secret=str(secret),
                                policy_id=None if policy is None else str(policy))

    def has_auth_server(self, token: str) -> bool:
        return bool(self._read("SELECT 1 FROM auth_servers WHERE token = ?", (token,)))

    def list_auth_servers(self) -> list[str]:
        return [str(r[0]) for r in self._read("SELECT token FROM auth_servers ORDER BY token")]

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])


def _uplink(row: tuple[object, ...]) -> UplinkConfiguration:
    address, levels, cert_id, policy_id, auth = row
    return UplinkConfiguration(
        remote_address=str(address), user_level=tuple(str(levels).split()),
        certificate_id=None if cert_id is None else str(cert_id),
        cert_path_validation_policy_id=None if policy_id is None else str(policy_id),
        authorization_server=None if auth is None else str(auth),
    )
