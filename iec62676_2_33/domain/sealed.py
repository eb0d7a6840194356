"""Layer 6: secrets sealed at rest under a device secret (PROV-1, UPL-13).

The keystore's private keys (and the store's other secrets: passwords, a
ClientSecret) are never written in the clear: each is sealed
with AES-256-GCM under a 32-byte device secret kept in ``<data>/keystore.secret``
(mode 0600 in the 0700 data folder), with the key's ID (a secret's row label) as associated data,
so a sealed blob copied onto another row does not open.

Theory of operation
-------------------
The secret is drawn once, on first use: written to a private temporary file,
flushed to disk, then published with ``os.link`` — which fails when another
process published first, in which case that secret is read instead. So two
processes opening a fresh data folder at once agree on one secret, and a
reader never sees a half-written file. A sealed blob is ``version byte ||
12-byte nonce || ciphertext+tag``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigurationError

__all__ = ["SECRET_FILE", "Sealer"]

SECRET_FILE = "keystore.secret"
_VERSION = b"\x01"
_NONCE = 12
_SECRET_BYTES = 32


def _load_or_create(path: Path) -> bytes:
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(_SECRET_BYTES))
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process published first: use its secret
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        secret = path.read_bytes()
    if len(secret) != _SECRET_BYTES:
        raise ConfigurationError(f"{path} is damaged ({len(secret)} bytes, expected {_SECRET_BYTES}); "
                                 "the keystore's private keys and the stored secrets cannot be opened without it")
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return secret


class Sealer:
    """Seals and opens private keys and other secrets with the device secret of one data folder."""

    def __init__(self, data_dir: Path) -> None:
        try:
            self._aead = AESGCM(_load_or_create(data_dir / SECRET_FILE))
        except OSError as exc:
            raise ConfigurationError(f"cannot use the keystore secret in {data_dir}: {exc.strerror or exc}") \
                from exc

    def seal(self, key_id: str, plaintext: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, key_id.encode())

    def open(self, key_id: str, blob: bytes) -> bytes:
        if blob[:1] != _VERSION:
            raise ConfigurationError(f"the sealed secret {key_id!r} is not in a known format")
        try:
            return self._aead.decrypt(blob[1:1 + _NONCE], blob[1 + _NONCE:], key_id.encode())
        except InvalidTag:
            raise ConfigurationError(f"the sealed secret {key_id!r} does not open with this device's "
                                     f"{SECRET_FILE}") from None
