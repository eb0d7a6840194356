"""Layer 4 (cloud cluster): the device registry of a cluster of cloud nodes, in NATS
JetStream key-value buckets (UPL-16: a VMS reaches every device through any node).

Theory of operation
-------------------
Two buckets (:mod:`.records`):

* ``iec62676-nodes`` — one key per node, its :class:`~.records.NodeRecord`, in a bucket
  whose entries live ``ttl`` seconds; each node rewrites its key every ``ttl / 3``. A
  node is *live* while its key exists: a node killed with ``kill -9`` drops out within
  ``ttl`` seconds, with no one to tell.
* ``iec62676-devices`` — one key per device, the :class:`~.records.DeviceRecord` of the
  node holding its uplink. Records of nodes that are not live are not shown
  (:meth:`ClusterRegistry.devices`) and are deleted by the live nodes (each delete is a
  compare-and-set on the record's revision, so a device that was claimed again in
  between is left alone).

Every change to a device entry is a compare-and-set on the KV revision (JetStream's
``create`` / ``update(last=revision)`` / ``delete(last=revision)``), so the key names
exactly one node at any moment. The node follows three rules:

1. **A new connection takes over** (the device is at this node now): the entry is
   written over whatever it held, with the revision just read; a conflict means another
   write came in between, and the node reads again.
2. **The last claim wins.** A node that sees (through its watcher on the bucket) that
   another node claimed a device after its own claim closes its own, older uplink of
   that device: the device reconnected elsewhere, the old connection is stale.

3. **A live uplink stays listed.** A node whose heartbeat lapsed (a stalled process, a
   busy event loop) is swept by the others, entries and all; when its watcher sees its
   own entry of a device it still holds deleted, it claims the device again (without
   taking over: a claim another node made meanwhile wins).

A device that moves from node A to node B is therefore never claimed by both: B's
write replaces A's in one step, and A's later clean-up (``delete(last=A's revision)``)
fails harmlessly.

Claims are pipelined. A change marks the device *dirty* (an ordered set: per device
coalesced to the latest wanted state); one worker task starts a claim for the first
dirty devices that have none in flight, at most ``in_flight`` (:data:`IN_FLIGHT`) at
once. A device leaves the dirty set when its claim starts and a change meanwhile marks
it again, so its next claim starts only after the one in flight has ended and acts on
the latest state: a connect and a disconnect of the same device are never reordered,
and none is lost. One claim at a time cost a node a round trip per device, and a round
trip is several turns of a busy event loop (a node running the TLS handshakes of
arriving uplinks): ``bench/bench_cluster_registry.py`` measured 42-87 claims/s for
three nodes whose loop was busy in 5-10 ms slices, the lag growing with every device
(138 s for the last of 6,000 at 1,000 connects/s); 64 in flight kept up with those
1,000 connects/s, 0.17 s at most (docs/benchmarks.md). A claim NATS
fails (or that kept conflicting) marks its device again and pauses new claims briefly.
A node learns its own claim's revision only when the write returns; a newer claim of
another node that its watcher saw before then is checked at that point (rule 2 is not missed).

After NATS restarts (or the connection comes back), each node *resyncs*: the claims in
flight are cancelled (their devices stay dirty), buckets are created if they are gone, the watcher restarts, and every local device is claimed again
without taking over (rule 1 is for new connections only): an entry already held by
another live node makes this node yield. The registry so rebuilds from the live
connections.

Each node keeps a mirror of both buckets in memory (the watcher's view; about 200 bytes
a device), so listing the devices and finding a device's node cost no round trip, and a
claim is one: written by compare-and-set on the revision the mirror last saw (a stale
mirror costs a conflict, then a read). The sweep of dead nodes' entries deletes
``in_flight`` at a time and ends after ``ttl / 3``, so a long sweep never delays the
node's own heartbeat (the rest is swept on the next beat, on fresh liveness).

Connect and disconnect events go out on ``iec62676.device.*`` from one publisher task in
the order they happened (at most :data:`MAX_EVENTS` waiting; beyond, they are counted in
``events_dropped`` and logged, never buffered without end).

A record that does not decode (:class:`~.records.RecordError`: anyone who can write to
the buckets can write anything), or that names another device or node than its key (a
device record under another device's key would close that device's uplink by rule 2, or
list it twice), is skipped with one log line naming its key and fault,
never its text: the watcher goes on with the next entry (a device entry whose record is
bad counts as removed, so rule 3 applies), a bad node record is not a live node and the
heartbeat goes on, and a claim overwrites a bad device record by compare-and-set on its
revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import Error as JsError
from nats.js.kv import KeyValue

from .records import DEVICES_BUCKET, EVENTS_SUBJECT, NODES_BUCKET, DeviceRecord, NodeRecord, RecordError, device_key

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TTL", "IN_FLIGHT", "ClusterRegistry", "open_buckets", "read_registry"]

#: Seconds a node's heartbeat lives: a killed node's devices disappear within this.
DEFAULT_TTL = 15.0
#: Device events waiting to be published at most (each about 200 bytes); beyond, an event is counted and dropped.
MAX_EVENTS = 65_536
#: Compare-and-set attempts on one device before the change is retried later.
_CAS_TRIES = 5
#: Claims a node keeps in flight at once (each of a different device): see the module docstring.
IN_FLIGHT = 64
_NATS_ERRORS = (NatsError, JsError, asyncio.TimeoutError)
#: Seconds to wait for cancelled tasks, per try, and the tries (see :func:`_cancel`).
_CANCEL_WAIT, _CANCEL_TRIES = 1.0, 5
#: JetStream's "wrong last sequence" codes: nats-py maps them for ``update``, not for ``delete(last=...)``.
_WRONG_LAST = (10071, 10164)


async def open_buckets(nc: NatsClient, ttl: float = DEFAULT_TTL) -> tuple[KeyValue, KeyValue]:
    """The (devices, nodes) buckets, created when missing (idempotent)."""
    js = nc.jetstream(timeout=5.0)
    buckets = []
    for name, bucket_ttl in ((DEVICES_BUCKET, None), (NODES_BUCKET, ttl)):
        try:
            buckets.append(await js.key_value(name))
        except BucketNotFoundError:
            buckets.append(await js.create_key_value(KeyValueConfig(
                bucket=name, history=1, ttl=bucket_ttl, storage=StorageType.FILE)))
    return buckets[0], buckets[1]


def _device(key: str, value: bytes) -> DeviceRecord:
    """The device record of a key of the devices bucket (:class:`RecordError`: not one, or another device's)."""
    record = DeviceRecord.decode(value)
    if device_key(record.id) != key:
        raise RecordError("device record: its id is not the device of its key")
    return record


def _node(key: str, value: bytes) -> NodeRecord:
    """The node record of a key of the nodes bucket (:class:`RecordError`: not one, or another node's)."""
    record = NodeRecord.decode(value)
    if record.node != key:
        raise RecordError("node record: its node is not its key")
    return record


async def read_registry(nc: NatsClient) -> list[DeviceRecord]:
    """The cluster's devices held by live nodes, read once (``iec62676 cloud devices --nats``)."""
    devices, nodes = await open_buckets(nc)
    live: set[str] = set()
    for key, value in (await _all_values(nodes)).items():
        with contextlib.suppress(RecordError):
            live.add(_node(key, value).node)
    records = []
    for key, value in (await _all_values(devices)).items():
        try:
            records.append(_device(key, value))
        except RecordError as exc:
            log.warning("cluster registry: skipped the bad device record of key %.80s: %s", key, exc)
    return sorted((r for r in records if r.node in live), key=lambda r: r.id)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait for them, bounded. A task can swallow a cancellation (Python 3.11's
    ``asyncio.wait_for``, which nats-py awaits every request with, returns a result that arrives with
    the cancellation) and wait again: such a task is cancelled again."""
    for _ in range(_CANCEL_TRIES):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=_CANCEL_WAIT)
    log.warning("cluster registry: %d tasks did not stop", sum(not task.done() for task in tasks))


async def _all_values(kv: KeyValue) -> dict[str, bytes]:
    watcher: Any = await kv.watchall()  # nats-py's KeyWatcher methods carry no annotations
    out: dict[str, bytes] = {}
    try:
        while (entry := await watcher.updates(timeout=5.0)) is not None:
            if entry.operation is None and entry.value is not None:
                out[entry.key] = entry.value
    finally:
        await watcher.stop()
    return out


@dataclass
class _Held:
    record: DeviceRecord
    takeover: bool  # a new connection (rule 1) or a resync (yield to a live holder)
    revision: int | None = None  # of our own claim, once written


class ClusterRegistry:
    """One node's view of, and part in, the cluster's device registry (module docstring)."""

    def __init__(self, nc: NatsClient, *, node_id: str, internal: str, ttl: float = DEFAULT_TTL,
                 in_flight: int = IN_FLIGHT, on_superseded: Callable[[DeviceRecord], None] = lambda _r: None) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        self.nc = nc
        self.node = NodeRecord(node=node_id, internal=internal, started=time.time())
        self.ttl = ttl
        self.in_flight = in_flight
        #: Called when another node claimed a device this node holds: close the local uplink.
        self.on_superseded = on_superseded
        self._local: dict[str, _Held] = {}  # device id -> what this node holds
        self._dirty: dict[str, None] = {}  # device ids to reconcile, in order
        self._claims: dict[str, asyncio.Task[None]] = {}  # device id -> its reconcile in flight
        self._pause_until = 0.0  # monotonic: after a NATS error, no new claim before then
        self._wake = asyncio.Event()
        self._mirror: dict[str, tuple[DeviceRecord, int]] = {}  # key -> (record, revision)
        self._nodes: dict[str, NodeRecord] = {}
        self._bad_nodes: set[str] = set()  # keys of node records that did not decode (logged once)
        self._devices_kv: KeyValue | None = None
        self._nodes_kv: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._events: deque[tuple[str, DeviceRecord]] = deque()  # connect/disconnect events to publish
        self._events_ready = asyncio.Event()
        #: Events not published because ``MAX_EVENTS`` were waiting already.
        self.events_dropped = 0
        self._watcher: Any = None
        self._resync = asyncio.Event()
        self.synced = asyncio.Event()  # set once the mirror holds the bucket's state

    # ------------------------------------------------------------------ reading

    def live_nodes(self) -> dict[str, NodeRecord]:
        return {**self._nodes, self.node.node: self.node}

    def devices(self) -> list[DeviceRecord]:
        """Every device held by a live node, once, sorted by id."""
        live = self.live_nodes()
        return sorted((r for r, _ in self._mirror.values() if r.node in live), key=lambda r: r.id)

    def locate(self, device_id: str) -> NodeRecord | None:
        """The live node holding a device, if any."""
        found = self._mirror.get(device_key(device_id))
        return None if found is None else self.live_nodes().get(found[0].node)

    async def events(self) -> AsyncIterator[tuple[str, DeviceRecord]]:
        """The cluster's device events from now on: ``("connected" | "disconnected", record)``."""
        queue: asyncio.Queue[tuple[str, DeviceRecord]] = asyncio.Queue(maxsize=4096)

        async def take(msg: Any) -> None:
            with contextlib.suppress(RecordError, asyncio.QueueFull):
                queue.put_nowait((msg.subject.rsplit(".", 1)[1], DeviceRecord.decode(msg.data)))

        sub = await self.nc.subscribe(f"{EVENTS_SUBJECT}.*", cb=take)
        try:
            while True:
                yield await queue.get()
        finally:
            with contextlib.suppress(*_NATS_ERRORS):
                await sub.unsubscribe()

    # ------------------------------------------------------------------ this node's devices

    def connected(self, record: DeviceRecord) -> None:
        """A device's uplink came up at this node (a new connection: it takes over)."""
        self._local[record.id] = _Held(record, takeover=True)
        self._mark(record.id)
        self._publish("connected", record)

    def disconnected(self, record: DeviceRecord) -> None:
        """A device's uplink at this node ended."""
        held = self._local.get(record.id)
        if held is not None and held.record == record:
            del self._local[record.id]
            self._mark(record.id)
        self._publish("disconnected", record)

    def resync(self) -> None:
        """NATS came back: rebuild buckets, mirror and this node's claims (module docstring)."""
        self._resync.set()
        self._wake.set()

    def _mark(self, device_id: str) -> None:
        self._dirty.pop(device_id, None)
        self._dirty[device_id] = None
        self._wake.set()

    def _publish(self, kind: str, record: DeviceRecord) -> None:
        """Queue a connect/disconnect event for :meth:`_publisher` (in order; at most ``MAX_EVENTS`` waiting)."""
        if len(self._events) >= MAX_EVENTS:
            self.events_dropped += 1
            if self.events_dropped == 1 or self.events_dropped % 10_000 == 0:
                log.warning("device events: %d not published (NATS does not take them as fast as devices come "
                            "and go)", self.events_dropped)
            return
        self._events.append((kind, record))
        self._events_ready.set()

    async def _publisher(self) -> None:
        """Publish the queued events one at a time, so subscribers see a device's events in order (one
        task per event could let a later publish overtake one that waited for nats-py to flush)."""
        while True:
            await self._events_ready.wait()
            self._events_ready.clear()
            while self._events:
                kind, record = self._events.popleft()
                with contextlib.suppress(*_NATS_ERRORS):
                    await self.nc.publish(f"{EVENTS_SUBJECT}.{kind}", record.encode())

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._open()
        self._tasks += [asyncio.create_task(self._worker()), asyncio.create_task(self._heartbeat()),
                        asyncio.create_task(self._publisher())]

    async def close(self) -> None:
        """Stop; the node's heartbeat is removed so the others see it gone at once."""
        await _cancel(list(self._tasks))
        await self._cancel_claims()
        await self._stop_watcher()
        if self._nodes_kv is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await self._nodes_kv.delete(self.node.node)

    async def _open(self) -> None:
        self._devices_kv, self._nodes_kv = await open_buckets(self.nc, self.ttl)
        await self._nodes_kv.put(self.node.node, self.node.encode())
        await self._refresh_nodes()
        await self._stop_watcher()
        self._mirror.clear()
        self.synced.clear()
        self._watcher = await self._devices_kv.watchall()
        self._tasks.append(asyncio.create_task(self._watch(self._watcher)))

    async def _stop_watcher(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await self._watcher.stop()
            self._watcher = None

    async def _watch(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:  # the initial state is in
                self.synced.set()
                continue
            if entry.operation is None and entry.value is not None:
                try:
                    record = _device(entry.key, entry.value)
                except RecordError as exc:  # gone as far as this node can tell
                    log.warning("cluster registry: ignored the bad device record of key %.80s: %s", entry.key, exc)
                else:
                    self._mirror[entry.key] = (record, entry.revision)
                    self._supersede(record, entry.revision)
                    continue
            gone = self._mirror.pop(entry.key, None)
            held = None if gone is None else self._local.get(gone[0].id)
            if held is not None and gone is not None and gone[0].node == self.node.node:
                # rule 3: another node swept our entry (our heartbeat lapsed, e.g. under load)
                # while the uplink is still here: claim it again, yielding to a newer claim
                log.info("device %s: its registry entry was removed while its uplink is here; "
                         "claiming it again", gone[0].id)
                held.takeover, held.revision = False, None
                self._mark(gone[0].id)

    def _supersede(self, record: DeviceRecord, revision: int) -> None:
        """Rule 2: another node's claim written after ours closes our uplink of the device."""
        held = self._local.get(record.id)
        if record.node != self.node.node and held is not None and held.revision is not None \
                and revision > held.revision:
            log.info("device %s is now at node %s: closing its older uplink here", record.id, record.node)
            self.on_superseded(record)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                assert self._nodes_kv is not None
                await self._nodes_kv.put(self.node.node, self.node.encode())
                await self._refresh_nodes()
                await self._sweep()
            except _NATS_ERRORS as exc:
                log.info("cluster registry: heartbeat failed (%s); retrying", exc or type(exc).__name__)

    async def _refresh_nodes(self) -> None:
        assert self._nodes_kv is not None
        nodes, bad = {}, set()
        for key, value in (await _all_values(self._nodes_kv)).items():
            try:
                nodes[key] = _node(key, value)
            except RecordError as exc:
                bad.add(key)
                if key not in self._bad_nodes:
                    log.warning("cluster registry: ignored the bad node record of key %.80s: %s", key, exc)
        self._nodes, self._bad_nodes = nodes, bad

    async def _sweep(self) -> None:
        """Delete the entries of nodes that are not live (compare-and-set on each revision), ``in_flight``
        at a time. A sweep ends after ``ttl / 3`` so the next heartbeat is on time; the rest is swept
        then, on fresh liveness."""
        kv = self._devices_kv
        assert kv is not None
        live = self.live_nodes()
        stale = [(key, revision) for key, (record, revision) in self._mirror.items() if record.node not in live]
        deadline = time.monotonic() + self.ttl / 3
        for i in range(0, len(stale), self.in_flight):
            if time.monotonic() > deadline:
                return
            await asyncio.gather(*(self._swept(kv, key, revision) for key, revision in stale[i:i + self.in_flight]))

    @classmethod
    async def _swept(cls, kv: KeyValue, key: str, revision: int) -> None:
        with contextlib.suppress(KeyWrongLastSequenceError, KeyNotFoundError):
            await cls._delete(kv, key, revision)

    @staticmethod
    async def _delete(kv: KeyValue, key: str, revision: int) -> None:
        """``delete(last=revision)``, a conflict raised as :class:`KeyWrongLastSequenceError` (as ``update``'s)."""
        try:
            await kv.delete(key, last=revision)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise KeyWrongLastSequenceError(description=exc.description) from None
            raise

    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if (pause := self._pause_until - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            try:
                if self._resync.is_set():
                    await self._cancel_claims()
                    await self._open()
                    self._resync.clear()  # only now: a failed rebuild (JetStream not up yet) is retried
                    for held in self._local.values():
                        held.takeover, held.revision = False, None
                    for device_id in list(self._local):
                        self._mark(device_id)
            except _NATS_ERRORS as exc:
                self._failed(exc)
                self._wake.set()
                continue
            self._launch()

    def _launch(self) -> None:
        """Start the reconcile of the first dirty devices that have none in flight, up to ``in_flight``."""
        free = self.in_flight - len(self._claims)
        if free <= 0:
            return
        chosen: list[str] = []
        for device_id in self._dirty:  # skips at most len(self._claims) ids
            if device_id not in self._claims:
                chosen.append(device_id)
                if len(chosen) == free:
                    break
        for device_id in chosen:
            del self._dirty[device_id]  # a change made while its claim is in flight marks it again
            task = self._claims[device_id] = asyncio.create_task(self._claim(device_id))
            task.add_done_callback(functools.partial(self._claimed, device_id))

    async def _claim(self, device_id: str) -> None:
        try:
            await self._reconcile(device_id)
        except _NATS_ERRORS as exc:
            self._failed(exc)
            self._dirty.setdefault(device_id, None)  # retried after the pause

    def _claimed(self, device_id: str, task: asyncio.Task[None]) -> None:
        if self._claims.get(device_id) is task:
            del self._claims[device_id]
        self._wake.set()

    def _failed(self, exc: BaseException) -> None:
        """NATS failed a claim or the rebuild: pause new claims briefly (one log line per pause)."""
        now = time.monotonic()
        if now >= self._pause_until:
            log.info("cluster registry: NATS unavailable (%s); retrying", exc or type(exc).__name__)
        self._pause_until = now + min(1.0, self.ttl / 10)

    async def _cancel_claims(self) -> None:
        """Stop the claims in flight (a resync or close); their devices stay dirty."""
        for device_id in self._claims:
            self._dirty.setdefault(device_id, None)
        await _cancel(list(self._claims.values()))

    @staticmethod
    async def _read(kv: KeyValue, key: str) -> tuple[DeviceRecord | None, int]:
        """The entry of a key in the bucket and its revision; ``(None, 0)`` if there is none."""
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None, 0
        try:
            return _device(key, entry.value or b""), entry.revision or 0
        except RecordError:
            return None, entry.revision or 0  # a bad record is replaced (update on its revision)

    async def _reconcile(self, device_id: str) -> None:
        """Make the device's entry say what this node wants of it (the rules).

        The first attempt takes the entry as the mirror last saw it, without a round trip,
        and acts on it only by a compare-and-set (create, update or delete on the mirror's
        revision): a stale view then costs a conflict. Anything else (nothing to write, or
        yielding to another node) is decided on the entry read from the bucket."""
        kv = self._devices_kv
        assert kv is not None
        key = device_key(device_id)
        guess: tuple[DeviceRecord | None, int] | None = self._mirror.get(key) or (None, 0)
        for _ in range(_CAS_TRIES):
            held = self._local.get(device_id)
            read = guess is None
            current, revision = await self._read(kv, key) if guess is None else guess
            guess = None
            try:
                if held is None:  # released: remove our entry, leave anyone else's
                    if current is not None and current.node == self.node.node:
                        await self._delete(kv, key, revision)
                        return
                    if read:
                        return
                    continue
                if current == held.record:
                    if read:
                        held.revision = revision
                        return
                    continue
                if current is not None and current.node != self.node.node and current.node in self.live_nodes() \
                        and not held.takeover:
                    if read:
                        self.on_superseded(current)  # resync: a live node holds it already
                        return
                    continue
                if current is None and revision == 0:
                    held.revision = await kv.create(key, held.record.encode())
                else:
                    held.revision = await kv.update(key, held.record.encode(), last=revision)
                if (seen := self._mirror.get(key)) is not None:
                    self._supersede(*seen)  # the watcher saw a newer claim before this write returned
                return
            except KeyWrongLastSequenceError:
                continue  # written in between: read again
        raise TimeoutError(f"device {device_id}: the registry entry kept changing")
