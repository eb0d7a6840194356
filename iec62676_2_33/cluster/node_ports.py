"""Layer 4 (cloud cluster): every node opens the port of every device of the cluster (UPL-16).

A VMS configured with ``host:port`` for a device may reach any node (through the
balancer, or a node it picked): so each node listens on the port of every device
the cluster registry lists, not only of those whose uplink it holds. A request on
the port names its device (:meth:`~..runtime.device_ports.DevicePorts.device_at`) and
the proxy (:mod:`..runtime.proxy`) sends it on as it sends ``/devices/<id>/`` paths:
over the local uplink, or through :class:`~.router.NodeRouter` to the node holding it.
The device sees the address the client used (``X-Forwarded-Host`` from the first
node), so every XAddr it returns is on the same port of the same node.

Theory of operation
-------------------
:class:`ClusterDevicePorts` is the single node's :class:`~..runtime.device_ports.DevicePorts`
(listeners, linger, budgets), with these differences:

* **Which devices.** Those connected here (the listener's events, at once), those the
  registry announces (:meth:`~.registry.ClusterRegistry.events`, at once) and, every
  :data:`POLL` seconds, those its mirror lists (:meth:`~.registry.ClusterRegistry.devices`:
  events are best effort). A device neither here nor listed by a live node is gone:
  its listener lingers as on one node, then closes. One look over 30,000 listed devices
  took about 10 ms here (1 % of a core at one look a second).
* **NATS back.** The connection came back (NATS restarted): the assignments watcher
  starts again and a lost bucket is refilled (:meth:`~.port_assignments.ClusterPortAssignments.reopen`).
* **Which port.** :class:`~.port_assignments.ClusterPortAssignments` (one assignment
  per device for the cluster, in NATS). An assignment may cost a round trip, so ports
  are assigned by one task, one device at a time in arrival order (a device appears
  once in the queue). A device is queued for a new port only while it is connected here
  or a live node lists it: an announcement alone (anyone who may publish on
  ``iec62676.device.*`` can announce any id) opens the port of a device that has one and
  assigns none, since an assignment is kept for good; the next look at the mirror queues
  an announced device once its claim is listed. So the queue holds at most the devices
  the cluster lists and those with a port (the range). A device that got no port (the
  range is full, or its port is held by another program) is not tried again until it
  connects again or a port is released; NATS not answering keeps it queued, retried
  every second.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import TransportError
from ..runtime.asgi_handler import AsgiApp
from ..runtime.cloud import CloudListener
from ..runtime.device_ports import DevicePorts
from .port_assignments import NATS_ERRORS as _NATS_ERRORS
from .port_assignments import ClusterPortAssignments
from .registry import ClusterRegistry

log = logging.getLogger(__name__)

__all__ = ["POLL", "ClusterDevicePorts"]

#: Seconds between two looks at the registry's mirror.
POLL = 1.0
#: Seconds one assignment may take (a few NATS round trips).
_ASSIGN_TIMEOUT = 10.0


class ClusterDevicePorts(DevicePorts):
    """Device ports of one node of a cluster (module docstring); :meth:`aclose` at the end."""

    def __init__(self, cloud: CloudListener, app: AsgiApp, host: str, assignments: ClusterPortAssignments,
                 registry: ClusterRegistry) -> None:
        self.assignments = assignments
        self.registry = registry
        self._queue: dict[str, None] = {}  # devices waiting for their port, in order
        self._wake = asyncio.Event()
        self._refused: set[str] = set()  # got no port: not tried again until they connect again
        super().__init__(cloud, app, host, assignments.table, None)
        assignments.on_released = self._released
        self._tasks = [asyncio.create_task(self._assigner()), asyncio.create_task(self._follow()),
                       asyncio.create_task(self._announced())]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().aclose()
        await self.assignments.aclose()

    def _connected(self, device_id: str) -> None:
        """The device connected (here or at another node): its port opens, or stays open."""
        self._refused.discard(device_id)
        self._want(device_id)

    def _want(self, device_id: str) -> None:
        if not self._stay(device_id) and device_id not in self._refused and device_id not in self._queue \
                and (self.table.port(device_id) is not None or self._present(device_id)):
            self._queue[device_id] = None
            self._wake.set()

    def _present(self, device_id: str) -> bool:
        return super()._present(device_id) or self.registry.locate(device_id) is not None

    def _released(self, device_id: str, port: int) -> None:
        """The operator freed ``port`` (the device's): its listener closes; devices without a port try again."""
        if self.port_of(device_id) == port:
            self._close(device_id)
        self._refused.clear()

    async def _announced(self) -> None:
        async for kind, record in self.registry.events():
            if kind == "connected":
                self._connected(record.id)

    async def _follow(self) -> None:
        reconnects = self.assignments.nc.stats["reconnects"]
        while True:
            if self.assignments.nc.stats["reconnects"] != reconnects:
                try:
                    await self.assignments.reopen()
                    reconnects = self.assignments.nc.stats["reconnects"]
                except (*_NATS_ERRORS, TimeoutError) as exc:  # JetStream not up yet: next time round
                    log.info("device ports: the assignments bucket is not back yet (%s)", exc or type(exc).__name__)
            listed = {d.device_id for d in self.cloud.devices()} | {r.id for r in self.registry.devices()}
            for device_id in listed:
                self._want(device_id)
            for device_id in [d for d in self._open if d not in listed]:
                self._linger(device_id)
            self._refused &= listed
            await asyncio.sleep(POLL)

    async def _assigner(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                device_id = next(iter(self._queue))
                try:
                    async with asyncio.timeout(_ASSIGN_TIMEOUT):
                        port = await self.assignments.assign(device_id)
                except (TransportError, TimeoutError) as exc:
                    log.info("device %s: no port yet: %s; retrying", device_id, exc or "timeout")
                    await asyncio.sleep(1.0)
                    continue
                del self._queue[device_id]
                if device_id in self._open:
                    continue
                if port is None:
                    self._no_port(device_id)
                else:
                    self._listen(device_id, port)
                if device_id not in self._open:
                    self._refused.add(device_id)
                elif not self._present(device_id):  # gone again meanwhile: linger as on one node
                    self._linger(device_id)
