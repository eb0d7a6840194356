"""Layer 1 (sans-IO): which port of a range each device gets (``cloud serve --device-ports START-END``).

A stock ONVIF client takes a host and a port, nothing more; the cloud can give each
device a port of its own (:mod:`..runtime.device_ports` listens on it). A client
configured with ``host:port`` for a device sends that device its ONVIF credentials,
so a port must never pass to another device behind the client's back. This table
decides the numbers and encodes them for the assignments file; it does no I/O and
reads no clock (the runtime loads and saves the file).

Theory of operation
-------------------
* **Assigned once, kept for good.** A device's *home port* is
  ``START + SHA-256(id) mod size``; a new id gets its home port, or when another id
  holds that one the next port after it that was never assigned (wrapping around the
  range). From then on the port is that id's: across reconnects and, through the
  assignments file (:func:`dumps_assignments` / :func:`loads_assignments`), across
  restarts of the cloud, whoever connects first.
* **Never reused.** When every port of the range is assigned, a new id gets none
  (:meth:`PortTable.assign` answers ``None``) and stays reachable by path and by host
  name; no id loses its port because it has been gone long. Only the operator frees
  one (:meth:`PortTable.release`, ``iec62676 cloud ports release``).
* **Bounded.** The range holds at most :data:`MAX_PORTS` ports and the table one
  assignment per port; the encoded file is bounded by :data:`MAX_FILE_BYTES`.
* **Assignments made elsewhere.** In a cluster the assignments live in a NATS bucket,
  one create-only key per port (:mod:`..cluster.port_assignments`); each node mirrors
  the bucket into a table (:meth:`PortTable.record`, :meth:`PortTable.forget`) and asks
  it for the candidate port of a new id (:meth:`PortTable.candidate`), so every node
  derives ports by the same rules. Keys are per port, so a port never names two ids; an
  id that ends up with two ports (two nodes assigned it while a third port was being
  released) uses the first in its probe order, and the other stays reserved for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from ..errors import ConfigurationError

__all__ = ["MAX_FILE_BYTES", "MAX_PORTS", "PortTable", "dumps_assignments", "loads_assignments",
           "parse_port_range"]

#: The largest range ``--device-ports`` takes: one listening socket per connected device at most.
MAX_PORTS = 4096
#: The largest assignments file read: 4 KiB per assignment of the largest range.
MAX_FILE_BYTES = MAX_PORTS * 4096
_FORMAT = 1


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
    """Device id → port within ``ports`` (module docstring); ``assigned`` are the assignments kept so far."""

    def __init__(self, ports: range, assigned: Mapping[str, int] | None = None) -> None:
        if not 0 < len(ports) <= MAX_PORTS or ports.step != 1:
            raise ConfigurationError(f"a device port range is 1 to {MAX_PORTS} consecutive ports")
        self.ports = ports
        self._port: dict[str, int] = {}
        self._owner: dict[int, str] = {}
        for device_id, port in (assigned or {}).items():
            if port not in ports:
                raise ConfigurationError(f"device {device_id} has port {port}, outside {ports.start}-"
                                         f"{ports.stop - 1}: give the range it was assigned from or release it")
            if port in self._owner:
                raise ConfigurationError(f"port {port} is assigned to both {self._owner[port]} and {device_id}")
            self._port[device_id] = port
            self._owner[port] = device_id

    def home(self, device_id: str) -> int:
        """The port the id derives (before collisions)."""
        digest = hashlib.sha256(device_id.encode("utf-8")).digest()
        return self.ports[int.from_bytes(digest[:8], "big") % len(self.ports)]

    def port(self, device_id: str) -> int | None:
        return self._port.get(device_id)

    def owner(self, port: int) -> str | None:
        return self._owner.get(port)

    def assignments(self) -> dict[str, int]:
        """Every assignment, id → port (a copy)."""
        return dict(self._port)

    def assign(self, device_id: str) -> int | None:
        """The device's port: its assigned one, else its home port or the next one never assigned (now
        assigned to it); ``None`` when every port of the range is another id's."""
        port = self.candidate(device_id)
        if port is not None and device_id not in self._port:
            self._port[device_id] = port
            self._owner[port] = device_id
        return port

    def candidate(self, device_id: str) -> int | None:
        """The port :meth:`assign` would give, without assigning it."""
        port = self._port.get(device_id)
        if port is not None or len(self._owner) == len(self.ports):
            return port
        size = len(self.ports)
        offset = self.home(device_id) - self.ports.start
        return next(p for p in (self.ports.start + (offset + i) % size for i in range(size)) if p not in self._owner)

    def release(self, device_id: str) -> int | None:
        """The operator frees the id's port for another id (the port it had, ``None``: it had none)."""
        port = self._port.pop(device_id, None)
        if port is not None:
            for extra in [p for p, owner in self._owner.items() if owner == device_id]:
                del self._owner[extra]
        return port

    def record(self, device_id: str, port: int) -> None:
        """An assignment made elsewhere (another node): ``port`` is now ``device_id``'s, whoever had it.
        An id with two ports uses the first in its probe order (module docstring)."""
        if port not in self.ports:
            raise ConfigurationError(f"device {device_id} has port {port}, outside {self.ports.start}-"
                                     f"{self.ports.stop - 1}: every node needs the same --device-ports range")
        self.forget(port)
        self._owner[port] = device_id
        current = self._port.get(device_id)
        if current is None or self._probe(device_id, port) < self._probe(device_id, current):
            self._port[device_id] = port

    def forget(self, port: int) -> str | None:
        """An assignment removed elsewhere (the operator released it): the id that had ``port``, if any."""
        device_id = self._owner.pop(port, None)
        if device_id is not None and self._port.get(device_id) == port:
            del self._port[device_id]
            others = [p for p, owner in self._owner.items() if owner == device_id]
            if others:
                self._port[device_id] = min(others, key=lambda p: self._probe(device_id, p))
        return device_id

    def _probe(self, device_id: str, port: int) -> int:
        """Where ``port`` comes in the id's probe order (0: its home port)."""
        return (port - self.home(device_id)) % len(self.ports)


def dumps_assignments(assigned: Mapping[str, int]) -> bytes:
    """The assignments file's content: ``{"format": 1, "ports": {id: port, ...}}``, sorted by port."""
    ports = dict(sorted(assigned.items(), key=lambda item: item[1]))
    return json.dumps({"format": _FORMAT, "ports": ports}, indent=1).encode("utf-8") + b"\n"


def loads_assignments(data: bytes) -> dict[str, int]:
    """The assignments of :func:`dumps_assignments` output; anything else is one-line ConfigurationError
    (the caller names the file)."""
    if len(data) > MAX_FILE_BYTES:
        raise ConfigurationError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT or not isinstance(
            ports := document.get("ports"), dict):
        raise ConfigurationError(f'not an assignments file (expected {{"format": {_FORMAT}, "ports": {{...}}}})')
    if len(ports) > MAX_PORTS:
        raise ConfigurationError(f"more than {MAX_PORTS} assignments")
    for device_id, port in ports.items():
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ConfigurationError(f"device {device_id[:64]!r}: {str(port)[:20]!r} is not a port")
    return dict(ports)
