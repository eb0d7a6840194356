"""Layer 4: the device's uplink agent — every configured uplink kept up, in parallel
(UPL-1 … UPL-3, UPL-7 … UPL-13, UPL-16, CFG-2).

One task per stored configuration runs the sans-IO :class:`UplinkSupervisor`
(Offline → Connecting → Connected, individual ascending backoff seeded by the
device's own salt and the RemoteAddress, UPL-9). A connected uplink serves the
device's WSGI app as the HTTP/2 server with the configured UserLevel (UPL-12),
PINGs when idle and closes after 30 s of silence (UPL-7, UPL-8).

Live reconfiguration: the uplink service calls :meth:`UplinkAgent.changed`
after every SetUplink/DeleteUplink; changes written by another process (the
CLI) are noticed through the store's generation within a second. New entries
connect, deleted ones drop, changed ones reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from ..errors import Iec62676Error
from ..http2.limits import DEFAULT_LIMITS, H2Limits
from ..http2.server import H2ServerRole
from ..sansio.backoff import ReconnectBackoff
from ..sansio.link import LinkMonitor, UplinkSupervisor
from ..store import DeviceStore
from ..uplinkconfig import OFFLINE, UplinkConfiguration
from .dial import Dialer, DialResult, UplinkRefused, dial_uplink
from .h2driver import H2Driver
from .wsgi_bridge import WsgiApp, WsgiOnH2

log = logging.getLogger(__name__)


#: How often the agent looks for changes made by another process.
POLL_INTERVAL = 1.0


@dataclass
class AgentSettings:
    """Timers and limits of the device side (defaults follow UPL-7, UPL-8)."""

    idle_ping_after: float = 10.0
    dead_after: float = 30.0
    stable_after: float = 30.0
    limits: H2Limits = DEFAULT_LIMITS
    #: The reconnection intervals (UPL-9): first one in [min, max), doubling up to the cap.
    backoff_first: tuple[float, float] = (1.0, 4.0)
    backoff_cap: float = 30.0


class _Link:
    """One configuration's supervisor, task and live connection."""

    def __init__(self, agent: UplinkAgent, cfg: UplinkConfiguration) -> None:
        self.agent = agent
        self.cfg = cfg
        loop = asyncio.get_running_loop()
        settings = agent.settings
        backoff = ReconnectBackoff(f"{agent.store.device_salt()} {cfg.remote_address}", cap=settings.backoff_cap,
                                   first_min=settings.backoff_first[0], first_max=settings.backoff_first[1])
        self.supervisor = UplinkSupervisor(backoff, loop.time(), stable_after=settings.stable_after)
        self.driver: H2Driver | None = None
        self.task = asyncio.create_task(self._maintain(), name=f"uplink {cfg.remote_address}")

    async def stop(self) -> None:
        self.supervisor.stop()
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - already logged by _maintain; stopping must not fail
            log.debug("uplink %s stopped after an error", self.cfg.remote_address)

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        sup = self.supervisor
        while not sup.stopped:
            if not sup.should_connect(loop.time()):
                deadline = sup.next_deadline()
                await asyncio.sleep(max(0.0, (deadline or loop.time() + 1.0) - loop.time()))
                continue
            try:
                result = await self._dial()
            except (Iec62676Error, OSError) as exc:
                sup.connect_failed(loop.time(), _describe(exc))
                log.info("uplink %s: %s; next attempt in %.1f s", self.cfg.remote_address, sup.error,
                         sup.last_delay or 0.0)
                continue
            except Exception as exc:  # a bug must not stop this uplink, nor the others
                log.exception("uplink %s: unexpected failure while connecting", self.cfg.remote_address)
                sup.connect_failed(loop.time(), f"internal error: {_describe(exc)}")
                continue
            sup.connected(loop.time())
            log.info("uplink %s connected", self.cfg.remote_address)
            try:
                reason = await self._serve(result)
            except Exception as exc:  # as above: keep the uplink alive, say what happened
                log.exception("uplink %s: unexpected failure while serving", self.cfg.remote_address)
                reason = f"internal error: {_describe(exc)}"
            sup.disconnected(loop.time(), reason)
            log.info("uplink %s closed: %s", self.cfg.remote_address, reason)

    async def _dial(self) -> DialResult:
        """Dial with the hook's authorization headers; a 401 refetches the token once (UPL-14)."""
        agent = self.agent
        headers = await agent.auth_headers(self.cfg)
        try:
            return await agent.dial(agent.store, self.cfg, headers)
        except UplinkRefused as exc:
            if exc.status != 401 or not headers or agent.auth_refresh is None:
                raise
            log.info("uplink %s: 401 at the upgrade; fetching a new access token once",
                     self.cfg.remote_address)
            headers = await agent.auth_refresh(self.cfg)
            return await agent.dial(agent.store, self.cfg, headers)

    async def _serve(self, result: DialResult) -> str:
        loop = asyncio.get_running_loop()
        settings = self.agent.settings
        role = H2ServerRole(now=loop.time(), limits=settings.limits)
        monitor = LinkMonitor(loop.time(), idle_ping_after=settings.idle_ping_after, dead_after=settings.dead_after)
        bridge: WsgiOnH2

        def kick() -> None:
            if self.driver is not None:
                self.driver.kick()

        bridge = WsgiOnH2(role, self.agent.app, executor=self.agent.executor, user_level=self.cfg.user_level,
                          peer=result.peer, kick=kick)
        self.driver = H2Driver(result.stream, role, bridge.on_event, monitor=monitor,
                               name=f"uplink {self.cfg.remote_address}", on_progress=bridge.writable)
        try:
            return await self.driver.run(result.trailing)
        finally:
            bridge.cancel()
            self.driver = None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


