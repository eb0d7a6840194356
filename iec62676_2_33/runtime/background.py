"""Layer 4: run an asyncio service in a background thread (demo, tests, benchmarks).

The service coroutine gets an :class:`asyncio.Event` to stop on; ``start()``
returns once the service has announced itself ``ready_after`` times (bounded wait), ``stop()``
sets the event and joins the thread (bounded wait).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..errors import Iec62676Error

Service = Callable[[asyncio.Event, Callable[[str], None]], Awaitable[Any]]

if TYPE_CHECKING:
    from typing import Self


class BackgroundService:
    """One asyncio service in its own thread and loop."""

    def __init__(self, service: Service, *, name: str = "service", ready_after: int = 1) -> None:
        self._service = service
        self._name = name
        self._ready_after = ready_after
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.messages: list[str] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _announce(self, text: str) -> None:
        self.messages.append(text)
        if len(self.messages) >= self._ready_after:
            self._ready.set()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self._service(self._stop, self._announce)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 15.0) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise Iec62676Error(f"{self._name} did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The service's event loop (for ``run_coroutine_threadsafe`` and the sync zeep transport)."""
        if self._loop is None:
            raise Iec62676Error(f"{self._name} is not running")
        return self._loop

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 15.0) -> Any:
        """Run a coroutine on the service's loop from another thread (bounded wait)."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise Iec62676Error(f"{self._name} did not stop within {timeout} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
