"""UPL-16, EVT-3: how the device's service edge hands requests to the application (issue 8).

* :class:`~iec62676_2_33.runtime.lanes.LaneExecutor` runs a burst of jobs one
  after another, lets a job that waits (PullMessages) hold up the others only
  until its grace has passed, and never runs more than ``max_workers`` at once.
* :class:`~iec62676_2_33.runtime.wsgi_handler.WsgiHandler` costs one wake-up of
  the loop per request served in a worker (the last piece of the answer and
  the body-consumption report travel together), releases the body's budget
  before the answer goes out, and runs the requests the application declares
  quick on the loop itself -- only when their body is complete.

The speed these buy is measured by ``bench/bench_edge.py``; no test here
asserts a duration.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any

import pytest

from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime.body import BodyBudget, BodyPipe
from iec62676_2_33.runtime.exchange import Exchange, RawHeaders
from iec62676_2_33.runtime.lanes import LaneExecutor
from iec62676_2_33.runtime.wsgi_handler import WsgiHandler

TIMEOUT = 10.0


# --------------------------------------------------------------------------- LaneExecutor


class Concurrency:
    """Jobs that record how many of them ran at the same time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.threads: set[str] = set()

    def job(self, value: int) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.current_thread().name)
        total = sum(range(2000))  # a little computing, with the GIL
        with self.lock:
            self.now -= 1
        return value + total * 0


def test_a_burst_of_quick_jobs_runs_one_at_a_time_upl16() -> None:
    """UPL-16: 200 jobs submitted at once to a one-lane executor all complete with their results,
    never two at the same time, on at most two threads (the runner and the one watching the clock)."""
    pool = LaneExecutor(16, lanes=1, grace=TIMEOUT)
    seen = Concurrency()
    try:
        futures = [pool.submit(seen.job, i) for i in range(200)]
        assert [f.result(TIMEOUT) for f in futures] == list(range(200))
    finally:
        pool.shutdown(wait=True)
    assert seen.most == 1
    assert len(seen.threads) <= 2


def test_a_waiting_job_does_not_hold_up_the_others_evt3() -> None:
    """EVT-3: while one job waits (as a PullMessages does, up to its Timeout), a job submitted after it
    runs to its end: once the first has run longer than the grace it no longer counts."""
    pool = LaneExecutor(4, lanes=1, grace=0.01)
    release = threading.Event()
    try:
        waiting = pool.submit(release.wait, TIMEOUT)
        assert pool.submit(lambda: "answered").result(TIMEOUT) == "answered"
        assert not waiting.done()  # the first one still waits
        release.set()
        assert waiting.result(TIMEOUT) is True
    finally:
        release.set()
        pool.shutdown(wait=True)


def test_no_more_than_max_workers_jobs_run_upl16() -> None:
    """UPL-16: with max_workers waiting jobs running, the next job waits for a worker; it runs as
    soon as one is free."""
    pool = LaneExecutor(3, lanes=1, grace=0.001)
    releases = [threading.Event() for _ in range(3)]
    started = [threading.Event() for _ in range(3)]
    fourth = threading.Event()

    def wait_job(i: int) -> None:
        started[i].set()
        releases[i].wait(TIMEOUT)

    try:
        blockers = [pool.submit(wait_job, i) for i in range(3)]
        assert all(s.wait(TIMEOUT) for s in started)
        extra = pool.submit(fourth.set)
        assert not fourth.wait(0.3)  # all three workers are taken
        releases[1].set()
        extra.result(TIMEOUT)
        assert fourth.is_set()
    finally:
        for r in releases:
            r.set()
        pool.shutdown(wait=True)
    assert all(b.done() for b in blockers)


def test_failures_reach_the_future_and_shutdown_cancels_the_queue_upl16() -> None:
    """UPL-16: a job's exception is its future's; ``shutdown(cancel_futures=True)`` cancels what
    has not started, and no job is taken after shutdown."""
    pool = LaneExecutor(2, lanes=1, grace=TIMEOUT)
    release = threading.Event()
    first = pool.submit(release.wait, TIMEOUT)
    queued = pool.submit(lambda: "never")
    failing = LaneExecutor(1)
    try:
        with pytest.raises(ZeroDivisionError):
            failing.submit(lambda: 1 / 0).result(TIMEOUT)
    finally:
        failing.shutdown(wait=True)
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert first.result(TIMEOUT) is True
    with pytest.raises(CancelledError):
        queued.result(TIMEOUT)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    pool.shutdown(wait=True)


