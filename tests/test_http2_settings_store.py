"""UPL-15: the roles keep h2's SETTINGS values in lists, and negotiate exactly as before.

Our connections hold each setting's values in a small list instead of h2's deque
(``http2/role.py``, ``_compact_settings``: the measured reason is there). These
tests pin both paths of that guarded change: with h2's structure as expected,
every setting of both ends -- the initial ones, the ones the peer names first,
later changes -- lives in a list and the negotiated values are h2's; with any
other structure the object is left exactly as it was.
"""

from __future__ import annotations

from collections import deque

import h2.config
import h2.connection
from h2.settings import SettingCodes, Settings

from iec62676_2_33.http2 import H2ClientRole, H2ServerRole
from iec62676_2_33.http2.limits import H2Limits
from iec62676_2_33.http2.role import RemoteSettingsChanged, _compact_settings, _SettingValues

NOW = 10.0


def _stores(settings: Settings) -> list[type]:
    return [type(values) for values in settings._settings.values()]


def _all_compact(role: H2ClientRole | H2ServerRole) -> bool:
    conn = role._conn
    return all(t is _SettingValues for t in _stores(conn.local_settings) + _stores(conn.remote_settings))


def test_settings_negotiated_between_the_roles_live_in_lists_upl_15() -> None:
    """UPL-15: after both ends exchanged and acknowledged SETTINGS, every setting of both roles
    is held in a list, and each end sees the other's advertised values."""
    limits = H2Limits(max_concurrent_streams=7, max_header_list_size=12345)
    client, server = H2ClientRole(now=NOW, limits=limits), H2ServerRole(now=NOW)
    client.initiate()
    server.initiate()
    server.receive_data(client.data_to_send(), NOW)
    events = client.receive_data(server.data_to_send(), NOW)
    server.receive_data(client.data_to_send(), NOW)  # the client's ACK of the server's SETTINGS
    assert any(isinstance(e, RemoteSettingsChanged) for e in events)
    assert _all_compact(client) and _all_compact(server)
    remote = server._conn.remote_settings
    assert remote.max_concurrent_streams == 7
    assert remote.max_header_list_size == 12345
    assert client._conn.remote_settings.max_concurrent_streams == server.limits.max_concurrent_streams


def test_a_later_settings_change_from_a_plain_h2_peer_applies_upl_15() -> None:
    """UPL-15: a peer (plain h2) that changes a setting later and names a new one: our role reports
    the change, applies it, acknowledges it, and still holds every value in a list."""
    role = H2ClientRole(now=NOW)
    role.initiate()
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    peer.initiate_connection()
    peer.receive_data(role.data_to_send())
    role.receive_data(peer.data_to_send(), NOW)
    peer.receive_data(role.data_to_send())
    peer.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000, SettingCodes.MAX_HEADER_LIST_SIZE: 4096})
    events = role.receive_data(peer.data_to_send(), NOW)
    changed = [dict(e.changed) for e in events if isinstance(e, RemoteSettingsChanged)]
    assert changed == [{SettingCodes.INITIAL_WINDOW_SIZE: 1000, SettingCodes.MAX_HEADER_LIST_SIZE: 4096}]
    remote = role._conn.remote_settings
    assert remote.initial_window_size == 1000 and remote.max_header_list_size == 4096
    assert _all_compact(role)
    acked = peer.receive_data(role.data_to_send())
    assert any(type(e).__name__ == "SettingsAcknowledged" for e in acked)
    assert peer.local_settings.initial_window_size == 1000


def test_compaction_keeps_pending_values_and_their_order() -> None:
    """A setting with an unacknowledged value keeps it: the list holds the same values as the deque."""
    settings = Settings(client=True)
    settings[SettingCodes.MAX_FRAME_SIZE] = 32768
    _compact_settings(settings)
    assert list(settings._settings[SettingCodes.MAX_FRAME_SIZE]) == [16384, 32768]
    assert settings.max_frame_size == 16384
    changed = settings.acknowledge()
    assert changed[SettingCodes.MAX_FRAME_SIZE].new_value == 32768
    assert settings.max_frame_size == 32768


def test_an_unexpected_settings_structure_is_left_alone() -> None:
    """When h2 keeps its settings some other way, nothing is changed (and nothing fails)."""

    class NoTable:
        pass

    plain = NoTable()
    _compact_settings(plain)  # type: ignore[arg-type]
    assert vars(plain) == {}

    settings = Settings(client=True)
    other = {SettingCodes.MAX_FRAME_SIZE: 16384, SettingCodes.ENABLE_PUSH: [1]}
    settings._settings = other  # type: ignore[assignment]
    _compact_settings(settings)
    assert settings._settings is other
    assert other == {SettingCodes.MAX_FRAME_SIZE: 16384, SettingCodes.ENABLE_PUSH: [1]}
    assert type(other[SettingCodes.ENABLE_PUSH]) is list

    frozen = Settings(client=True)
    frozen._settings = tuple(frozen._settings.items())  # type: ignore[assignment]
    before = frozen._settings
    _compact_settings(frozen)
    assert frozen._settings is before
    assert all(type(values) is deque for _, values in before)  # type: ignore[attr-defined]
