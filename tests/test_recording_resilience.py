"""ANX-B-3, ANX-B-1: recordings and snapshots stay served when a part of them fails or is slow, on real loopback.

* ANX-B-3: the replay RTSP server (GStreamer's, in its subprocess) killed with SIGKILL is started again by the
  device's :class:`~iec62676_2_33.runtime.replay_server.ReplayServer` on the same port, so the replay URI
  handed out before plays again; each restart is one log line, and closing the server ends the last process.
* ANX-B-3: while the recording store probes a new file with ffprobe, other searches are answered at once from
  the last whole index (they waited for the probe under the store's lock); the new file is probed once; the
  cache of probed durations forgets a file removed from its folder.
* ANX-B-1: the snapshot relay's deadline covers the camera's status line and headers: a camera that trickles
  its head one byte at a time gets 504 and its connection cut within the deadline, not after the whole head;
  HTTP Digest to the camera still works inside that one bounded exchange.

Real parts: the replay server on an MP4 file made by ffmpeg, raw RTSP players with read timeouts; ffprobe run
through a wrapper script on PATH that holds a probe until the test releases it (bounded); camera HTTP servers
on loopback sockets started here; every wait bounded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from recording_env import T0, make_video, stamp
from test_attack_recording import serves
from test_media2_snapshot import wsgi_get

from iec62676_2_33.domain.media import MediaSource, StoreMediaBackend
from iec62676_2_33.domain.recordings import IndexedRecordingStore, RecordingConfig, RecordingFile
from iec62676_2_33.runtime import replay_server
from iec62676_2_33.runtime.recording_files import FolderRecordingStore, save_recording_configs
from iec62676_2_33.runtime.replay_server import ReplayServer, replay_available
from iec62676_2_33.security.middleware import ENVIRON_UPLINK_LEVEL
from iec62676_2_33.services.snapshot import SnapshotRelay
from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import wait_until

WAIT = 10.0

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe are not installed (Debian package ffmpeg, .ci/run)")


# -- the replay server's subprocess is supervised -------------------------------------------------------

@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MP4 file of 4 s starting at T0."""
    if not (replay_available() and shutil.which("ffmpeg")):
        pytest.skip("GStreamer's RTSP server or ffmpeg is not installed (.ci/run installs them)")
    folder = tmp_path_factory.mktemp("resilient-replay")
    make_video(folder / f"cam_{stamp(T0)}.mp4", 4)
    return folder