def test_lane_settings_are_checked() -> None:
    """Nonsensical sizes are refused."""
    for kwargs in ({"max_workers": 0}, {"max_workers": 2, "lanes": 3}, {"max_workers": 2, "grace": 0.0}):
        with pytest.raises(ConfigurationError):
            LaneExecutor(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- WsgiHandler


class RecordingExchange(Exchange):
    """An exchange whose response is recorded, with the body budget seen when the head went out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, body: bytes, *, path: str = "/x",
                 complete: bool = True, content_type: str | None = None) -> None:
        self.budget = BodyBudget(1 << 20)
        pipe = BodyPipe(loop, self.budget, length=len(body))
        pipe.feed(body)
        if complete:
            pipe.end()
        headers = [("host", "cam")] + ([("content-type", content_type)] if content_type else [])
        super().__init__(method="POST", path=path, query="", headers=headers, http_version="1.1",
                         scheme="http", client=("127.0.0.1", 1), server=("127.0.0.1", 80), body=pipe)
        self.sent: list[bytes] = []
        self.status = 0
        self.budget_at_head = -1

    async def _send_head(self, status: int, reason: bytes, headers: RawHeaders, body: bytes, end: bool) -> None:
        self.status = status
        self.budget_at_head = self.budget.used
        self.sent.append(body)

    async def _send_body(self, data: bytes, end: bool) -> None:
        self.sent.append(data)

    def abort(self) -> None:
        self.lose("aborted")


class EchoApp:
    """Reads the whole body, answers it reversed; records the thread it ran on."""

    def __init__(self, runs_inline: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.threads: list[int] = []
        if runs_inline is not None:
            self.runs_inline = runs_inline

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.threads.append(threading.get_ident())
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [data[::-1]]


def count_wakeups(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count ``call_soon_threadsafe`` on ``loop`` (each one wakes it from another thread)."""
    calls = [0]
    original = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    return calls


async def test_a_request_served_in_a_worker_wakes_the_loop_once_upl16() -> None:
    """UPL-16: a POST whose complete body the application reads whole costs one wake-up of the loop
    (answer and body report together); the body's budget is released before the answer goes out."""
    loop = asyncio.get_running_loop()
    app = EchoApp()
    with ThreadPoolExecutor(2) as pool:
        handler = WsgiHandler(app, executor=pool)
        await handler(RecordingExchange(loop, b"warm-up"))  # starts the worker thread
        wakeups = count_wakeups(loop)
        ex = RecordingExchange(loop, b"<soap/>" * 100)
        await asyncio.wait_for(handler(ex), TIMEOUT)
    assert ex.status == 200 and b"".join(ex.sent) == (b"<soap/>" * 100)[::-1]
    assert wakeups[0] == 1
    assert ex.budget_at_head == 0
    assert app.threads[-1] != threading.get_ident()


async def test_declared_quick_requests_run_on_the_loop_upl16() -> None:
    """UPL-16: a request the application's ``runs_inline`` accepts runs on the event loop's thread
    without any wake-up; the others, and a quick one whose body is not complete yet, run in a worker."""
    loop = asyncio.get_running_loop()
    app = EchoApp(runs_inline=lambda environ: environ["PATH_INFO"] == "/quick")
    with ThreadPoolExecutor(2) as pool:
        handler = WsgiHandler(app, executor=pool)
        wakeups = count_wakeups(loop)
        quick = RecordingExchange(loop, b"abc", path="/quick")
        await asyncio.wait_for(handler(quick), TIMEOUT)
        assert wakeups[0] == 0 and app.threads[-1] == threading.get_ident()
        assert quick.status == 200 and b"".join(quick.sent) == b"cba"

        other = RecordingExchange(loop, b"abc", path="/other")
        await asyncio.wait_for(handler(other), TIMEOUT)
        assert app.threads[-1] != threading.get_ident()

        unfinished = RecordingExchange(loop, b"ab", path="/quick", complete=False)
        task = asyncio.create_task(handler(unfinished))
        await asyncio.sleep(0)  # the handler has dispatched; its body is still incomplete
        unfinished.body.feed(b"c")
        unfinished.body.end()
        await asyncio.wait_for(task, TIMEOUT)
        assert app.threads[-1] != threading.get_ident()
        assert b"".join(unfinished.sent) == b"cba"


async def test_an_application_failure_is_answered_500_upl16(caplog: pytest.LogCaptureFixture) -> None:
    """UPL-16: an application that raises, in a worker or inline, gets 500 and its traceback logged."""
    loop = asyncio.get_running_loop()

    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("broken on purpose")

    with ThreadPoolExecutor(1) as pool:
        for inline in (None, lambda _environ: True):
            ex = RecordingExchange(loop, b"x")
            await asyncio.wait_for(WsgiHandler(broken, executor=pool, inline=inline)(ex), TIMEOUT)
            assert ex.status == 500
    assert caplog.text.count("the application failed on POST /x") == 2
