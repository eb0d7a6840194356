"""Layer 4 (cloud cluster): what the cluster registry stores and publishes — pure data, no I/O.

A :class:`DeviceRecord` says which node holds a device's uplink (UPL-16: every node
must reach every device); a :class:`NodeRecord` is a node's heartbeat, naming the
internal HTTP/2 address other nodes forward requests to. Both travel as compact JSON in
JetStream key-value buckets and on NATS subjects; the key of a device is its identity in
URL-safe base64 (KV keys allow only ``[-/_=.A-Za-z0-9]``, a device id may hold anything).

Anyone who can write to the buckets can put any bytes there, so decoding a record raises
:class:`RecordError` and nothing else for bad input: over :data:`MAX_RECORD` bytes, not
JSON (including nesting too deep for the parser), not an object, a field missing, a text
field that is not a string, a time that is not a finite number (``NaN``, ``Infinity``,
``1e999`` or an integer too large for a float), a node that is not a node id (what
:func:`check_node_id` lets a node call itself: it goes into URLs, log lines and answers),
or an internal address that is not ``HOST:PORT`` (a host name or IP address, a port
1-65535: other nodes connect there). The registry skips such a record and goes on.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigurationError, RemoteProtocolError

__all__ = [
    "DEVICES_BUCKET",
    "EVENTS_SUBJECT",
    "NODES_BUCKET",
    "DeviceRecord",
    "NodeRecord",
    "RecordError",
    "check_node_id",
    "device_key",
]

#: JetStream key-value bucket: device key -> DeviceRecord (no TTL: kept true by the nodes, see registry).
DEVICES_BUCKET = "iec62676-devices"
#: JetStream key-value bucket: node id -> NodeRecord, with a TTL (heartbeats).
NODES_BUCKET = "iec62676-nodes"
#: Device events: ``iec62676.device.connected`` and ``iec62676.device.disconnected``.
EVENTS_SUBJECT = "iec62676.device"

_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Longest record accepted from the bucket (a record is about 200 bytes).
MAX_RECORD = 4096
#: A host name as the host of an internal address ("_" too: Docker's DNS names containers and services so).
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")


def check_node_id(node_id: str) -> str:
    """A node id is a NATS-subject-safe token (letters, digits, ``-``, ``_``; at most 64)."""
    if not _NODE_ID.fullmatch(node_id):
        raise ConfigurationError(f"--node-id {node_id!r}: use 1-64 letters, digits, '-' or '_'")
    return node_id


def device_key(device_id: str) -> str:
    """The bucket key of a device id."""
    return base64.urlsafe_b64encode(device_id.encode("utf-8")).decode("ascii")


class RecordError(RemoteProtocolError, ValueError):
    """A registry record that does not decode (the message names the fault, never the record's text); a
    ``ValueError`` too, as decoding errors were before it."""


def _load(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_RECORD:
        raise RecordError(f"{what} record of {len(data)} bytes is over {MAX_RECORD}")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RecordError(f"{what} record is not JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise RecordError(f"{what} record is not a JSON object")
    return value


def _text(v: dict[str, Any], name: str, what: str) -> str:
    text = v.get(name)
    if not isinstance(text, str):
        raise RecordError(f"{what} record: {name} is {'missing' if text is None else 'not a string'}")
    return text


def _node(v: dict[str, Any], what: str) -> str:
    node = _text(v, "node", what)
    if not _NODE_ID.fullmatch(node):
        raise RecordError(f"{what} record: node is not a node id")
    return node


def _internal(v: dict[str, Any], what: str) -> str:
    """``HOST:PORT`` as a node advertises it (an IPv6 host with or without brackets: the router splits at
    the last colon)."""
    internal = _text(v, "internal", what)
    host, _, port = internal.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if port.isascii() and port.isdigit() and 0 < int(port) < 65536 and _host(host):
        return internal
    raise RecordError(f"{what} record: internal is not HOST:PORT")


def _host(host: str) -> bool:
    if _HOST_NAME.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _seconds(v: dict[str, Any], name: str, what: str) -> float:
    number = v.get(name)
    if isinstance(number, int | float) and not isinstance(number, bool):
        with contextlib.suppress(OverflowError):  # an integer too large for a float
            if math.isfinite(seconds := float(number)):
                return seconds
    raise RecordError(f"{what} record: {name} is not a finite number")


@dataclass(frozen=True, kw_only=True)
class DeviceRecord:
    """Who holds a device: its node, since when (epoch seconds), how it authenticated, from where."""

    id: str
    node: str
    peer: str
    connected_since: float
    auth_mode: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> DeviceRecord:
        """The record in ``data``; :class:`RecordError` if it is not one (module docstring)."""
        v = _load(data, "device")
        return cls(id=_text(v, "id", "device"), node=_node(v, "device"), peer=_text(v, "peer", "device"),
                   connected_since=_seconds(v, "connected_since", "device"), auth_mode=_text(v, "auth_mode", "device"))


@dataclass(frozen=True, kw_only=True)
class NodeRecord:
    """A node's heartbeat: its id and the ``host:port`` of its internal (node-to-node) listener."""

    node: str
    internal: str
    started: float

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> NodeRecord:
        """The record in ``data``; :class:`RecordError` if it is not one (module docstring)."""
        v = _load(data, "node")
        return cls(node=_node(v, "node"), internal=_internal(v, "node"), started=_seconds(v, "started", "node"))