async def _no_auth_headers(_cfg: UplinkConfiguration) -> list[tuple[str, str]]:
    return []


class UplinkAgent:
    """Keeps every stored uplink configuration connected (UPL-10)."""

    def __init__(self, store: DeviceStore, app: WsgiApp, *, executor: Executor | None = None,
                 settings: AgentSettings | None = None, dial: Dialer = dial_uplink,
                 auth_headers: Callable[[UplinkConfiguration], Awaitable[list[tuple[str, str]]]] = _no_auth_headers,
                 auth_refresh: Callable[[UplinkConfiguration], Awaitable[list[tuple[str, str]]]] | None = None,
                 ) -> None:
        self.store = store
        self.app = app
        self.executor = executor
        self.settings = settings or AgentSettings()
        self.dial = dial
        self.auth_headers = auth_headers
        #: Called once after a 401 at the upgrade: fresh headers (a new access token), UPL-14.
        self.auth_refresh = auth_refresh
        self._links: dict[str, _Link] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # -- the uplink service's hooks (called from worker threads) --------------
    def status(self, remote_address: str) -> tuple[str, str | None]:
        """CFG-2: the live Status and Error of one configuration."""
        link = self._links.get(remote_address)
        if link is None:
            return OFFLINE, None
        return link.supervisor.status, link.supervisor.error

    def changed(self) -> None:
        """A configuration was set or deleted: reconcile now."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- running ---------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        seen = -1
        try:
            while not stop.is_set():
                generation = await self._loop.run_in_executor(self.executor, self.store.generation)
                if generation != seen or self._wake.is_set():
                    self._wake.clear()
                    seen = generation
                    await self.reconcile()
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                try:
                    await asyncio.wait(waiters, timeout=POLL_INTERVAL, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            await asyncio.gather(*(link.stop() for link in self._links.values()))
            self._links.clear()

    async def reconcile(self) -> None:
        """Start, stop or restart links so they match the store."""
        assert self._loop is not None
        wanted = {cfg.remote_address: cfg for cfg in
                  await self._loop.run_in_executor(self.executor, self.store.list_uplinks)}
        for address, link in list(self._links.items()):
            if wanted.get(address) != link.cfg:
                del self._links[address]
                await link.stop()
        for address, cfg in wanted.items():
            if address not in self._links:
                self._links[address] = _Link(self, cfg)