def test_a_killed_replay_server_is_started_again_on_its_port_anx_b_3(
        footage: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ANX-B-3: after a SIGKILL of the subprocess (twice), the URI handed out before plays again; one warning
    line per restart; close() ends the last process."""
    [video] = footage.glob("*.mp4")
    store = IndexedRecordingStore([(RecordingConfig(token="rec-a", source_token="main", folder=str(footage)),
                                    [RecordingFile(path=str(video), start=T0, duration=4.0)])])
    with caplog.at_level(logging.WARNING, logger=replay_server.__name__), ReplayServer(store) as server:
        uri = server.base + "/rec-a"
        assert serves(uri)
        for _ in range(2):
            killed = server._process
            os.kill(killed.pid, signal.SIGKILL)
            wait_until(lambda killed=killed: killed.poll() is not None, timeout=WAIT, what="the process gone")
            assert wait_until(lambda: serves(uri), timeout=30.0, interval=0.5, what="replay served again")
            assert server._process is not killed and server.base + "/rec-a" == uri
        last = server._process
    restarts = [r.getMessage() for r in caplog.records if "starting it again" in r.getMessage()]
    assert len(restarts) == 2 and all(f"port {uri.split(':')[2].split('/')[0]}" in line for line in restarts), restarts
    assert last.poll() is not None


# -- the recording store probes outside its lock and forgets removed files -------------------------------

@pytest.fixture
def gated_ffprobe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """ffprobe on PATH through a wrapper that logs each file it is given to ``<dir>/log`` and, while
    ``<dir>/gate`` exists, waits (at most about 60 s) for ``<dir>/release`` before it runs; yields ``<dir>``."""
    real = shutil.which("ffprobe")
    if real is None or shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg/ffprobe are not installed (Debian package ffmpeg, .ci/run)")
    folder = tmp_path / "bin"
    folder.mkdir()
    wrapper = folder / "ffprobe"
    wrapper.write_text(f'''#!/bin/sh
for last in "$@"; do :; done
echo "$last" >> "{folder}/log"
i=0
if [ -e "{folder}/gate" ]; then
  while [ ! -e "{folder}/release" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
fi
exec "{real}" "$@"
''')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        yield folder
    finally:
        (folder / "release").touch()


def probed(gate: Path) -> list[str]:
    log = gate / "log"
    return log.read_text().splitlines() if log.exists() else []


def folder_store(tmp_path: Path) -> tuple[FolderRecordingStore, Path]:
    """A store of one recording whose folder holds one 2 s MP4 file at T0."""
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / f"cam_{stamp(T0)}.mp4", 2)
    data = tmp_path / "device"
    save_recording_configs(data, [RecordingConfig(token="rec", source_token="main", folder=str(videos))])
    return FolderRecordingStore(data), videos


def file_count(store: FolderRecordingStore) -> int:
    return sum(len(r.files) for r in store.recordings())


@needs_ffmpeg
def test_searches_are_answered_while_a_new_file_is_probed_anx_b_3(tmp_path: Path, gated_ffprobe: Path) -> None:
    """ANX-B-3: a search during a held probe gets the last whole index at once (one file), not a half-built
    one and not after the probe; the new file is probed once although three searches asked."""
    store, videos = folder_store(tmp_path)
    assert file_count(store) == 1
    (gated_ffprobe / "gate").touch()
    new = videos / f"cam_{stamp(T0 + 10)}.mp4"
    shutil.copyfile(next(videos.glob("*.mp4")), new)
    counts: list[int] = []
    builder = threading.Thread(target=lambda: counts.append(file_count(store)), daemon=True)
    builder.start()
    wait_until(lambda: str(new) in probed(gated_ffprobe), timeout=WAIT, what="the new file's probe")
    answers: list[int] = []
    searchers = [threading.Thread(target=lambda: answers.append(file_count(store)), daemon=True) for _ in range(2)]
    for searcher in searchers:
        searcher.start()
    for searcher in searchers:
        searcher.join(WAIT)
    held = builder.is_alive()
    (gated_ffprobe / "release").touch()
    builder.join(WAIT * 3)
    assert answers == [1, 1], "the searches waited for the probe"
    assert held, "the probe ended before the searches were answered"
    assert counts == [2] and file_count(store) == 2
    assert probed(gated_ffprobe).count(str(new)) == 1


@needs_ffmpeg
def test_the_probe_cache_holds_only_the_files_there_anx_b_3(tmp_path: Path, gated_ffprobe: Path) -> None:
    """ANX-B-3: a file removed from the folder leaves the cache of durations; a file still there is not
    probed again."""
    store, videos = folder_store(tmp_path)
    [first] = videos.glob("*.mp4")
    second = videos / f"cam_{stamp(T0 + 10)}.mp4"
    shutil.copyfile(first, second)
    assert file_count(store) == 2
    first.unlink()
    assert file_count(store) == 1
    assert [key[0] for key in store._probed] == [str(second)]
    assert probed(gated_ffprobe).count(str(second)) == 1


# -- the snapshot relay's deadline covers the camera's head ------------------------------------------------

class RawCamera:
    """A camera HTTP server on a loopback socket: each connection's request is read, then ``answer(conn,
    request)`` writes whatever it likes; ``cut`` is set when a write fails (the relay closed the connection)."""

    def __init__(self, answer: object) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.answer = answer
        self.cut = threading.Event()
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(WAIT)
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    more = conn.recv(4096)
                    if not more:
                        return
                    data += more
                self.requests.append(data)
                self.answer(conn, data)  # type: ignore[operator]
            except OSError:
                self.cut.set()

    def close(self) -> None:
        self.listener.close()


def relay_for(data: Path, camera: RawCamera, **source: str) -> tuple[SnapshotRelay, DeviceStore]:
    """A relay (1 s deadline, 5 s per read) of media source ``main``, the camera's ``/snap.jpg``."""
    store = DeviceStore(data)
    store.put_media_source(MediaSource(token="main", name="Main", rtsp_url="rtsp://127.0.0.1:8554/cam",
                                       snapshot_url=camera.base + "/snap.jpg", **source))
    return SnapshotRelay(StoreMediaBackend(store), None, timeout=5.0, deadline=1.0), store


