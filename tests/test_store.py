"""CFG-6: the device store survives restarts and kill -9; nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from iec62676_2_33.domain.media import MediaSource
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.services.uplink import UplinkServiceContext
from iec62676_2_33.store import DB_NAME, AuthServerConfig, DeviceStore
from iec62676_2_33.uplinkconfig import UplinkConfigError, UplinkConfiguration

WRITER = textwrap.dedent("""
    import sys
    from iec62676_2_33.store import DeviceStore
    from iec62676_2_33.uplinkconfig import UplinkConfiguration
    store = DeviceStore(sys.argv[1])
    start = int(sys.argv[2])
    for i in range(start, start + 100000):
        store.put_uplink(UplinkConfiguration(remote_address=f"https://cloud{i % 50}.example/",
                                             user_level=("User",), certificate_id=f"c{i}"), max_uplinks=64)
        print(i, flush=True)
""")


def _cfg(address: str, cert: str = "c") -> UplinkConfiguration:
    return UplinkConfiguration(remote_address=address, user_level=("Operator", "User"), certificate_id=cert)


def test_uplinks_persist_across_reopen_cfg_6(tmp_path: Path) -> None:
    """CFG-6: a stored configuration is there after the store is closed and opened again."""
    with DeviceStore(tmp_path) as store:
        assert store.put_uplink(_cfg("https://a.example/"), max_uplinks=4) is True
        assert store.put_uplink(_cfg("https://a.example/", "d"), max_uplinks=4) is False
    with DeviceStore(tmp_path) as store:
        assert store.list_uplinks() == [_cfg("https://a.example/", "d")]


def test_max_uplinks_checked_inside_the_transaction_cfg_3_cfg_6(tmp_path: Path) -> None:
    """CFG-3, CFG-6: a refused add leaves the store exactly as it was."""
    with DeviceStore(tmp_path) as store:
        store.put_uplink(_cfg("https://a.example/"), max_uplinks=1)
        before = store.generation()
        with pytest.raises(UplinkConfigError) as info:
            store.put_uplink(_cfg("https://b.example/"), max_uplinks=1)
        assert info.value.subcodes == ("Action", "MaxUplinks")
        assert store.generation() == before
        assert [c.remote_address for c in store.list_uplinks()] == ["https://a.example/"]


def test_a_reference_deleted_while_set_uplink_runs_is_not_stored_cfg_3_cfg_6(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CFG-3, CFG-6: SetUplink's references are checked again inside the store's transaction: a certificate
    deleted by another process between the first check and the write is CertificateID, and nothing dangles."""
    with DeviceStore(tmp_path) as store, DeviceStore(tmp_path) as other:
        store.put_certificate("c", b"CERT", b"KEY")
        context = UplinkServiceContext(store=store)
        real = store.put_uplink

        def late(*args: Any, **kwargs: Any) -> bool:
            other.delete_certificate("c")  # after validate() found it, before the write
            return real(*args, **kwargs)

        monkeypatch.setattr(store, "put_uplink", late)
        with pytest.raises(UplinkConfigError) as info:
            context.set_uplink(_cfg("https://a.example/"))
        assert info.value.subcodes == ("InvalidArgVal", "CertificateID")
        assert store.list_uplinks() == []


def test_generation_seen_by_another_connection_cfg_6(tmp_path: Path) -> None:
    """CFG-6: a change committed by one process is visible to another (the running server)."""
    with DeviceStore(tmp_path) as reader, DeviceStore(tmp_path) as writer:
        g = reader.generation()
        writer.put_user("u", "p", "User")
        assert reader.generation() == g + 1
        assert reader.get_user("u") == ("p", "User")


def test_keystore_policies_auth_servers_users_round_trip_cfg_6(tmp_path: Path) -> None:
    """CFG-6, UPL-11, UPL-13, UPL-14: every kind of stored material round-trips."""
    with DeviceStore(tmp_path) as store:
        store.put_certificate("c1", b"CERT", b"KEY")
        store.put_policy("p1", [b"A1", b"A2"])
        store.put_auth_server(AuthServerConfig(token="as", url="https://as.example/token", client_id="id",
                                               client_secret="s3cret"))
        store.put_user("admin", "pw", "Administrator")
    with DeviceStore(tmp_path) as store:
        assert store.get_certificate("c1") == (b"CERT", b"KEY")
        assert store.get_policy("p1") == [b"A1", b"A2"]
        assert store.get_policy("nope") is None
        assert store.get_auth_server("as").client_secret == "s3cret"
        assert store.list_users() == [("admin", "Administrator")]
        assert store.has_certificate("c1") and not store.has_certificate("c2")
        with pytest.raises(ConfigurationError, match="at least one trust anchor"):
            store.put_policy("empty", [])


