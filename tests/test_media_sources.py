"""STR-1, ANX-B-1: the device's media sources — validation, durable store, backend interface and the
``iec62676 device media`` commands (never printing a password)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import one_line_error, run

from iec62676_2_33.domain.media import MediaBackend, MediaSource, StoreMediaBackend, validate_media_source
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.store import DeviceStore

GOOD = MediaSource(token="main", name="Main stream", rtsp_url="rtsp://127.0.0.1:8554/cam",
                   snapshot_url="http://127.0.0.1:8080/snap.jpg", encoding="H264", width=1280, height=720,
                   username="admin", password="s3cret-pw")


def test_valid_source_is_returned_unchanged_and_password_stays_out_of_repr() -> None:
    """STR-1: a complete source validates as is; its repr never shows the camera password."""
    assert validate_media_source(GOOD) is GOOD
    assert validate_media_source(MediaSource(token="a", name="n", rtsp_url="rtsp://cam/x")).encoding == "H264"
    assert "s3cret-pw" not in repr(GOOD)


@pytest.mark.parametrize(("change", "needle"), [
    ({"token": ""}, "empty"),
    ({"token": "t" * 65}, "64"),
    ({"token": "a b"}, "whitespace"),
    ({"token": "a/b"}, "'/'"),
    ({"name": " "}, "name is empty"),
    ({"name": "n" * 65}, "64"),
    ({"rtsp_url": "http://127.0.0.1/cam"}, "rtsp://"),
    ({"rtsp_url": "rtsp:///cam"}, "no host"),
    ({"rtsp_url": "rtsp://u:p@127.0.0.1/cam"}, "user info"),
    ({"rtsp_url": "rtsp://127.0.0.1:99999/cam"}, "not a valid URL"),
    ({"rtsp_url": "rtsp://127.0.0.1/cam\n"}, "control character"),
    ({"snapshot_url": "ftp://127.0.0.1/x.jpg"}, "http:// or https://"),
    ({"encoding": "VP9"}, "VP9"),
    ({"width": 0}, "width"),
    ({"height": 100000}, "height"),
    ({"width": None}, "both or neither"),
    ({"username": "a:b"}, "':'"),
    ({"username": None}, "password needs a username"),
])
def test_every_bad_field_is_refused_with_a_message_naming_it(change: dict[str, object], needle: str) -> None:
    """STR-1: a bad token, name, URL, encoding, resolution or credential is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as info:
        validate_media_source(replace(GOOD, **change))  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert "s3cret-pw" not in str(info.value)


def test_store_round_trip_replace_delete_and_durability(tmp_path: Path) -> None:
    """STR-1: sources survive reopening the store; put replaces by token; delete reports what it did."""
    with DeviceStore(tmp_path) as store:
        assert store.put_media_source(GOOD) is True
        assert store.put_media_source(replace(GOOD, name="Renamed")) is False
        assert store.put_media_source(MediaSource(token="sub", name="Sub", rtsp_url="rtsp://127.0.0.1/sub")) is True
        with pytest.raises(ConfigurationError):
            store.put_media_source(replace(GOOD, token="bad", encoding="nope"))
    with DeviceStore(tmp_path) as store:
        assert store.get_media_source("main") == replace(GOOD, name="Renamed")
        assert store.get_media_source("main").password == "s3cret-pw"  # type: ignore[union-attr]
        assert [s.token for s in store.list_media_sources()] == ["main", "sub"]
        assert store.get_media_source("bad") is None
        assert store.delete_media_source("sub") is True
        assert store.delete_media_source("sub") is False
        assert [s.token for s in store.list_media_sources()] == ["main"]


def test_store_backend_implements_the_media_backend_protocol(tmp_path: Path) -> None:
    """STR-1: StoreMediaBackend serves what the store holds, through the MediaBackend interface."""
    with DeviceStore(tmp_path) as store:
        backend: MediaBackend = StoreMediaBackend(store)
        assert backend.media_sources() == []
        store.put_media_source(GOOD)
        assert backend.media_sources() == [GOOD]
        assert backend.media_source("main") == GOOD
        assert backend.media_source("other") is None


def test_cli_add_list_remove(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """STR-1: ``device media add/list/remove`` store what they say; list never prints the password."""
    data = str(tmp_path / "data")
    secret = tmp_path / "pw"
    secret.write_text("s3cret-pw\n")
    code, out, _ = run(capsys, "device", "media", "add", "--data", data, "--token", "main", "--name", "Main stream",
                       "--rtsp", "rtsp://127.0.0.1:8554/cam", "--snapshot", "http://127.0.0.1:8080/snap.jpg",
                       "--width", "1280", "--height", "720", "--rtsp-user", "admin",
                       "--rtsp-password-file", str(secret))
    assert (code, out.strip()) == (0, "media source main added (rtsp://127.0.0.1:8554/cam)")
    assert run(capsys, "device", "media", "add", "--data", data, "--token", "sub", "--name", "Sub",
               "--rtsp", "rtsp://127.0.0.1:8554/sub", "--encoding", "H265")[0] == 0
    with DeviceStore(data) as store:
        assert store.get_media_source("main") == GOOD
    code, out, _ = run(capsys, "device", "media", "list", "--data", data)
    assert code == 0 and "s3cret" not in out
    assert out.splitlines() == ["main\tMain stream\tH264\t1280x720\trtsp://127.0.0.1:8554/cam\tuser=admin",
                                "sub\tSub\tH265\t-\trtsp://127.0.0.1:8554/sub"]
    code, out, _ = run(capsys, "device", "media", "list", "--data", data, "--format", "json")
    assert code == 0 and "s3cret" not in out
    listed = json.loads(out)
    assert listed[0] == {"token": "main", "name": "Main stream", "rtsp": "rtsp://127.0.0.1:8554/cam",
                         "snapshot": "http://127.0.0.1:8080/snap.jpg", "encoding": "H264", "width": 1280,
                         "height": 720, "rtsp_user": "admin", "has_password": True}
    assert listed[1]["has_password"] is False
    code, out, _ = run(capsys, "device", "media", "remove", "--data", data, "--token", "sub")
    assert (code, out.strip()) == (0, "media source sub removed")
    with DeviceStore(data) as store:
        assert [s.token for s in store.list_media_sources()] == ["main"]


def test_cli_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """STR-1: bad URL, missing password file and unknown token give one error line and exit status 2."""
    data = str(tmp_path / "data")
    code, _, err = run(capsys, "device", "media", "add", "--data", data, "--token", "t", "--name", "n",
                       "--rtsp", "rtsp://admin:pw@127.0.0.1/cam")
    assert code == 2 and "user info" in one_line_error(err)
    assert "pw@" not in err
    code, _, err = run(capsys, "device", "media", "add", "--data", data, "--token", "t", "--name", "n",
                       "--rtsp", "rtsp://127.0.0.1/cam", "--rtsp-user", "u",
                       "--rtsp-password-file", str(tmp_path / "missing"))
    assert code == 2 and "missing" in one_line_error(err)
    code, _, err = run(capsys, "device", "media", "remove", "--data", data, "--token", "nope")
    assert code == 2 and "no media source" in one_line_error(err)
    with DeviceStore(data) as store:
        assert store.list_media_sources() == []
