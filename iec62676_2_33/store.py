"""Layer 6: the durable device store (embedded SQLite, stdlib).

Holds what a device must keep across restarts: uplink configurations (CFG-6),
users and their levels (SEC-1/SEC-2), the keystore (certificates with private
keys, referenced by CertificateID, UPL-13), certification path validation
policies (ID → trust anchors, UPL-11), authorization server configurations
(UPL-14) and media sources (the Media2 profiles, STR-1; domain/media.py).

Durability: WAL journal with ``synchronous=FULL`` and one ``BEGIN IMMEDIATE``
transaction per change, so a process killed at any instant leaves either the
old or the new state, and a change that was acknowledged is on disk (CFG-6).
Every write bumps ``generation`` so another process (the running ``device
serve``) notices changes made by the CLI.

Secrets at rest: private keys, user passwords, media-source (camera)
passwords and authorization servers' ClientSecrets are sealed under the data
folder's secret (domain/sealed.py), each bound to its row (``user:<name>``,
``media:<token>``, ``auth:<token>``), so a copied ``device.db`` without
``keystore.secret`` gives none of them away. A sealed text is stored as a
BLOB; a TEXT value in one of those columns is one written by an older version,
sealed when a store is opened (:meth:`DeviceStore._seal_plaintext_secrets`).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from .domain.media import MediaSource, validate_media_source
from .domain.sealed import Sealer
from .domain.sqlite_file import SqliteFile
from .errors import ConfigurationError
from .security.access import PREDEFINED_ROLES
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
-- uplinks.extension (TEXT NOT NULL DEFAULT '') is added by a migration: DeviceStore._add_uplink_extension_column.
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
CREATE TABLE IF NOT EXISTS media_sources (
    token TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    rtsp_url TEXT NOT NULL,
    snapshot_url TEXT,
    encoding TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    username TEXT,
    password TEXT
);
-- keystore objects of the Security service (PROV-1): keys (private part sealed, domain/sealed.py),
-- the key of each certificate (certificates.key_pem is empty for these), trust anchors by CertificateID,
-- policy and authorization-server details.
CREATE TABLE IF NOT EXISTS keystore_keys (
    id TEXT PRIMARY KEY,
    alias TEXT,
    status TEXT NOT NULL,
    public_der BLOB,
    private_sealed BLOB,
    external INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS certificate_keys (
    certificate_id TEXT PRIMARY KEY REFERENCES certificates(id) ON DELETE CASCADE,
    key_id TEXT NOT NULL REFERENCES keystore_keys(id),
    alias TEXT
);
CREATE TABLE IF NOT EXISTS policy_anchor_certificates (
    policy_id TEXT NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    certificate_id TEXT NOT NULL REFERENCES certificates(id),
    PRIMARY KEY (policy_id, position)
);
CREATE TABLE IF NOT EXISTS policy_details (
    policy_id TEXT PRIMARY KEY REFERENCES policies(id) ON DELETE CASCADE,
    alias TEXT,
    require_client_auth_eku INTEGER,
    use_delta_crls INTEGER
);
-- user roles (PROV-4): custom roles (functions space-separated) and the roles of each user.
CREATE TABLE IF NOT EXISTS user_roles (name TEXT PRIMARY KEY, functions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS user_role_members (user TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (user, role));
CREATE TABLE IF NOT EXISTS auth_server_details (
    token TEXT PRIMARY KEY REFERENCES auth_servers(token) ON DELETE CASCADE,
    type TEXT NOT NULL,
    client_auth TEXT,
    scope TEXT,
    certificate_id TEXT REFERENCES certificates(id)
);
"""


@dataclass(frozen=True, kw_only=True)
class AuthServerConfig:
    """An authorization server configuration (UPL-14): OAuth2 client-credentials endpoint."""

    token: str
    url: str
    client_id: str
    client_secret: str
    policy_id: str | None = None


