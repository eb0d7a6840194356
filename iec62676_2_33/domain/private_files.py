"""Layer 6: files that hold secrets or configuration are the owner's alone.

The device's data folder holds user passwords, private keys and uplink
configurations (``device.db``) and the resource registry (``resources.db``).
Both databases, their SQLite ``-wal``/``-shm`` companions (SQLite creates them
with the database file's permissions) and the folder itself are kept at
``0600``/``0700`` whatever the umask, also when an older version left them
wider open.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import ConfigurationError

__all__ = ["private_database", "write_atomic"]


def private_database(path: Path) -> None:
    """Create ``path`` (and its folder) owner-only when missing; narrow the modes of existing ones."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    except OSError as exc:
        raise ConfigurationError(f"cannot create {path}: {exc.strerror or exc}; check the folder") from exc
    for item, mode in ((folder, 0o700), (path, 0o600),
                       (Path(f"{path}-wal"), 0o600), (Path(f"{path}-shm"), 0o600)):
        with contextlib.suppress(FileNotFoundError, PermissionError):  # not ours to change: leave it
            if item.stat().st_mode & 0o777 & ~mode:
                os.chmod(item, mode)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace *path* by *data* with permissions *mode*: old or new content, never a mix."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write {path}: {exc.strerror or exc}; check that the directory is writable"
        ) from None
