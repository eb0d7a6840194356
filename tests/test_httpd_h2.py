"""The library's own HTTP server over HTTP/2 (h2c with prior knowledge) on the device's direct port:
rapid reset is cut off as on the uplink while other clients are served, early answers stop the
upload, and stock load generators (h2load, --h1) see no failed request.

Frames are built by hand with hyperframe/hpack; every wait is bounded; durations are never asserted."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from h2.errors import ErrorCodes
from hpack import Decoder, Encoder
from httpd_env import (
    SampleApp,
    decode_headers,
    h2_open,
    h2_request,
    h2load_summary,
    in_thread,
    rapid_reset,
    read_frames,
    running_server,
    wsgi,
)
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame

from iec62676_2_33.namespaces import SOAP12_CONTENT_TYPE, SOAP_ENV, TUP
from iec62676_2_33.runtime.httpd import HttpSettings
from iec62676_2_33.sansio.penalty import PenaltyLimits
from iec62676_2_33.testing.harness import wait_until

CALM = ErrorCodes.ENHANCE_YOUR_CALM
HAVE_TOOLS = shutil.which("h2load") is not None and shutil.which("curl") is not None
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="h2load and curl are needed (.ci/run installs "
                                                         "nghttp2-client and curl)")


def test_rapid_reset_on_the_direct_port_is_cut_off_with_enhance_your_calm(caplog: pytest.LogCaptureFixture) -> None:
    """HEADERS+RST_STREAM pairs on the direct h2c port: the connection gets GOAWAY ENHANCE_YOUR_CALM
    after the role's reset budget (200 per 10 s, as on the uplink) and is closed; while more such
    connections flood, a legitimate client on its own connection is served; no traceback is logged.
    (The flooding source's penalty is made negligible here: every flood connection meets the role.)"""
    caplog.set_level(logging.DEBUG, logger="iec62676_2_33")
    app = SampleApp()
    with running_server(wsgi(app), HttpSettings(flood_penalty=PenaltyLimits(first=0.001, cap=0.001))) as srv:
        frames = rapid_reset(srv.port)
        goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert [g.error_code for g in goaways] == [CALM], frames[-3:]
        assert b"rapid reset" in goaways[0].additional_data

        stop = threading.Event()
        outcomes: list[list[int]] = []

        def flood() -> None:
            while not stop.is_set() and len(outcomes) < 300:
                outcomes.append([f.error_code for f in rapid_reset(srv.port) if isinstance(f, GoAwayFrame)])

        flooders = [in_thread(flood) for _ in range(3)]
        wait_until(lambda: len(outcomes) >= 3, what="the flood to start")
        served = []
        for i in range(10):
            done = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", " %{http_code}",
                                   "--data-binary", f"legit {i}", f"http://127.0.0.1:{srv.port}/echo"],
                                  capture_output=True, text=True, timeout=30, check=False)
            served.append(done.stdout.rsplit(" ", 1)[-1])
        flooding = all(thread.is_alive() for thread, _ in flooders)
        stop.set()
        for thread, result in flooders:
            thread.join(30)
            assert not thread.is_alive() and result == [None]
    assert served == ["200"] * 10 and flooding  # served while the flood went on
    assert outcomes and all(codes in ([CALM], []) for codes in outcomes), outcomes
    assert [CALM] in outcomes
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def test_a_source_cut_off_for_flooding_is_refused_while_others_are_served(
        caplog: pytest.LogCaptureFixture) -> None:
    """After its rapid-reset connection got GOAWAY ENHANCE_YOUR_CALM, the flooding source's next
    connections are refused before any HTTP/2 work (no frame at all) for the penalty time; another
    source is served meanwhile; one INFO line names the cut-off, nothing is logged above INFO."""
    caplog.set_level(logging.DEBUG, logger="iec62676_2_33")
    with running_server(wsgi(SampleApp()), HttpSettings(flood_penalty=PenaltyLimits(first=60, cap=60))) as srv:
        first = [f.error_code for f in rapid_reset(srv.port) if isinstance(f, GoAwayFrame)]
        assert first == [CALM]
        wait_until(lambda: srv.server.stats["flooded"] == 1, what="the flood to be counted")
        assert [rapid_reset(srv.port) for _ in range(5)] == [[]] * 5
        assert srv.server.stats["penalized"] == 5
        sock = h2_open(srv.port)  # 127.0.0.1: another source
        encoder, decoder = Encoder(), Decoder()
        sock.sendall(h2_request(1, encoder, "/status/204").serialize())
        frames = read_frames(sock, lambda fs: any(isinstance(f, HeadersFrame) for f in fs))
        sock.close()
        assert decode_headers(next(f for f in frames if isinstance(f, HeadersFrame)), decoder)[":status"] == "204"
    assert len([m for m in caplog.messages if "cut off for flooding" in m]) == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno > logging.INFO]


