"""Layer 4: a thread pool that runs few jobs at once unless they wait (issue 8: the service edge).

:class:`LaneExecutor` is a :class:`concurrent.futures.Executor` with up to
``max_workers`` threads, but it lets at most ``lanes`` jobs *run* at a time:
further jobs queue. A job that has been running for longer than ``grace``
seconds no longer counts -- it is presumably waiting (for events, the disk,
the network: PullMessages waits up to its timeout, a push delivery for its
consumer) -- and the next queued job starts beside it. So waiting jobs never
hold up the others for more than ``grace``, and at most ``max_workers`` run.

Theory of operation
-------------------
The device's jobs are Python (Spyne, lxml, SQLite calls) and hold the GIL
while they compute. Running sixteen of them at once gains nothing -- one
runs, fifteen wait for the GIL -- but every hand-over of the GIL between
threads on different CPUs costs a cross-CPU wake-up and cold caches: with 64
workers, 16 HTTP/2 streams of GetServiceCapabilities took about 1,100 us of
CPU each, with one worker thread about 750 us, pinned to one CPU 520 us
(docs/benchmarks.md "Service edge"). Here a worker that finishes a job takes
the next queued one at once, without sleeping and without waking another
thread, so a burst of requests runs as one batch on one thread.

Workers wait on one condition. Whenever jobs queue, :meth:`LaneExecutor._ensure_taker`
makes sure somebody will take the next one in time: one idle worker is woken
(or a thread started, up to ``max_workers``) when a lane is free, or when no
worker waits with a timeout for the oldest counted job to pass ``grace`` --
unless a woken or new worker is about to look at the queue anyway (it calls
``_ensure_taker`` again when it took a job, so a burst wakes one worker at a
time, not a herd). Otherwise nobody is woken: the running worker takes the
job when it is done.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from ..errors import ConfigurationError

__all__ = ["LaneExecutor"]

P = ParamSpec("P")
T = TypeVar("T")

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class LaneExecutor(Executor):
    """At most ``lanes`` jobs run at once, plus those running longer than ``grace`` s (see the module)."""

    def __init__(self, max_workers: int, *, lanes: int = 1, grace: float = 0.01,
                 thread_name_prefix: str = "lane") -> None:
        if max_workers < 1 or not 1 <= lanes <= max_workers or not grace > 0:
            raise ConfigurationError(f"LaneExecutor needs 1 <= lanes ({lanes}) <= max_workers ({max_workers}) "
                                     f"and grace > 0 ({grace})")
        self.max_workers = max_workers
        self.lanes = lanes
        self.grace = grace
        self._prefix = thread_name_prefix
        self._cv = threading.Condition(threading.Lock())
        self._queue: deque[_Job] = deque()
        self._started: dict[int, float] = {}  # running job -> when it started (time.monotonic)
        self._ids = itertools.count()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # workers waiting on the condition
        self._timed = 0  # of them, waiting with a timeout (for a running job to pass grace)
        self._starting = 0  # threads started that have not looked at the queue yet
        self._waking = 0  # workers notified that have not looked at the queue yet
        self._shutdown = False

    # ------------------------------------------------------------------ Executor

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._cv:
            if self._shutdown:
                raise RuntimeError("cannot schedule new jobs after shutdown")
            self._queue.append((future, fn, args, kwargs))
            self._ensure_taker(time.monotonic())
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._cv.notify_all()
        if wait:
            for thread in list(self._threads):
                thread.join()

    # ------------------------------------------------------------------ scheduling (lock held)

    def _counted(self, now: float) -> list[float]:
        """When the running jobs that still count against the lanes started."""
        horizon = now - self.grace
        return [started for started in self._started.values() if started > horizon]

    def _ensure_taker(self, now: float) -> None:
        """Queued jobs: wake (or start) one worker if one may start now or none watches the clock --
        unless a worker is about to look at the queue anyway (it calls this again after taking)."""
        if not self._queue or self._starting or self._waking:
            return
        if len(self._counted(now)) >= self.lanes and self._timed:
            return
        if self._idle:  # it takes the job, or becomes the worker that watches the clock
            self._waking += 1
            self._cv.notify()
        elif len(self._threads) < self.max_workers:
            self._starting += 1
            thread = threading.Thread(target=self._work, name=f"{self._prefix}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next(self) -> tuple[int, _Job] | None:
        """Wait for a job this worker may start; ``None``: shut down and nothing queued."""
        while True:
            timeout: float | None = None
            if self._queue:
                now = time.monotonic()
                counted = self._counted(now)
                if len(counted) < self.lanes:
                    job_id = next(self._ids)
                    self._started[job_id] = now
                    job = self._queue.popleft()
                    self._ensure_taker(now)
                    return job_id, job
                timeout = min(counted) + self.grace - now  # then the oldest one stops counting
            elif self._shutdown:
                return None
            self._idle += 1
            self._timed += timeout is not None
            try:
                self._cv.wait(timeout)
            finally:
                self._idle -= 1
                self._timed -= timeout is not None
                self._waking -= self._waking > 0

    # ------------------------------------------------------------------ workers

    def _work(self) -> None:
        with self._cv:
            self._starting -= 1
            taken = self._next()
        while taken is not None:
            job_id, (future, fn, args, kwargs) = taken
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - the job's outcome, for its future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs  # an idle worker keeps nothing of its last job alive
            with self._cv:
                del self._started[job_id]
                taken = self._next()  # the next queued job at once, without sleeping
