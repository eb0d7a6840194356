"""Layer 4 (cloud cluster): one device-port assignment per device for the whole cluster, in NATS.

On one node the device ports (``cloud serve --device-ports``) are kept in a file
(:class:`~..runtime.device_ports.AssignmentsFile`). In a cluster every node opens
every device's port (:mod:`.node_ports`), so every node must give a device the same
port, and a port must never pass to another device on any node. The assignments
are kept in a JetStream key-value bucket instead (``iec62676-device-ports``, file
storage, no TTL: an assignment outlives every node).

Theory of operation
-------------------
* **One create-only key per port.** ``port.<N>`` holds the id of the device port N
  belongs to. A node assigns by ``create`` (write only if the key does not exist): the
  first node wins, the others get a conflict, read the key and learn the owner. A port
  therefore names exactly one device in the cluster, and a key is never overwritten:
  only the operator deletes it (:func:`release_cluster_ports`).
* **Same rules everywhere.** Each node mirrors the bucket (a watcher) into a
  :class:`~..sansio.port_table.PortTable`, which derives a new id's candidate port (home
  port, else the next free one) exactly as on one node: two nodes assigning one device
  at once pick the same candidate; a node whose mirror lags picks a port that is taken,
  gets the conflict, and moves on. Bounded: the table holds at most the range
  (:data:`~..sansio.port_table.MAX_PORTS`), a value at most :data:`MAX_ID` bytes.
* **One range.** The key ``range`` holds ``START-END``, created by the first node;
  a node started with another ``--device-ports`` refuses to start (one line), since
  the same id would derive another port.
* **Release.** ``iec62676 cloud ports release --nats URL --device ID`` deletes the
  device's key(s); it refuses while the cluster registry lists the device (its port is
  open and a client may be using it: stop or disconnect the device first). Every node
  sees the delete through its watcher and closes the device's listener
  (:attr:`ClusterPortAssignments.on_released`); the port may then go to another id.
* **Failures.** NATS unreachable: a device already assigned keeps its port (the
  mirror), a new one waits for its port until NATS answers (:mod:`.node_ports` retries).
  When the connection comes back (:meth:`ClusterPortAssignments.reopen`) the watcher
  starts again; a bucket that is gone (NATS restarted with an empty store) is created
  again and every node writes the assignments of its mirror back, create-only, so no
  port changes hands. Assignments no node had seen are lost with the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.errors import Error as JsError
from nats.js.kv import KeyValue

from ..errors import ConfigurationError, TransportError
from ..sansio.port_table import PortTable

log = logging.getLogger(__name__)

__all__ = ["MAX_ID", "NATS_ERRORS", "PORTS_BUCKET", "ClusterPortAssignments", "open_ports_bucket", "release_cluster_ports"]

#: JetStream key-value bucket: ``port.<N>`` -> device id; ``range`` -> ``START-END``.
PORTS_BUCKET = "iec62676-device-ports"
#: Longest device id given a port (bytes of UTF-8; a longer value in the bucket is ignored).
MAX_ID = 4096
_RANGE_KEY = "range"
_PREFIX = "port."
#: Create attempts for one device before its assignment is retried later (each conflict teaches the mirror).
_TRIES = 8
#: Seconds to wait for the bucket's initial state.
_SYNC = 10.0
#: What a NATS call that failed raises.
NATS_ERRORS = (NatsError, JsError, asyncio.TimeoutError)


def _port_key(port: int) -> str:
    return f"{_PREFIX}{port}"


def _port_of(key: str) -> int | None:
    """The port of a key written as :func:`_port_key` writes it, else None: ``port.040003`` is not port
    40003, so a second key can never name a port another key already gives to a device."""
    number = key[len(_PREFIX):]
    if not (key.startswith(_PREFIX) and number.isascii() and number.isdigit()) or number != str(int(number)):
        return None
    return int(number)


def _text(ports: range) -> str:
    return f"{ports.start}-{ports.stop - 1}"


async def open_ports_bucket(nc: NatsClient) -> KeyValue:
    """The assignments bucket, created when missing (idempotent)."""
    js = nc.jetstream(timeout=5.0)
    try:
        return await js.key_value(PORTS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(bucket=PORTS_BUCKET, history=1, storage=StorageType.FILE))


class ClusterPortAssignments:
    """The cluster's device-port assignments as this node sees them (module docstring): made by
    :meth:`open`, closed by :meth:`aclose`."""

    def __init__(self, nc: NatsClient, kv: KeyValue, ports: range) -> None:
        self.nc = nc
        self.kv = kv
        #: The mirror of the bucket (read it; the watcher writes it).
        self.table = PortTable(ports)
        #: Called with (device id, port) when an assignment is deleted (the operator released it).
        self.on_released: Callable[[str, int], None] = lambda _d, _p: None
        self._synced = asyncio.Event()
        self._watcher: Any = None
        self._watching: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, nc: NatsClient, ports: range) -> ClusterPortAssignments:
        """Join the bucket with ``ports`` (refused in one line when the cluster uses another range)."""
        try:
            kv = await open_ports_bucket(nc)
            agreed = await _agree(kv, ports)
        except NATS_ERRORS as exc:
            raise ConfigurationError(f"--device-ports: the cluster's assignments bucket {PORTS_BUCKET} cannot be "
                                     f"read ({exc or type(exc).__name__})") from None
        if agreed != _text(ports).encode():
            raise ConfigurationError(f"--device-ports {_text(ports)}: the cluster uses "
                                     f"{agreed.decode('utf-8', 'replace')[:40]} (every node needs the same range)")
        self = cls(nc, kv, ports)
        try:
            await self._start_watcher()
        except (*NATS_ERRORS, TimeoutError) as exc:
            await self.aclose()
            raise ConfigurationError(f"--device-ports: the bucket {PORTS_BUCKET} did not answer "
                                     f"({exc or type(exc).__name__})") from None
        return self

    async def reopen(self) -> None:
        """The NATS connection came back: watch again; a lost bucket is created and refilled from the mirror
        (module docstring). NATS errors pass through (the caller tries again)."""
        try:
            self.kv = await self.nc.jetstream(timeout=5.0).key_value(PORTS_BUCKET)
        except BucketNotFoundError:
            self.kv = await open_ports_bucket(self.nc)
            await _agree(self.kv, self.table.ports)
            for device_id, port in self.table.assignments().items():
                with contextlib.suppress(KeyWrongLastSequenceError):
                    await self.kv.create(_port_key(port), device_id.encode("utf-8"))
            log.info("device ports: the assignments bucket was gone; %d assignments written back",
                     len(self.table.assignments()))
        await self._start_watcher()

    async def _start_watcher(self) -> None:
        """A new watcher on the bucket; returns once it delivered the bucket's state (bounded)."""
        await self.aclose()
        self._synced.clear()
        self._watcher = await self.kv.watchall()
        self._watching = asyncio.create_task(self._watch(self._watcher))
        async with asyncio.timeout(_SYNC):
            await self._synced.wait()

    async def aclose(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
            self._watching = None
        if self._watcher is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._watcher.stop()
            self._watcher = None

    async def _watch(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:  # the initial state is in
                self._synced.set()
                continue
            port = _port_of(entry.key)
            if port is None or port not in self.table.ports:
                continue
            if entry.operation is not None or entry.value is None:  # deleted: released by the operator
                device_id = self.table.forget(port)
                if device_id is not None:
                    self.on_released(device_id, port)
            elif len(entry.value) <= MAX_ID:
                with contextlib.suppress(UnicodeDecodeError):
                    self._learn(entry.value.decode("utf-8"), port)

    def _learn(self, device_id: str, port: int) -> None:
        """The bucket says ``port`` is ``device_id``'s (a port that changed hands: its delete was missed)."""
        before = self.table.owner(port)
        self.table.record(device_id, port)
        if before is not None and before != device_id:
            self.on_released(before, port)

    async def assign(self, device_id: str) -> int | None:
        """The device's port in the cluster: the one it has, else the first node to create the key of
        its candidate port wins (module docstring); ``None`` when every port is another id's (or the id
        is longer than :data:`MAX_ID`).

        Raises :class:`~..errors.TransportError` when NATS does not answer or the bucket keeps changing."""
        if len(device_id.encode("utf-8")) > MAX_ID:
            return None
        for _ in range(_TRIES):
            port = self.table.candidate(device_id)
            if port is None or self.table.port(device_id) == port:
                return port
            try:
                try:
                    await self.kv.create(_port_key(port), device_id.encode("utf-8"))
                except KeyWrongLastSequenceError:  # taken meanwhile: learn by whom, then try again
                    with contextlib.suppress(NotFoundError):
                        owner = (await self.kv.get(_port_key(port))).value
                        if owner is not None and len(owner) <= MAX_ID:
                            with contextlib.suppress(UnicodeDecodeError):  # as the watcher: strict
                                self._learn(owner.decode("utf-8"), port)
                    continue
            except NATS_ERRORS as exc:
                raise TransportError(f"the assignments bucket did not answer ({exc or type(exc).__name__})") \
                    from None
            self._learn(device_id, port)
        port = self.table.port(device_id)
        if port is None:
            raise TransportError("the assignments bucket kept changing")
        return port


async def _agree(kv: KeyValue, ports: range) -> bytes:
    """The cluster's range: ``ports`` if this node is the first, else the one the first node wrote."""
    with contextlib.suppress(KeyWrongLastSequenceError):
        await kv.create(_RANGE_KEY, _text(ports).encode())
    return (await kv.get(_RANGE_KEY)).value or b""


async def release_cluster_ports(nc: NatsClient, device_id: str) -> list[int]:
    """``iec62676 cloud ports release --nats``: delete the device's assignments (module docstring)."""
    from .registry import _all_values, read_registry

    if any(record.id == device_id for record in await read_registry(nc)):
        raise ConfigurationError(f"device {device_id} is connected to the cluster: its port is in use "
                                 "(disconnect the device first)")
    kv = await open_ports_bucket(nc)
    ports = sorted(port for key, value in (await _all_values(kv)).items()
                   if (port := _port_of(key)) is not None and value == device_id.encode("utf-8"))
    if not ports:
        raise ConfigurationError(f"device {device_id} has no port in the cluster")
    for port in ports:
        await kv.delete(_port_key(port))
    return ports