def test_an_early_http2_answer_is_followed_by_rst_stream_no_error() -> None:
    """The app answers without reading the body: the client gets the complete response (END_STREAM),
    then RST_STREAM NO_ERROR (RFC 9113 §8.1); later DATA is dropped, the connection lives on."""
    app = SampleApp()
    with running_server(wsgi(app)) as srv:
        sock = h2_open(srv.port)
        encoder, decoder = Encoder(), Decoder()
        sock.sendall(h2_request(1, encoder, "/early", "POST", end_stream=False).serialize()
                     + DataFrame(1, b"x" * 16384).serialize())

        def answered(frames: list) -> bool:  # type: ignore[type-arg]
            return any(isinstance(f, RstStreamFrame) for f in frames)

        frames = read_frames(sock, answered)
        on_stream = [f for f in frames if getattr(f, "stream_id", 0) == 1]
        kinds = [type(f).__name__ for f in on_stream]
        assert kinds[0] == "HeadersFrame" and kinds[-1] == "RstStreamFrame", kinds
        assert decode_headers(on_stream[0], decoder)[":status"] == "413"
        data = b"".join(f.data for f in on_stream if isinstance(f, DataFrame))
        assert data == b"not reading that\n"
        ended = [f for f in on_stream if "END_STREAM" in f.flags]
        assert ended and on_stream.index(ended[0]) < len(on_stream) - 1  # END_STREAM before the reset
        assert on_stream[-1].error_code == ErrorCodes.NO_ERROR
        # More DATA for the reset stream is dropped; a new request on the same connection works.
        sock.sendall(DataFrame(1, b"y" * 16384).serialize() + h2_request(3, encoder, "/status/204").serialize())
        frames = read_frames(sock, lambda fs: any(isinstance(f, HeadersFrame) and f.stream_id == 3 for f in fs))
        head = next(f for f in frames if isinstance(f, HeadersFrame) and f.stream_id == 3)
        assert decode_headers(head, decoder)[":status"] == "204"
        sock.close()
        assert srv.server.budget.used == 0


GET_CAPABILITIES = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_ENV}" xmlns:tup="{TUP}">'
    "<s:Body><tup:GetServiceCapabilities/></s:Body></s:Envelope>").encode()


@needs_tools
@pytest.mark.parametrize("protocol", ["h2c", "h1"])
def test_h2load_against_the_devices_direct_port_counts_no_failure_UPL_16(device, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                         protocol: str) -> None:
    """UPL-16 (many concurrent streams): h2load POSTs 200 GetServiceCapabilities calls to the device's
    direct port over 4 connections, with 8 streams each over HTTP/2 and with ``--h1``: all 200
    succeed, none failed (every status line has its reason phrase)."""
    soap = tmp_path / "caps.xml"
    soap.write_bytes(GET_CAPABILITIES)
    args = ["h2load", "-n", "200", "-c", "4", "-d", str(soap), "-H",
            f'content-type: {SOAP12_CONTENT_TYPE}; action="{TUP}/GetServiceCapabilities"']
    args += ["--h1"] if protocol == "h1" else ["-m", "8"]
    done = subprocess.run([*args, device.url], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = h2load_summary(done.stdout)
    assert summary["succeeded"] == summary["done"] == 200, done.stdout
    assert summary["failed"] == summary["errored"] == summary["timeout"] == 0, done.stdout
    assert "200 2xx" in done.stdout, done.stdout
