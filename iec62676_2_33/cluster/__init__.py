"""Layer 4: a cluster of cloud nodes on NATS (UPL-16: every device reachable through any node).

The single node stays the default and the reference; a cluster is the single node plus
a registry (:mod:`.registry`, JetStream key-value buckets kept true by heartbeats) and a
router (:mod:`.router`, node-to-node HTTP/2 on mutual TLS), joined by :mod:`.node`.
Only this package imports ``nats`` (the optional extra ``cluster``).
"""

from __future__ import annotations

from .node import ClusterOptions, join_cluster
from .records import DeviceRecord, NodeRecord
from .registry import ClusterRegistry, read_registry

__all__ = ["ClusterOptions", "ClusterRegistry", "DeviceRecord", "NodeRecord", "join_cluster", "read_registry"]