class DeviceStore(SqliteFile):
    """The device's persistent state in ``<data_dir>/device.db``. Thread-safe."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        try:
            super().__init__(self.data_dir / DB_NAME, _SCHEMA)
            self._add_uplink_extension_column()
            self._sealer: Sealer | None = None
            self._seal_plaintext_keys()
            self._seal_plaintext_secrets()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise ConfigurationError(f"{self.data_dir / DB_NAME} is not a usable device store: {exc}") from exc

    def _committing(self, db: sqlite3.Connection) -> None:
        """Every committed change bumps the generation (:meth:`generation`)."""
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

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
    def _add_uplink_extension_column(self) -> None:
        """Schema migration: ``uplinks.extension`` (PROV-5) arrived after the first stores were written.

        A store without the column gets it (empty for every existing uplink) in one transaction; the check
        is repeated inside it, so two processes opening one old store add it once.
        """
        if _has_extension_column(self._read("PRAGMA table_info(uplinks)")):
            return
        with self._write() as db:
            if not _has_extension_column(db.execute("PRAGMA table_info(uplinks)").fetchall()):
                db.execute("ALTER TABLE uplinks ADD COLUMN extension TEXT NOT NULL DEFAULT ''")

    def list_uplinks(self) -> list[UplinkConfiguration]:
        rows = self._read(f"SELECT {_UPLINK_COLUMNS} FROM uplinks ORDER BY position")
        return [_uplink(row) for row in rows]

    def get_uplink(self, remote_address: str) -> UplinkConfiguration | None:
        rows = self._read(f"SELECT {_UPLINK_COLUMNS} FROM uplinks WHERE remote_address = ?", (remote_address,))
        return _uplink(rows[0]) if rows else None

    def put_uplink(self, cfg: UplinkConfiguration, *, max_uplinks: int,
                   check: Callable[[UplinkConfiguration], object] | None = None) -> bool:
        """Add or replace the entry keyed by RemoteAddress; True when it was new.

        The MaxUplinks check, and ``check`` (the references' existence: CertificateID, policy,
        authorization server), run inside the transaction, so concurrent writers cannot exceed the one nor
        delete what the other found; when either fails nothing is written.
        """
        with self._write() as db:
            if check is not None:  # its reads share this connection's open transaction
                check(cfg)
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
                f"INSERT OR REPLACE INTO uplinks (position, {_UPLINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (position, cfg.remote_address, " ".join(cfg.user_level), cfg.certificate_id,
                 cfg.cert_path_validation_policy_id, cfg.authorization_server, cfg.extension))
        return not exists

    def delete_uplink(self, remote_address: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM uplinks WHERE remote_address = ?", (remote_address,)).rowcount > 0

    # -- users (SEC-1, SEC-2) -------------------------------------------------
    def put_user(self, name: str, password: str, level: str, roles: Sequence[str] | None = None) -> None:
        """Add or replace a user; ``roles`` (PROV-4), when given, replace the user's roles in the same change."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO users (name, password, level) VALUES (?, ?, ?)",
                       (name, self._seal_text(f"user:{name}", password), level))
            if roles is not None:
                _put_roles(db, name, roles)

    def get_user(self, name: str) -> tuple[str, str] | None:
        """(password, level) of a user, or None."""
        rows = self._read("SELECT password, level FROM users WHERE name = ?", (name,))
        return (self._open_text(f"user:{name}", rows[0][0]), str(rows[0][1])) if rows else None

    def list_users(self) -> list[tuple[str, str]]:
        """(name, level) pairs; passwords are never listed."""
        return [(str(n), str(lv)) for n, lv in self._read("SELECT name, level FROM users ORDER BY name")]

    def delete_user(self, name: str) -> bool:
        with self._write() as db:
            db.execute("DELETE FROM user_role_members WHERE user = ?", (name,))
            return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    # -- keystore (PROV-1, UPL-13): keys and certificates -------------------
    # Rules (what may be created, parsed, matched) live in security/keystore.py; this block keeps
    # the objects, their references and the limits, each change in one transaction. Private keys
    # are sealed under the device secret (domain/sealed.py) and opened only for on-device use.

    def _seal(self, key_id: str, private_pem: bytes) -> bytes:
        with self._lock:
            if self._sealer is None:
                self._sealer = Sealer(self.data_dir)
            return self._sealer.seal(key_id, private_pem)

    def _open(self, key_id: str, sealed: bytes) -> bytes:
        with self._lock:
            if self._sealer is None:
                self._sealer = Sealer(self.data_dir)
            return self._sealer.open(key_id, sealed)

    def _seal_text(self, label: str, text: str) -> bytes:
        """A secret text sealed for the row ``label`` (stored as a BLOB; module docstring)."""
        return self._seal(label, text.encode())

    def _open_text(self, label: str, stored: object) -> str:
        """The secret of row ``label``: a BLOB is opened; a TEXT is one an older version wrote in the clear."""
        return self._open(label, stored).decode() if isinstance(stored, bytes) else str(stored)

    def _seal_plaintext_secrets(self) -> None:
        """Seal the secrets an older version kept in the clear, in one transaction (re-checked inside it, so
        two processes opening one old store seal each value once)."""
        found = "SELECT {key}, {column} FROM {table} WHERE typeof({column}) = 'text'"
        columns = (("users", "name", "password", "user"), ("media_sources", "token", "password", "media"),
                   ("auth_servers", "token", "client_secret", "auth"))
        if not any(self._read(found.format(key=k, column=c, table=t) + " LIMIT 1") for t, k, c, _ in columns):
            return
        with self._write() as db:
            for table, key, column, kind in columns:
                for row_key, clear in db.execute(found.format(key=key, column=column, table=table)).fetchall():
                    db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                               (self._seal_text(f"{kind}:{row_key}", str(clear)), row_key))
        with self._lock:  # the pages that held them in the clear leave the write-ahead log now
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _seal_plaintext_keys(self) -> None:
        """Move private keys an older version kept in the clear (``certificates.key_pem``) under seal."""
        for certificate_id, cert_pem, key_pem in self._read(
                "SELECT id, cert_pem, key_pem FROM certificates WHERE length(key_pem) > 0"):
            self.put_certificate(str(certificate_id), _blob(cert_pem), _blob(key_pem))

    def add_key(self, key_id: str, *, alias: str | None, public_der: bytes | None, private_pem: bytes | None,
                max_keys: int, generating: bool = False, external: bool = True) -> None:
        """Store a new key (``generating``: a placeholder whose material :meth:`complete_key` fills in)."""
        sealed = None if private_pem is None else self._seal(key_id, private_pem)
        with self._write() as db:
            _check_room(db, "keystore_keys", max_keys, "keys")
            db.execute("INSERT INTO keystore_keys (id, alias, status, public_der, private_sealed, external)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       (key_id, alias, KEY_GENERATING if generating else KEY_OK, public_der, sealed, int(external)))

    def complete_key(self, key_id: str, public_der: bytes, private_pem: bytes) -> bool:
        """A generated key is ready; False when it was deleted meanwhile (then nothing is stored)."""
        sealed = self._seal(key_id, private_pem)
        with self._write() as db:
            return db.execute("UPDATE keystore_keys SET status = ?, public_der = ?, private_sealed = ?"
                              " WHERE id = ? AND status = ?",
                              (KEY_OK, public_der, sealed, key_id, KEY_GENERATING)).rowcount > 0

    def discard_generating_keys(self) -> int:
        """Drop placeholders of generations that never finished (the process died): no half object stays."""
        with self._write() as db:
            return db.execute("DELETE FROM keystore_keys WHERE status = ?", (KEY_GENERATING,)).rowcount

    def key(self, key_id: str) -> KeyRecord | None:
        rows = self._read(f"SELECT {_KEY_COLUMNS} FROM keystore_keys WHERE id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    def list_keys(self) -> list[KeyRecord]:
        return [_key(r) for r in self._read(f"SELECT {_KEY_COLUMNS} FROM keystore_keys ORDER BY id")]

    def key_by_public(self, public_der: bytes) -> KeyRecord | None:
        rows = self._read(f"SELECT {_KEY_COLUMNS} FROM keystore_keys WHERE public_der = ?"
                          " ORDER BY private_sealed IS NULL, id LIMIT 1", (public_der,))
        return _key(rows[0]) if rows else None

    def private_key(self, key_id: str) -> bytes | None:
        """The opened private key (PEM) for use on the device only (signing, TLS); never for an answer."""
        rows = self._read("SELECT private_sealed FROM keystore_keys WHERE id = ?", (key_id,))
        if not rows or rows[0][0] is None:
            return None
        return self._open(key_id, _blob(rows[0][0]))

    def delete_key(self, key_id: str) -> bool:
        """Remove a key; :class:`ReferenceExists` while a certificate uses it."""
        with self._write() as db:
            used = db.execute("SELECT certificate_id FROM certificate_keys WHERE key_id = ? LIMIT 1",
                              (key_id,)).fetchone()
            if used is not None:
                raise ReferenceExists(f"key {key_id!r} is used by certificate {used[0]!r}; delete that first")
            return db.execute("DELETE FROM keystore_keys WHERE id = ?", (key_id,)).rowcount > 0

    def add_certificate(self, certificate_id: str, *, key_id: str, alias: str | None, cert_pem: bytes,
                        max_certificates: int) -> None:
        """Store a new certificate of a stored key (its private key, if any, stays with the key)."""
        with self._write() as db:
            _check_room(db, "certificates", max_certificates, "certificates")
            db.execute("INSERT INTO certificates (id, cert_pem, key_pem) VALUES (?, ?, ?)",
                       (certificate_id, cert_pem, b""))
            db.execute("INSERT INTO certificate_keys (certificate_id, key_id, alias) VALUES (?, ?, ?)",
                       (certificate_id, key_id, alias))

    def put_certificate(self, certificate_id: str, cert_pem: bytes, key_pem: bytes) -> None:
        """Add or replace a certificate together with its own private key (``device keystore add``).

        The key is stored as key ``<certificate_id>-key`` (sealed), so the
        Security service shows it like any other (UPL-13, PROV-1).
        """
        key_id = f"{certificate_id}-key"
        sealed = self._seal(key_id, key_pem)
        with self._write() as db:
            db.execute("INSERT INTO keystore_keys (id, status, private_sealed, external) VALUES (?, ?, ?, 1)"
                       " ON CONFLICT(id) DO UPDATE SET private_sealed = excluded.private_sealed,"
                       " public_der = NULL, status = excluded.status", (key_id, KEY_OK, sealed))
            db.execute("INSERT INTO certificates (id, cert_pem, key_pem) VALUES (?, ?, ?)"
                       " ON CONFLICT(id) DO UPDATE SET cert_pem = excluded.cert_pem, key_pem = excluded.key_pem",
                       (certificate_id, cert_pem, b""))
            db.execute("INSERT INTO certificate_keys (certificate_id, key_id) VALUES (?, ?)"
                       " ON CONFLICT(certificate_id) DO UPDATE SET key_id = excluded.key_id",
                       (certificate_id, key_id))

    def certificate(self, certificate_id: str) -> CertificateRecord | None:
        rows = self._read(f"SELECT {_CERT_COLUMNS} FROM certificates c JOIN certificate_keys k"
                          " ON k.certificate_id = c.id WHERE c.id = ?", (certificate_id,))
        return _certificate(rows[0]) if rows else None

    def list_certificate_records(self) -> list[CertificateRecord]:
        return [_certificate(r) for r in self._read(
            f"SELECT {_CERT_COLUMNS} FROM certificates c JOIN certificate_keys k ON k.certificate_id = c.id"
            " ORDER BY c.id")]

    def get_certificate(self, certificate_id: str) -> tuple[bytes, bytes] | None:
        """(certificate chain PEM, private key PEM) of a client credential, or None (no such
        certificate, or its key has no private part)."""
        record = self.certificate(certificate_id)
        if record is None:
            return None
        key_pem = self.private_key(record.key_id)
        return None if key_pem is None else (record.cert_pem, key_pem)

    def list_certificates(self) -> list[str]:
        return [str(r[0]) for r in self._read("SELECT id FROM certificates ORDER BY id")]

    def has_certificate(self, certificate_id: str) -> bool:
        """True for a certificate whose key has a private part: one an uplink can authenticate with."""
        return bool(self._read(
            "SELECT 1 FROM certificate_keys c JOIN keystore_keys k ON k.id = c.key_id"
            " WHERE c.certificate_id = ? AND k.private_sealed IS NOT NULL", (certificate_id,)))

    def delete_certificate(self, certificate_id: str) -> bool:
        """Remove a certificate; :class:`ReferenceExists` while an uplink, a policy or an
        authorization server configuration names it."""
        with self._write() as db:
            for sql, what in _CERTIFICATE_USERS:
                row = db.execute(sql, (certificate_id,)).fetchone()
                if row is not None:
                    raise ReferenceExists(f"certificate {certificate_id!r} is used by {what} {row[0]!r}")
            return db.execute("DELETE FROM certificates WHERE id = ?", (certificate_id,)).rowcount > 0

    # -- certification path validation policies (UPL-11, PROV-1) -------------
    def add_policy(self, policy: PolicyRecord, *, max_policies: int) -> None:
        """Store a new policy whose trust anchors are stored certificates (by CertificateID)."""
        with self._write() as db:
            _check_room(db, "policies", max_policies, "certification path validation policies")
            db.execute("INSERT INTO policies (id) VALUES (?)", (policy.policy_id,))
            for position, certificate_id in enumerate(policy.anchors):
                row = db.execute("SELECT cert_pem FROM certificates WHERE id = ?", (certificate_id,)).fetchone()
                if row is None:
                    raise ConfigurationError(f"trust anchor {certificate_id!r} is not a stored certificate")
                _put_anchor(db, policy.policy_id, position, certificate_id, row[0])
            db.execute("INSERT INTO policy_details (policy_id, alias, require_client_auth_eku, use_delta_crls)"
                       " VALUES (?, ?, ?, ?)", (policy.policy_id, policy.alias,
                                                _flag(policy.require_client_auth_eku), _flag(policy.use_delta_crls)))

    def put_policy(self, policy_id: str, anchors_pem: Sequence[bytes]) -> None:
        """Add or replace a policy from trust-anchor PEMs (``device policy add``); each anchor is kept
        as a certificate ``anchor-<digest>`` so the Security service lists it by CertificateID."""
        if not anchors_pem:
            raise ConfigurationError(f"policy {policy_id!r} needs at least one trust anchor")
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO policies (id) VALUES (?)", (policy_id,))
            db.execute("DELETE FROM policy_anchors WHERE policy_id = ?", (policy_id,))
            db.execute("DELETE FROM policy_anchor_certificates WHERE policy_id = ?", (policy_id,))
            for position, pem in enumerate(anchors_pem):
                certificate_id = f"anchor-{hashlib.sha256(pem).hexdigest()[:20]}"
                db.execute("INSERT OR IGNORE INTO keystore_keys (id, status, external) VALUES (?, ?, 1)",
                           (f"{certificate_id}-key", KEY_OK))
                db.execute("INSERT OR IGNORE INTO certificates (id, cert_pem, key_pem) VALUES (?, ?, ?)",
                           (certificate_id, pem, b""))
                db.execute("INSERT OR IGNORE INTO certificate_keys (certificate_id, key_id) VALUES (?, ?)",
                           (certificate_id, f"{certificate_id}-key"))
                _put_anchor(db, policy_id, position, certificate_id, pem)

    def get_policy(self, policy_id: str) -> list[bytes] | None:
        if not self.has_policy(policy_id):
            return None
        rows = self._read("SELECT cert_pem FROM policy_anchors WHERE policy_id = ? ORDER BY position",
                          (policy_id,))
        return [bytes(cast(bytes, r[0])) for r in rows]

    def policy(self, policy_id: str) -> PolicyRecord | None:
        rows = self._read("SELECT p.id, d.alias, d.require_client_auth_eku, d.use_delta_crls FROM policies p"
                          " LEFT JOIN policy_details d ON d.policy_id = p.id WHERE p.id = ?", (policy_id,))
        if not rows:
            return None
        pid, alias, eku, delta = rows[0]
        anchors = self._read("SELECT certificate_id FROM policy_anchor_certificates WHERE policy_id = ?"
                             " ORDER BY position", (policy_id,))
        return PolicyRecord(policy_id=str(pid), alias=None if alias is None else str(alias),
                            anchors=tuple(str(a[0]) for a in anchors),
                            require_client_auth_eku=None if eku is None else bool(eku),
                            use_delta_crls=None if delta is None else bool(delta))

    def has_policy(self, policy_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM policies WHERE id = ?", (policy_id,)))

    def list_policies(self) -> list[str]:
        return [str(r[0]) for r in self._read("SELECT id FROM policies ORDER BY id")]

    def delete_policy(self, policy_id: str) -> bool:
        """Remove a policy; :class:`ReferenceExists` while an uplink or an authorization server uses it."""
        with self._write() as db:
            for sql, what in _POLICY_USERS:
                row = db.execute(sql, (policy_id,)).fetchone()
                if row is not None:
                    raise ReferenceExists(f"policy {policy_id!r} is used by {what} {row[0]!r}")
            db.execute("DELETE FROM policy_anchors WHERE policy_id = ?", (policy_id,))
            return db.execute("DELETE FROM policies WHERE id = ?", (policy_id,)).rowcount > 0

    # -- authorization server configurations of the Security service (PROV-1, PROV-3)
    def add_auth_server(self, cfg: AuthServerConfig, details: AuthServerDetails, *, max_configurations: int,
                        replace: bool = False) -> None:
        """Create (or, with ``replace``, overwrite an existing) configuration and its details."""
        with self._write() as db:
            exists = db.execute("SELECT 1 FROM auth_servers WHERE token = ?", (cfg.token,)).fetchone()
            if replace and exists is None:
                raise ConfigurationError(f"no authorization server configuration {cfg.token!r}")
            if not replace:
                _check_room(db, "auth_servers", max_configurations, "authorization server configurations")
            self._put_auth_server_row(db, cfg)
            db.execute("INSERT OR REPLACE INTO auth_server_details (token, type, client_auth, scope, certificate_id)"
                       " VALUES (?, ?, ?, ?, ?)",
                       (cfg.token, details.type, details.client_auth, details.scope, details.certificate_id))

    def auth_server_details(self, token: str) -> AuthServerDetails | None:
        rows = self._read("SELECT type, client_auth, scope, certificate_id FROM auth_server_details"
                          " WHERE token = ?", (token,))
        if not rows:
            return None
        kind, auth, scope, cert = (None if v is None else str(v) for v in rows[0])
        return AuthServerDetails(type=kind or "", client_auth=auth, scope=scope, certificate_id=cert)

    def delete_auth_server(self, token: str) -> bool:
        """Remove a configuration; :class:`ReferenceExists` while an uplink uses it."""
        with self._write() as db:
            row = db.execute("SELECT remote_address FROM uplinks WHERE authorization_server = ? LIMIT 1",
                             (token,)).fetchone()
            if row is not None:
                raise ReferenceExists(f"authorization server {token!r} is used by uplink {row[0]!r}")
            return db.execute("DELETE FROM auth_servers WHERE token = ?", (token,)).rowcount > 0

    # -- authorization servers (UPL-14) ---------------------------------------
    def put_auth_server(self, cfg: AuthServerConfig) -> None:
        with self._write() as db:
            self._put_auth_server_row(db, cfg)

    def _put_auth_server_row(self, db: sqlite3.Connection, cfg: AuthServerConfig) -> None:
        db.execute("INSERT OR REPLACE INTO auth_servers (token, url, client_id, client_secret, policy_id)"
                   " VALUES (?, ?, ?, ?, ?)", (cfg.token, cfg.url, cfg.client_id,
                                               self._seal_text(f"auth:{cfg.token}", cfg.client_secret), cfg.policy_id))

    def get_auth_server(self, token: str) -> AuthServerConfig | None:
        rows = self._read("SELECT token, url, client_id, client_secret, policy_id FROM auth_servers"
                          " WHERE token = ?", (token,))
        if not rows:
            return None
        t, url, cid, secret, policy = rows[0]
        return AuthServerConfig(token=str(t), url=str(url), client_id=str(cid),
                                client_secret=self._open_text(f"auth:{t}", secret),
                                policy_id=None if policy is None else str(policy))

    def has_auth_server(self, token: str) -> bool:
        return bool(self._read("SELECT 1 FROM auth_servers WHERE token = ?", (token,)))

    def list_auth_servers(self) -> list[str]:
        return [str(r[0]) for r in self._read("SELECT token FROM auth_servers ORDER BY token")]

    # -- user roles (PROV-4): rules in security/roles.py -----------------------
    def list_user_roles(self) -> list[tuple[str, tuple[str, ...]]]:
        """(name, functions) of the custom roles."""
        return [(str(n), tuple(str(f).split())) for n, f in self._read("SELECT name, functions FROM user_roles"
                                                                       " ORDER BY name")]

    def put_user_role(self, name: str, functions: Sequence[str], *, max_custom: int) -> None:
        """Create or overwrite a custom role; :class:`CapacityReached` beyond ``max_custom`` roles."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM user_roles WHERE name = ?", (name,)).fetchone() is None:
                _check_room(db, "user_roles", max_custom, "custom user roles")
            db.execute("INSERT OR REPLACE INTO user_roles (name, functions) VALUES (?, ?)",
                       (name, " ".join(functions)))

    def delete_user_role(self, name: str) -> bool:
        """Remove a custom role and its assignments to users."""
        with self._write() as db:
            db.execute("DELETE FROM user_role_members WHERE role = ?", (name,))
            return db.execute("DELETE FROM user_roles WHERE name = ?", (name,)).rowcount > 0

    def set_roles_of_user(self, user: str, roles: Sequence[str]) -> None:
        """The roles a user holds besides its level (tt:UserExtension/Roles)."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone() is None:
                raise ConfigurationError(f"no user {user!r}; add the user first")
            _put_roles(db, user, roles)

    def roles_of_user(self, user: str) -> tuple[str, ...]:
        return tuple(str(r[0]) for r in self._read("SELECT role FROM user_role_members WHERE user = ? ORDER BY role",
                                                   (user,)))

    def has_user_role(self, name: str) -> bool:
        """A predefined role or a stored custom one (what an uplink's UserLevel may name, PROV-4)."""
        return name in PREDEFINED_ROLES or bool(self._read("SELECT 1 FROM user_roles WHERE name = ?", (name,)))

    # -- media sources (STR-1, ANX-B-1; domain/media.py) ----------------------
    def put_media_source(self, src: MediaSource) -> bool:
        """Validate and add or replace the source keyed by its token; True when it was new."""
        validate_media_source(src)
        with self._write() as db:
            exists = db.execute("SELECT 1 FROM media_sources WHERE token = ?", (src.token,)).fetchone() is not None
            db.execute(
                "INSERT OR REPLACE INTO media_sources (token, name, rtsp_url, snapshot_url, encoding, width,"
                " height, username, password) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (src.token, src.name, src.rtsp_url, src.snapshot_url, src.encoding, src.width, src.height,
                 src.username, None if src.password is None else self._seal_text(f"media:{src.token}", src.password)))
        return not exists

    def get_media_source(self, token: str) -> MediaSource | None:
        rows = self._read(f"SELECT {_MEDIA_COLUMNS} FROM media_sources WHERE token = ?", (token,))
        return self._media_source(rows[0]) if rows else None

    def list_media_sources(self) -> list[MediaSource]:
        return [self._media_source(r)
                for r in self._read(f"SELECT {_MEDIA_COLUMNS} FROM media_sources ORDER BY token")]

    def _media_source(self, row: tuple[object, ...]) -> MediaSource:
        token, name, rtsp_url, snapshot_url, encoding, width, height, username, password = row

        def text(value: object) -> str | None:
            return None if value is None else str(value)

        return MediaSource(
            token=str(token), name=str(name), rtsp_url=str(rtsp_url), snapshot_url=text(snapshot_url),
            encoding=str(encoding), width=None if width is None else int(str(width)),
            height=None if height is None else int(str(height)), username=text(username),
            password=None if password is None else self._open_text(f"media:{token}", password))

    def delete_media_source(self, token: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM media_sources WHERE token = ?", (token,)).rowcount > 0

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])


_UPLINK_COLUMNS = ("remote_address, user_level, certificate_id, cert_path_validation_policy_id, "
                   "authorization_server, extension")


def _has_extension_column(table_info: Sequence[Sequence[object]]) -> bool:
    return any(column[1] == "extension" for column in table_info)


def _uplink(row: tuple[object, ...]) -> UplinkConfiguration:
    address, levels, cert_id, policy_id, auth, extension = row
    return UplinkConfiguration(
        remote_address=str(address), user_level=tuple(str(levels).split()),
        certificate_id=None if cert_id is None else str(cert_id),
        cert_path_validation_policy_id=None if policy_id is None else str(policy_id),
        authorization_server=None if auth is None else str(auth), extension=str(extension),
    )


_MEDIA_COLUMNS = "token, name, rtsp_url, snapshot_url, encoding, width, height, username, password"


# -- keystore records and helpers (PROV-1) -------------------------------------

#: Key status values of the Security service (tas:KeyStatus).
KEY_OK = "ok"
KEY_GENERATING = "generating"


class ReferenceExists(ConfigurationError):
    """A keystore object is still used (by an uplink, a policy, a certificate …) and stays."""


class CapacityReached(ConfigurationError):
    """The keystore holds as many objects of a kind as the device supports; nothing was stored."""


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    """A key of the keystore; its private part never leaves the store except via ``private_key``."""

    key_id: str
    alias: str | None
    status: str
    public_der: bytes | None
    has_private_key: bool
    external: bool


@dataclass(frozen=True, kw_only=True)
class CertificateRecord:
    certificate_id: str
    key_id: str
    alias: str | None
    cert_pem: bytes


@dataclass(frozen=True, kw_only=True)
class PolicyRecord:
    """A certification path validation policy: trust anchors by CertificateID."""

    policy_id: str
    alias: str | None
    anchors: tuple[str, ...]
    require_client_auth_eku: bool | None = None
    use_delta_crls: bool | None = None


@dataclass(frozen=True, kw_only=True)
class AuthServerDetails:
    """What the Security service keeps beside :class:`AuthServerConfig` (PROV-3)."""

    type: str
    client_auth: str | None = None
    scope: str | None = None
    certificate_id: str | None = None


_KEY_COLUMNS = "id, alias, status, public_der, private_sealed IS NOT NULL, external"
_CERT_COLUMNS = "c.id, k.key_id, k.alias, c.cert_pem"
_CERTIFICATE_USERS = (
    ("SELECT remote_address FROM uplinks WHERE certificate_id = ? LIMIT 1", "uplink"),
    ("SELECT policy_id FROM policy_anchor_certificates WHERE certificate_id = ? LIMIT 1",
     "certification path validation policy"),
    ("SELECT token FROM auth_server_details WHERE certificate_id = ? LIMIT 1", "authorization server"),
)
_POLICY_USERS = (
    ("SELECT remote_address FROM uplinks WHERE cert_path_validation_policy_id = ? LIMIT 1", "uplink"),
    ("SELECT token FROM auth_servers WHERE policy_id = ? LIMIT 1", "authorization server"),
)


def _check_room(db: sqlite3.Connection, table: str, limit: int, what: str) -> None:
    if db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] >= limit:  # table: one of ours
        raise CapacityReached(f"the keystore already holds the maximum of {limit} {what}; delete one first")


