"""Robustness: the answers that HTTP/2 clients leave waiting on a server's direct port share one budget.

Clients that open no stream window keep their answers in the server's HTTP/2 roles; past
``HttpSettings.answer_budget`` a new request stream on a connection holding its share of the budget
is refused (RST_STREAM REFUSED_STREAM) without running the application, while a connection holding
nothing is served; once the waiting answers drain or their connections end the budget is given back.
Frames are built by hand; every wait is bounded; durations are never asserted."""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from h2.errors import ErrorCodes
from hpack import Encoder
from httpd_env import h2_open, h2_request, read_frames, running_server
from hyperframe.frame import DataFrame, Frame, HeadersFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame

from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.http2.role import PREFACE
from iec62676_2_33.runtime.exchange import Exchange, Handler
from iec62676_2_33.runtime.httpd import HttpSettings
from iec62676_2_33.testing.harness import wait_until

KIB = 1024
ANSWER = 40 * KIB


def big_answers(calls: list[str]) -> Callable[[ThreadPoolExecutor], Handler]:
    """A handler that answers every request with ``ANSWER`` bytes and records its path."""

    async def handler(ex: Exchange) -> None:
        calls.append(ex.path)
        await ex.respond(200, [("content-type", "application/octet-stream")], b"x" * ANSWER)

    return lambda pool: handler


def shut_window_client(port: int) -> socket.socket:
    """An HTTP/2 connection whose streams open with a window of 0 bytes: answers wait in the server."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
    sock.settimeout(10.0)
    sock.sendall(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize())
    read_frames(sock, until=lambda frames: any(isinstance(f, SettingsFrame) and "ACK" not in f.flags
                                               for f in frames))
    sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
    return sock


def frames_of(sock: socket.socket, stream_id: int, done: Callable[[list[Frame]], bool]) -> list[Frame]:
    frames = read_frames(sock, until=lambda fs: done([f for f in fs if f.stream_id == stream_id]))
    return [f for f in frames if f.stream_id == stream_id]


def answered(frames: list[Frame]) -> bool:
    return any(isinstance(f, (DataFrame, HeadersFrame)) and "END_STREAM" in f.flags for f in frames)


def refused(frames: list[Frame]) -> bool:
    return any(isinstance(f, RstStreamFrame) for f in frames)


def test_while_waiting_answers_fill_the_budget_their_connections_are_refused_and_others_served() -> None:
    calls: list[str] = []
    settings = HttpSettings(answer_budget=100 * KIB, max_connections=4)  # a share of 25 KiB a connection
    with running_server(big_answers(calls), settings) as srv:
        answers = srv.server.answers
        first, second = shut_window_client(srv.port), shut_window_client(srv.port)
        encoder_1, encoder_2 = Encoder(), Encoder()
        first.sendall(h2_request(1, encoder_1, "/hold-1").serialize() + h2_request(3, encoder_1, "/hold-2").serialize())
        wait_until(lambda: answers.used >= 2 * ANSWER, timeout=10.0)
        second.sendall(h2_request(1, encoder_2, "/hold-3").serialize())
        wait_until(lambda: answers.used >= 3 * ANSWER, timeout=10.0)
        assert not answers.has_room

        # The connections holding the budget: a further request is refused before the application runs.
        for sock, encoder, stream_id in ((first, encoder_1, 5), (second, encoder_2, 3)):
            sock.sendall(h2_request(stream_id, encoder, "/refused").serialize())
            frames = frames_of(sock, stream_id, lambda fs: refused(fs) or answered(fs))
            assert [f.error_code for f in frames if isinstance(f, RstStreamFrame)] == [ErrorCodes.REFUSED_STREAM]
        assert "/refused" not in calls

        # A client that holds nothing is served meanwhile.
        other, encoder = h2_open(srv.port), Encoder()
        other.sendall(h2_request(1, encoder, "/served-while-spent").serialize())
        frames = frames_of(other, 1, lambda fs: refused(fs) or answered(fs))
        assert not refused(frames)
        assert sum(len(f.data) for f in frames if isinstance(f, DataFrame)) == ANSWER
        assert answers.peak < 4 * ANSWER + KIB  # the three waiting answers, the one served, their heads

        # One waiting client reads its answers, the other goes away: the budget is given back.
        first.sendall(WindowUpdateFrame(0, window_increment=2 * ANSWER).serialize()
                      + WindowUpdateFrame(1, window_increment=ANSWER).serialize()
                      + WindowUpdateFrame(3, window_increment=ANSWER).serialize())
        got = read_frames(first, until=lambda fs: sum(len(f.data) for f in fs if isinstance(f, DataFrame)) >= 2 * ANSWER)
        assert sum(len(f.data) for f in got if isinstance(f, DataFrame)) == 2 * ANSWER
        second.close()
        wait_until(lambda: answers.used == 0, timeout=10.0)

        other.sendall(WindowUpdateFrame(0, window_increment=ANSWER).serialize()  # what its first answer took
                      + h2_request(3, encoder, "/served").serialize())
        frames = frames_of(other, 3, lambda fs: refused(fs) or answered(fs))
        assert not refused(frames)
        assert sum(len(f.data) for f in frames if isinstance(f, DataFrame)) == ANSWER
        assert calls == ["/hold-1", "/hold-2", "/hold-3", "/served-while-spent", "/served"]
        for sock in (first, other):
            sock.close()


def test_the_answer_budget_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="answer_budget"):
        HttpSettings(answer_budget=0)
