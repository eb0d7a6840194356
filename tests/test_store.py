"""CFG-6: the device store survives restarts and kill -9; nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.store import AuthServerConfig, DeviceStore
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