def _put_anchor(db: sqlite3.Connection, policy_id: str, position: int, certificate_id: str, pem: bytes) -> None:
    db.execute("INSERT INTO policy_anchors (policy_id, position, cert_pem) VALUES (?, ?, ?)",
               (policy_id, position, pem))
    db.execute("INSERT OR REPLACE INTO policy_anchor_certificates (policy_id, position, certificate_id)"
               " VALUES (?, ?, ?)", (policy_id, position, certificate_id))


def _put_roles(db: sqlite3.Connection, user: str, roles: Sequence[str]) -> None:
    db.execute("DELETE FROM user_role_members WHERE user = ?", (user,))
    db.executemany("INSERT INTO user_role_members (user, role) VALUES (?, ?)", [(user, r) for r in dict.fromkeys(roles)])


def _blob(value: object) -> bytes:
    """A BLOB column's value (sqlite3 gives ``bytes``)."""
    if not isinstance(value, bytes):
        raise ConfigurationError(f"the device store holds {type(value).__name__} where bytes belong; "
                                 "it is damaged")
    return value


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _key(row: tuple[object, ...]) -> KeyRecord:
    key_id, alias, status, public_der, has_private, external = row
    return KeyRecord(key_id=str(key_id), alias=None if alias is None else str(alias), status=str(status),
                     public_der=None if public_der is None else _blob(public_der),
                     has_private_key=bool(has_private), external=bool(external))


def _certificate(row: tuple[object, ...]) -> CertificateRecord:
    certificate_id, key_id, alias, cert_pem = row
    return CertificateRecord(certificate_id=str(certificate_id), key_id=str(key_id),
                             alias=None if alias is None else str(alias),
                             cert_pem=_blob(cert_pem))