def test_a_camera_trickling_its_head_is_cut_at_the_deadline_anx_b_1(tmp_path: Path) -> None:
    """ANX-B-1: the head comes one byte every 0.25 s (each read well within ``timeout``, the whole head in
    about 25 s); the relay answers 504 while the head is still coming, and the camera finds the connection
    closed."""
    head_sent = threading.Event()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"p" * 60
            + b"\r\nContent-Length: 2\r\n\r\n")

    def trickle(conn: socket.socket, _request: bytes) -> None:
        for byte in head:
            conn.sendall(bytes([byte]))
            if camera.cut.wait(0.25):
                return
        head_sent.set()
        conn.sendall(b"\xff\xd8")

    camera = RawCamera(trickle)
    relay, store = relay_for(tmp_path / "d", camera)
    try:
        status, body = wsgi_get(relay, "/onvif/snapshot/main", **{ENVIRON_UPLINK_LEVEL: ["User"]})
        still_coming = not head_sent.is_set()
        assert status.startswith("504"), (status, body)
        assert still_coming, "the relay waited for the whole head"
        assert camera.base.encode() not in body and body.count(b"\n") == 1
        assert wait_until(camera.cut.is_set, timeout=WAIT, what="the camera's connection closed")
    finally:
        camera.cut.set()
        camera.close()
        store.close()


def test_digest_to_the_camera_inside_the_bounded_exchange_anx_b_1(tmp_path: Path) -> None:
    """ANX-B-1: a camera that challenges with HTTP Digest gets the source's credentials as Digest (never in
    the clear) and its JPEG is relayed."""
    realm, nonce = "cam", "abc123"

    def digest(conn: socket.socket, request: bytes) -> None:
        header = next((line for line in request.decode().split("\r\n") if line.lower().startswith("authorization:")),
                      "")
        if not header:
            conn.sendall(f'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm="{realm}", nonce="{nonce}", '
                         'qop="auth"\r\nContent-Length: 0\r\n\r\n'.encode())
            return
        fields = dict(part.strip().split("=", 1) for part in header.split(":", 1)[1].strip()[len("Digest "):]
                      .split(","))
        values = {k: v.strip('"') for k, v in fields.items()}
        ha1 = hashlib.md5(f"cam-user:{realm}:cam-pw".encode()).hexdigest()
        ha2 = hashlib.md5(f"GET:{values['uri']}".encode()).hexdigest()
        expected = hashlib.md5(f"{ha1}:{nonce}:{values['nc']}:{values['cnonce']}:auth:{ha2}".encode()).hexdigest()
        ok = values.get("response") == expected and values.get("username") == "cam-user"
        body = b"\xff\xd8jpeg" if ok else b""
        status = "200 OK" if ok else "403 Forbidden"
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                     + body)

    camera = RawCamera(digest)
    relay, store = relay_for(tmp_path / "d", camera, username="cam-user", password="cam-pw")
    try:
        status, body = wsgi_get(relay, "/onvif/snapshot/main", **{ENVIRON_UPLINK_LEVEL: ["User"]})
        assert (status, body) == ("200 OK", b"\xff\xd8jpeg")
        assert len(camera.requests) == 2 and b"cam-pw" not in b"".join(camera.requests)
    finally:
        camera.close()
        store.close()


def test_the_relay_keeps_its_budget_and_its_statuses_anx_b_1(tmp_path: Path) -> None:
    """ANX-B-1: a body past ``max_bytes`` is 502 (the rest is not read), a camera that closes without an
    answer is 502; no error names the camera."""

    def flood(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n")
        for _ in range(64):
            conn.sendall(b"\xff" * 65536)

    for n, answer in enumerate((flood, lambda conn, _request: None)):
        camera = RawCamera(answer)
        relay, store = relay_for(tmp_path / str(n), camera)
        relay.max_bytes = 1 << 20
        try:
            status, body = wsgi_get(relay, "/onvif/snapshot/main", **{ENVIRON_UPLINK_LEVEL: ["User"]})
            assert status.startswith("502"), (n, status, body)
            assert camera.base.encode() not in body and body.count(b"\n") == 1
        finally:
            camera.close()
            store.close()