def test_store_file_is_private_cfg_6(tmp_path: Path) -> None:
    """CFG-6: the store holds keys and passwords; its file is readable by the owner only."""
    with DeviceStore(tmp_path / "d") as store:
        assert (store.path.stat().st_mode & 0o077) == 0


def _raw(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob("device.db*"))


def test_secrets_are_sealed_at_rest_cfg_6(tmp_path: Path) -> None:
    """CFG-6: user passwords, camera passwords and a ClientSecret are kept, but not in the clear: the
    database files do not hold them, and they come back whole after a reopen."""
    with DeviceStore(tmp_path) as store:
        store.put_user("admin", "user-password-1", "Administrator")
        store.put_media_source(MediaSource(token="p0", name="cam", rtsp_url="rtsp://127.0.0.1:8554/cam",
                                           username="cam", password="camera-password-2"))
        store.put_auth_server(AuthServerConfig(token="as", url="https://as.example/token", client_id="id",
                                               client_secret="client-secret-3"))
    raw = _raw(tmp_path)
    for secret in (b"user-password-1", b"camera-password-2", b"client-secret-3"):
        assert secret not in raw
    with DeviceStore(tmp_path) as store:
        assert store.get_user("admin") == ("user-password-1", "Administrator")
        source = store.get_media_source("p0")
        assert source is not None and source.password == "camera-password-2"
        assert store.get_auth_server("as").client_secret == "client-secret-3"


def test_secrets_an_older_version_kept_in_the_clear_are_sealed_on_open_cfg_6(tmp_path: Path) -> None:
    """CFG-6: a store written before secrets were sealed keeps every value (nothing lost) and holds none of
    them in the clear once it has been opened."""
    DeviceStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    with db:
        db.execute("INSERT INTO users (name, password, level) VALUES ('old', 'old-password-1', 'User')")
        db.execute("INSERT INTO media_sources (token, name, rtsp_url, encoding, username, password)"
                   " VALUES ('p0', 'cam', 'rtsp://127.0.0.1:8554/cam', 'H264', 'cam', 'old-camera-2')")
        db.execute("INSERT INTO auth_servers (token, url, client_id, client_secret)"
                   " VALUES ('as', 'https://as.example/token', 'id', 'old-secret-3')")
    db.execute("VACUUM")
    db.close()
    assert b"old-password-1" in _raw(tmp_path)
    with DeviceStore(tmp_path) as store:
        assert store.get_user("old") == ("old-password-1", "User")
        source = store.get_media_source("p0")
        assert source is not None and source.password == "old-camera-2"
        assert store.get_auth_server("as").client_secret == "old-secret-3"
        raw = _raw(tmp_path)  # while the store is open (a running device): its write-ahead log too
    for secret in (b"old-password-1", b"old-camera-2", b"old-secret-3"):
        assert secret not in raw


def test_a_sealed_secret_moved_to_another_row_does_not_open_cfg_6(tmp_path: Path) -> None:
    """CFG-6: each sealed secret is bound to its row: copied onto another user it is refused, not used."""
    with DeviceStore(tmp_path) as store:
        store.put_user("admin", "admin-password", "Administrator")
        store.put_user("guest", "guest-password", "User")
    db = sqlite3.connect(tmp_path / DB_NAME)
    with db:
        db.execute("UPDATE users SET password = (SELECT password FROM users WHERE name = 'admin')"
                   " WHERE name = 'guest'")
    db.close()
    with DeviceStore(tmp_path) as store, pytest.raises(ConfigurationError, match="does not open"):
        store.get_user("guest")


def test_not_a_database_is_a_clear_error_cfg_6(tmp_path: Path) -> None:
    """CFG-6: a corrupt or foreign file is reported, not overwritten."""
    (tmp_path / "device.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigurationError, match="is not a usable device store"):
        DeviceStore(tmp_path)


def test_kill_9_mid_write_never_loses_an_acknowledged_set_cfg_6(tmp_path: Path) -> None:
    """CFG-6: a writer killed with SIGKILL at arbitrary points leaves a consistent store
    that holds every SetUplink it acknowledged (printed after commit).

    The writer cycles through 50 addresses, each SetUplink replacing one with a
    higher sequence number in CertificateID: an acknowledged write is lost if
    its address ever shows an older number."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    data = tmp_path / "data"
    next_index = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(data), str(next_index)],
                                stdout=subprocess.PIPE, text=True)
        acked: list[int] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= 20 + 15 * round_:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        with DeviceStore(data) as store:
            assert store.integrity_check() == "ok"
            seen = {c.remote_address: int(str(c.certificate_id)[1:]) for c in store.list_uplinks()}
        assert len(seen) == min(50, max(seen.values()) + 1)
        for i in acked:
            assert seen[f"https://cloud{i % 50}.example/"] >= i, f"acknowledged SetUplink {i} lost"
        next_index = max(seen.values()) + 1
