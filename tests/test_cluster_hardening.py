"""UPL-16 (the cluster's registry and its node-to-node listener) under hostile input, in process:

* a registry record (device or node) that is not one — an integer too large for a float,
  JSON nested too deep for the parser, ``NaN``/``Infinity``, a field of the wrong type or
  missing, not an object, not UTF-8, over the size cap — is refused by its decoder with
  :class:`RecordError` only, whose message carries no part of the record (the loops that
  read the buckets skip it: ``tests/test_cluster_registry.py``);
* the internal listener (real TLS on loopback, the proxy behind it trusting
  ``X-Forwarded-*``) answers a device certificate of the node CA 403 without the proxy
  seeing the request, and serves a node certificate (serverAuth and clientAuth);
* a node whose own certificate lacks serverAuth is refused at start-up with one line.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from iec62676_2_33 import pki
from iec62676_2_33.cluster import node as node_module
from iec62676_2_33.cluster.node import ClusterOptions, NodesOnly, is_node_certificate, join_cluster
from iec62676_2_33.cluster.records import MAX_RECORD, DeviceRecord, NodeRecord, RecordError
from iec62676_2_33.errors import ConfigurationError
from iec62676_2_33.runtime.cloud import CloudListener
from iec62676_2_33.runtime.http_server import serve_asgi, wait_event
from iec62676_2_33.runtime.proxy import UplinkProxy
from iec62676_2_33.transport.contexts import client_context, server_context

DEVICE = b'{"id":"cam-1","node":"n1","peer":"192.0.2.1:5000","connected_since":%s,"auth_mode":"mTLS"}'
NODE = b'{"node":"n1","internal":"127.0.0.1:9443","started":%s}'
HUGE = b"1" + b"0" * 400

BAD_TIMES = {"huge integer": HUGE, "NaN": b"NaN", "Infinity": b"Infinity", "-Infinity": b"-Infinity",
             "overflowing float": b"1e999", "string": b'"1"', "boolean": b"true", "list": b"[1]", "null": b"null"}
BAD_RECORDS = {"deep nesting": b"[" * 3000, "deep objects": b'{"a":[' * 600, "not JSON": b"{", "not UTF-8": b"\xff",
               "not an object": b"[]", "empty": b"", "over the cap": b" " * (MAX_RECORD + 1)}


@pytest.mark.parametrize("decode, template", [(DeviceRecord.decode, DEVICE), (NodeRecord.decode, NODE)],
                         ids=["device", "node"])
@pytest.mark.parametrize("form", [*BAD_TIMES, *BAD_RECORDS])
def test_a_bad_record_is_refused_with_the_modules_error_only(decode: object, template: bytes, form: str) -> None:
    data = template % BAD_TIMES[form] if form in BAD_TIMES else BAD_RECORDS[form]
    with pytest.raises(RecordError) as caught:
        decode(data)  # type: ignore[operator]
    assert len(str(caught.value)) < 100 and "0000" not in str(caught.value)  # no record text


@pytest.mark.parametrize("field, value", [("id", b"7"), ("node", b"null"), ("peer", b'["x"]'), ("auth_mode", b"{}")])
def test_a_device_record_with_a_text_field_of_another_type_is_refused(field: str, value: bytes) -> None:
    data = DEVICE % b"1.5"
    start = data.index(b'"%s":' % field.encode()) + len(field) + 3
    end = data.index(b",", start) if field != "auth_mode" else len(data) - 1
    with pytest.raises(RecordError, match=field):
        DeviceRecord.decode(data[:start] + value + data[end:])


def test_a_record_missing_a_field_is_refused_and_good_records_round_trip() -> None:
    with pytest.raises(RecordError, match="internal is missing"):
        NodeRecord.decode(b'{"node":"n1","started":1}')
    device = DeviceRecord(id="cam/1 é", node="n1", peer="192.0.2.1:5000", connected_since=1.5, auth_mode="mTLS")
    assert DeviceRecord.decode(device.encode()) == device
    assert NodeRecord.decode(NODE % b"7") == NodeRecord(node="n1", internal="127.0.0.1:9443", started=7.0)


class NodePki:
    def __init__(self) -> None:
        self.ca = pki.make_ca("nodes and, wrongly, devices")
        self.node = pki.make_leaf(self.ca, "n1", kind="server", sans=["IP:127.0.0.1"],
                                  eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        self.device = pki.make_leaf(self.ca, "00000000000000000042", kind="client")


def test_only_a_certificate_naming_server_auth_is_a_node_certificate() -> None:
    certs = NodePki()
    assert is_node_certificate(certs.node.cert)
    assert not is_node_certificate(certs.device.cert)
    assert not is_node_certificate(pki.make_leaf(certs.ca, "no-eku", kind="client", eku=[]).cert)


async def test_the_internal_listener_refuses_a_device_certificate_of_the_node_ca() -> None:
    certs = NodePki()
    seen: list[str] = []
    proxy = UplinkProxy(CloudListener(), trust_forwarded=True)

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append(str(scope["path"]))
        await proxy(scope, receive, send)  # type: ignore[arg-type]

    ctx = server_context(certs.node.cert_pem(), certs.node.key_pem(), client_ca_pems=[certs.ca.cert_pem()],
                         require_client_cert=True, alpn_protocols=["h2", "http/1.1"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    url = f"https://127.0.0.1:{sock.getsockname()[1]}/devices/cam-1/onvif/device_service"
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_asgi(NodesOnly(app), sock, lambda: wait_event(stop), ssl_context=ctx))
    try:
        answers = {}
        for name, leaf in (("device", certs.device), ("node", certs.node)):
            client = client_context(cafile_pems=[certs.ca.cert_pem()], certfile_pem=leaf.cert_pem(),
                                    keyfile_pem=leaf.key_pem(), alpn_protocols=["http/1.1"])
            async with httpx.AsyncClient(verify=client, timeout=10) as http:
                answers[name] = await http.get(url, headers={"x-forwarded-for": "198.51.100.7"})
        assert answers["device"].status_code == 403 and b"nodes only" in answers["device"].content
        assert answers["node"].status_code != 403  # the proxy answers (no such device here)
        assert seen == ["/devices/cam-1/onvif/device_service"]  # the node's request only
    finally:
        stop.set()
        await asyncio.wait_for(serving, 10)


async def test_a_node_certificate_without_server_auth_is_refused_at_start_up(tmp_path: Path) -> None:
    certs = NodePki()
    cert, key = certs.device.write(tmp_path, "n1")
    ca, _ = certs.ca.write(tmp_path, "ca")
    options = ClusterOptions(nats="nats://127.0.0.1:1", node_id="n1", internal="127.0.0.1:0", cert=cert, key=key,
                             ca=ca)
    with pytest.raises(ConfigurationError, match="must name serverAuth") as caught:
        async with join_cluster(CloudListener(), options):
            pass
    assert "\n" not in str(caught.value)


async def test_a_node_ca_that_also_issues_device_certificates_is_refused_at_start_up(tmp_path: Path) -> None:
    """SEC-1: a node whose ``--internal-ca`` is also one of the cloud's device CAs (``--client-ca``) does not
    start (one line): with one CA for both, a device certificate issued with serverAuth would pass as a node's."""
    certs = NodePki()
    cert, key = certs.node.write(tmp_path, "n1")
    ca, _ = certs.ca.write(tmp_path, "ca")
    options = ClusterOptions(nats="nats://127.0.0.1:1", node_id="n1", internal="127.0.0.1:0", cert=cert, key=key,
                             ca=ca)
    other = pki.make_ca("other devices")
    with pytest.raises(ConfigurationError, match="also issues device certificates") as caught:
        async with join_cluster(CloudListener(), options, device_cas=[other.cert_pem(), certs.ca.cert_pem()]):
            pass
    assert "\n" not in str(caught.value)


async def test_a_nats_server_that_is_not_there_is_a_one_line_error_at_start_up(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """GEN-3: ``--nats`` naming no server fails at start-up with one line once the first connection's deadline
    passed (before, nats-py retried the first connection for ever and the node hung without a word)."""
    monkeypatch.setattr(node_module, "FIRST_CONNECT", 1.0)
    certs = NodePki()
    cert, key = certs.node.write(tmp_path, "n1")
    ca, _ = certs.ca.write(tmp_path, "ca")
    with socket.create_server(("127.0.0.1", 0)) as taken:  # a port that refuses: the listener is never accepted
        port = taken.getsockname()[1]
    options = ClusterOptions(nats=f"nats://127.0.0.1:{port}", node_id="n1", internal="127.0.0.1:0", cert=cert,
                             key=key, ca=ca)
    with pytest.raises(ConfigurationError, match="cannot connect") as caught:
        async with asyncio.timeout(30), join_cluster(CloudListener(), options):
            pass
    assert "\n" not in str(caught.value)
