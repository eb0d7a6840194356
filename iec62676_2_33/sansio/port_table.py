"""Layer 1 (sans-IO): which port of a range each device gets (``cloud serve --device-ports START-END``).

A stock ONVIF client takes a host and a port, nothing more; the cloud can give each
device a port of its own (:mod:`..runtime.device_ports` listens on it). This table
decides the numbers; it does no I/O and reads no clock.

Theory of operation
-------------------
* **Stable by derivation.** A device's *home port* is ``START + SHA-256(id) mod size``:
  the same id gets the same port across reconnects and restarts of the cloud, with no
  state kept anywhere. Two ids with one home port collide; the later one gets the next
  free port after it (wrapping around the range), and keeps it for as long as the
  table keeps the assignment. After a restart the collision is resolved by who comes
  first again, so only a device that collided may then get another port. Nothing is
  persisted: a range much larger than the number of devices keeps collisions rare
  (with ``n`` devices in ``size`` ports about ``n²/(2·size)`` of them collide).
* **Kept across reconnects.** An assignment outlives its device's connection
  (:meth:`PortTable.release` only marks it *released*), so a device that comes back
  gets its port again even when it had collided.
* **Bounded.** The range holds at most :data:`MAX_PORTS` ports and the table one
  assignment per port. When every port is assigned, a new device takes the port of the
  device released longest ago; when every port belongs to a connected device, it gets
  none (:meth:`PortTable.assign` answers ``None``) and stays reachable by path and by
  host name.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from ..errors import ConfigurationError

__all__ = ["MAX_PORTS", "PortTable", "parse_port_range"]

#: The largest range ``--device-ports`` takes: one listening socket per connected device at most.
MAX_PORTS = 4096


def parse_port_range(text: str) -> range:
    """``START-END`` (both included, 1..65535, at most :data:`MAX_PORTS` ports) → ``range``."""
    start, dash, end = text.partition("-")
    if not dash or not start.strip().isdigit() or not end.strip().isdigit():
        raise ConfigurationError(f"--device-ports {text!r}: give START-END, e.g. 40000-40999")
    first, last = int(start), int(end)
    if not 1 <= first <= last <= 65535:
        raise ConfigurationError(f"--device-ports {text!r}: need 1 <= START <= END <= 65535")
    if last - first + 1 > MAX_PORTS:
        raise ConfigurationError(f"--device-ports {text!r}: at most {MAX_PORTS} ports (one listener per device)")
    return range(first, last + 1)


class PortTable:
    """Device id → port within ``ports`` (module docstring)."""

    def __init__(self, ports: range) -> None:
        if not 0 < len(ports) <= MAX_PORTS or ports.step != 1:
            raise ConfigurationError(f"a device port range is 1 to {MAX_PORTS} consecutive ports")
        self.ports = ports
        self._port: dict[str, int] = {}
        self._owner: dict[int, str] = {}
        #: Assignments of devices that are gone, the longest gone first (the ones a full range gives up).
        self._released: OrderedDict[str, None] = OrderedDict()

    def home(self, device_id: str) -> int:
        """The port the id derives (before collisions)."""
        digest = hashlib.sha256(device_id.encode("utf-8")).digest()
        return self.ports[int.from_bytes(digest[:8], "big") % len(self.ports)]

    def port(self, device_id: str) -> int | None:
        return self._port.get(device_id)

    def owner(self, port: int) -> str | None:
        return self._owner.get(port)

    def assign(self, device_id: str) -> int | None:
        """The device's port, now held by it: its earlier one, else its home port or the next free one;
        ``None`` when every port belongs to a device that is not released."""
        self._released.pop(device_id, None)
        port = self._port.get(device_id)
        if port is not None:
            return port
        if len(self._owner) == len(self.ports):
            if not self._released:
                return None
            gone, _ = self._released.popitem(last=False)
            del self._owner[self._port.pop(gone)]
        size = len(self.ports)
        offset = self.home(device_id) - self.ports.start
        port = next(p for p in (self.ports.start + (offset + i) % size for i in range(size)) if p not in self._owner)
        self._port[device_id] = port
        self._owner[port] = device_id
        return port

    def release(self, device_id: str) -> None:
        """The device is gone: it keeps its port until a full range needs it for another device."""
        if device_id in self._port:
            self._released[device_id] = None
            self._released.move_to_end(device_id)

    def released(self, device_id: str) -> bool:
        return device_id in self._released
