"""Infrastructure: every code block of the documents a newcomer follows after the README (docs/api.md,
docs/architecture.md, docs/cluster.md, docs/conformance-kit.md, docs/hierarchy.md, docs/interop.md,
examples/README.md) is run here as written -- on loopback, with free ports, a temporary folder and
certificates made by the test in place of the fixed ones -- or names the test that covers it, or says why
it is not meant to run. Servers run in the background: started, waited for, used, stopped."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cluster_env import NatsServer, NodePki, have
from helpers import free_port
from quickstart_env import ROOT, WAIT, Quickstart
from token_env import CLIENT_SECRET, TokenWorld

from iec62676_2_33.store import DeviceStore
from iec62676_2_33.testing.harness import ADMIN, RunningCloud, RunningDevice, UplinkPki, seed_device, wait_until

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOCS = ("docs/api.md", "docs/architecture.md", "docs/cluster.md", "docs/conformance-kit.md", "docs/hierarchy.md",
        "docs/interop.md", "examples/README.md")

#: Every block, by its document and a distinctive line: the test of this module that runs it, or where it is
#: covered, or why it is not meant to run.
WHERE = {
    ("docs/api.md", 'listen=("0.0.0.0", 8443)) as cloud:'): "test_api_vms_blocks",
    ("docs/api.md", "for info in cloud.listener.devices():"): "test_api_vms_blocks",
    ("docs/api.md", 'answer = await service.GetDeviceInformation()'): "test_api_vms_blocks",
    ("docs/api.md", "async for event in cloud.listener.events():"): "test_api_vms_blocks",
    ("docs/api.md", 'node = ClusterOptions(nats="nats://10.0.0.2:4222"'):
        "tests/test_cluster_api.py::test_docs_block_calls_a_device_at_another_node_upl_16",
    ("docs/api.md", 'async with serve_device("camera-data"'): "test_api_device_side_block",
    ("docs/api.md", "result = enroll("): "test_api_enroll_block",
    ("docs/architecture.md", "device (run_device)"): "not meant to run: a diagram",
    ("docs/architecture.md", "devices ──TLS──► HAProxy"): "not meant to run: a diagram",
    ("docs/cluster.md", "--nats nats://10.0.0.2:4222 --node-id n1"): "test_cluster_node_block",
    ("docs/conformance-kit.md", "--junit conformance.xml --html conformance.html"): "test_conformance_device_block",
    ("docs/conformance-kit.md", "--dut2 http://192.0.2.11/onvif/device_service"):
        "tests/test_conformance_two_duts.py::test_two_instances_of_our_device_pass (--dut2, --password2-file, "
        "with --only the case the block is for)",
    ("docs/conformance-kit.md", "conformance demo --out .venv/conformance-report"):
        ".ci/run itself; tests/test_conformance_device.py runs conformance demo --out",
    ("docs/conformance-kit.md", "--cert device.pem --key device.key --ca cloud-ca.pem --html cloud.html"):
        "test_conformance_cloud_blocks",
    ("docs/conformance-kit.md", "--token-server https://auth.example.com/"): "test_conformance_cloud_blocks",
    ("docs/conformance-kit.md", "def test_device_conformance(conformance, device):"):
        "test_conformance_fixture_block",
    ("docs/hierarchy.md", "iec62676 vss lower add --data regional --prefix site"): "test_hierarchy_block",
    ("docs/hierarchy.md", "is not an Annex A device ID (20 digits)"): "test_hierarchy_prefix_error_sample",
    ("docs/interop.md", "ONVIF_SPECS_DIR=/path/to/onvif-specs/wsdl"):
        "tests/test_interop_official_wsdl.py itself, which needs a checkout of onvif/specs (not shipped) and "
        "says so when it is skipped",
    ("examples/README.md", "iec62676 device resources load --data /tmp/camera"): "test_examples_resources_block",
    ("examples/README.md", "python -m iec62676_2_33.testing.sampledata --count 300"):
        "test_examples_sampledata_block",
    ("examples/README.md", '{"manufacturer": "Acme"'): "test_examples_device_info_block",
}


def doc_blocks() -> list[tuple[str, str]]:
    """(document, block text) of every fenced block."""
    return [(doc, m.group(2)) for doc in DOCS for m in FENCE.finditer((ROOT / doc).read_text(encoding="utf-8"))]


def block(doc: str, line: str) -> str:
    (found,) = [text for name, text in doc_blocks() if name == doc and line in text]
    return found


def test_every_block_is_run_or_accounted_for() -> None:
    for doc, text in doc_blocks():
        entries = [where for (name, line), where in WHERE.items() if name == doc and line in text]
        assert len(entries) == 1, f"{doc}: a block not listed once in WHERE:\n{text}"
    assert all(sum(name == doc and line in text for name, text in doc_blocks()) == 1 for doc, line in WHERE), \
        "a stale WHERE entry"
    for where in WHERE.values():
        if where.startswith("test_"):
            assert callable(globals().get(where)), where
        elif where.startswith("tests/"):
            path, _, name = where.partition(" ")[0].partition("::")
            assert (ROOT / path).is_file(), where
            assert f"def {name}(" in (ROOT / path).read_text() or not name, where
        else:
            assert where.startswith((".ci/run", "not meant to run")), where


def indented(text: str, depth: int) -> str:
    return textwrap.indent(text, " " * depth)


class Printed:
    """``print`` for a block run by ``exec``: the lines it printed, waited for with a bound."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, *values: object) -> None:
        self.lines.append(" ".join(str(v) for v in values))

    async def until(self, text: str) -> None:
        async with asyncio.timeout(WAIT):
            while not any(text in line for line in self.lines):
                await asyncio.sleep(0.1)


async def test_api_vms_blocks(tmp_path: Path) -> None:
    """Sections 1 to 4 of docs/api.md as one program: section 1's ``...`` holds the others (section 4 as a task
    beside them), with a camera that connects once the cloud is up and leaves at the end."""
    certs = UplinkPki(tmp_path / "pki")
    accept = block("docs/api.md", 'listen=("0.0.0.0", 8443)) as cloud:')
    for old, new in {'"cloud.pem"': repr(str(certs.cert)), '"cloud.key"': repr(str(certs.key)),
                     '"devices-ca.pem"': repr(str(certs.ca_file)), '("0.0.0.0", 8443)': '("127.0.0.1", 0)'}.items():
        assert old in accept, old
        accept = accept.replace(old, new)
    rest = "\n".join([
        "async def follow():",
        indented(block("docs/api.md", "async for event in cloud.listener.events():"), 4),
        "follower = asyncio.create_task(follow())",
        "await camera_on(cloud)",
        block("docs/api.md", "for info in cloud.listener.devices():"),
        block("docs/api.md", "answer = await service.GetDeviceInformation()"),
        "print(answer.SerialNumber)",
        "await camera_off()",
        "await printed.until('disconnected camera-7')",
        "follower.cancel()"])
    (placeholder,) = [line for line in accept.splitlines() if line.strip().startswith("...")]
    program = "async def run_blocks():\n" + indented(accept.replace(placeholder, indented(rest, 4)), 4)
    running: list[RunningDevice] = []

    async def camera_on(cloud: Any) -> None:
        seed_device(tmp_path / "camera", certs, "camera-7", [(cloud.url, ("Operator",))])
        running.append(await asyncio.to_thread(RunningDevice, tmp_path / "camera", listen=False))
        async with asyncio.timeout(WAIT):
            while not cloud.listener.devices():
                await asyncio.sleep(0.1)
        await printed.until("connected camera-7")

    async def camera_off() -> None:
        await asyncio.to_thread(running.pop().stop)

    printed = Printed()
    namespace: dict[str, Any] = {"asyncio": asyncio, "camera_on": camera_on, "camera_off": camera_off,
                                 "printed": printed, "print": printed}
    exec(compile(program, "docs/api.md", "exec"), namespace)  # noqa: S102
    try:
        async with asyncio.timeout(WAIT * 2):
            await namespace["run_blocks"]()
    finally:
        for device in running:
            await asyncio.to_thread(device.stop)
    url, connected, listed, serial, disconnected = printed.lines
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+/", url), url
    device_id, peer, auth_mode, since = listed.split()
    assert (device_id, auth_mode) == ("camera-7", "mTLS") and peer.startswith("127.0.0.1:") and float(since) > 0
    assert connected == "connected camera-7 None" and len(serial) == 12
    assert disconnected.startswith("disconnected camera-7 ")


async def test_api_device_side_block(tmp_path: Path) -> None:
    """docs/api.md "The device side": a device folder holding the named certificate and policy runs, takes the
    uplink and lists it with its live Status; the cloud it names then sees it."""
    certs = UplinkPki(tmp_path / "pki")
    leaf = certs.device("camera-7")
    with DeviceStore(tmp_path / "camera-data") as store:
        store.put_certificate("camera-cert", leaf.cert_pem(), leaf.key_pem())
        store.put_policy("cloud-ca", [certs.ca.cert_pem()])
    cloud = await asyncio.to_thread(RunningCloud, certs, proxy=False)
    text = block("docs/api.md", 'async with serve_device("camera-data"')
    for old, new in {'"camera-data"': repr(str(tmp_path / "camera-data")),
                     "127.0.0.1:8080": f"127.0.0.1:{free_port()}",
                     "https://cloud.example.com:8443/uplink": cloud.uplink_url()}.items():
        assert old in text, old
        text = text.replace(old, new)
    text += "    await until_connected()\n"

    async def until_connected() -> None:
        await asyncio.to_thread(cloud.wait_for, "camera-7", WAIT)

    printed = Printed()
    namespace: dict[str, Any] = {"until_connected": until_connected, "print": printed}
    exec(compile("async def run_block():\n" + indented(text, 4), "docs/api.md", "exec"), namespace)  # noqa: S102
    try:
        async with asyncio.timeout(WAIT * 2):
            await namespace["run_block"]()
    finally:
        await asyncio.to_thread(cloud.stop)
    (line,) = printed.lines
    assert line.startswith(cloud.uplink_url() + " "), line


def test_api_enroll_block(tmp_path: Path) -> None:
    """docs/api.md "Enrolling devices from the cloud side", run twice against a device with an administrator:
    the device is enrolled and connects; the second run creates nothing."""
    certs = UplinkPki(tmp_path / "pki")
    cloud = RunningCloud(certs, proxy=False)
    seed_device(tmp_path / "device")
    device = RunningDevice(tmp_path / "device")
    try:
        text = block("docs/api.md", "result = enroll(")
        assert device.device_service is not None
        for old, new in {"http://192.0.2.10/onvif/device_service": device.device_service,
                         'load_ca_dir("ca")': f"load_ca_dir({str(certs.dir)!r})"}.items():
            assert old in text, old
            text = text.replace(old, new)
        printed = Printed()
        for _ in range(2):
            namespace = {"secret": ADMIN[1], "cloud": SimpleNamespace(url=cloud.uplink_url()), "print": printed}
            exec(compile(text, "docs/api.md", "exec"), namespace)  # noqa: S102
        first, second = (line.split(" ", 2) for line in printed.lines)
        assert first[:2] == second[:2] and first[2] != "()" and second[2] == "()"
        cloud.wait_for(first[0], WAIT)
    finally:
        device.stop()
        cloud.stop()


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Quickstart]:
    """The README's runner (blocks under bash with the venv's ``iec62676`` first on PATH), its substitutions
    left to each test."""
    runner = Quickstart(tmp_path)
    runner.subst = {}
    try:
        yield runner
    finally:
        runner.stop()


@pytest.mark.skipif(not have("nats-server"), reason="Debian nats-server is needed (.ci/run installs it)")
def test_cluster_node_block(tmp_path: Path, shell: Quickstart) -> None:
    """docs/cluster.md "Running a node" (with its optional ``--cluster-ttl``): the node joins a nats-server, and a
    device dialling its listener is listed by its proxy as held by n1."""
    certs, nodes = UplinkPki(tmp_path / "pki"), NodePki(tmp_path / "pki")
    node_cert, node_key = nodes.node("n1")
    nats = NatsServer(tmp_path / "js")
    try:
        listen, proxy = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        shell.subst = {"10.0.0.11:8443": listen, "cloud.pem": str(certs.cert), "cloud.key": str(certs.key),
                       "devices-ca.pem": str(certs.ca_file), "127.0.0.1:8081": proxy, "nats://10.0.0.2:4222": nats.url,
                       "10.0.0.11:9443": f"127.0.0.1:{free_port()}", "n1.pem": str(node_cert),
                       "n1.key": str(node_key), "node-ca.pem": str(nodes.ca_file),
                       "[--cluster-ttl 15]": "--cluster-ttl 15"}
        text = block("docs/cluster.md", "--nats nats://10.0.0.2:4222 --node-id n1")
        assert all(old in text for old in shell.subst), shell.subst
        shell.start(text, "cloud proxy on")
        seed_device(tmp_path / "device", certs, "cam-1", [(f"https://localhost:{listen.split(':')[1]}/uplink",
                                                           ("Operator",))])
        device = RunningDevice(tmp_path / "device", listen=False)
        try:
            def listed() -> bool:
                devices = json.loads(urllib.request.urlopen(f"http://{proxy}/devices", timeout=5).read())
                return [(d["id"], d["node"]) for d in devices] == [("cam-1", "n1")]
            wait_until(listed, WAIT, what="cam-1 listed at n1")
        finally:
            device.stop()
    finally:
        shell.stop()
        nats.kill()


def test_conformance_device_block(tmp_path: Path, shell: Quickstart) -> None:
    """docs/conformance-kit.md "Test a device" against our device, with ``--skip-long`` (the long cases wait as
    long as their rules, minutes; tests/test_conformance_device.py runs them): exit 0, both reports written."""
    seed_device(tmp_path / "dut")
    device = RunningDevice(tmp_path / "dut")
    try:
        (tmp_path / "pw.txt").write_text(ADMIN[1] + "\n")
        assert device.device_service is not None
        shell.subst = {"http://192.0.2.10/onvif/device_service": device.device_service,
                       "pw.txt": str(tmp_path / "pw.txt"), "192.0.2.1:0": "127.0.0.1:0",
                       "conformance.xml": str(tmp_path / "conformance.xml"),
                       "conformance.html": str(tmp_path / "conformance.html")}
        text = block("docs/conformance-kit.md", "--junit conformance.xml --html conformance.html")
        assert all(old in text for old in shell.subst), shell.subst
        out = shell.run("sh", text.rstrip() + " --skip-long\n")
    finally:
        device.stop()
    assert "PASS  UPLINK-1-1-1" in out and "SKIP  EXT-SILENCE" in out and "PASSED: " in out, out
    assert (tmp_path / "conformance.xml").read_text().count("<testcase ") > 10
    assert "PASSED" in (tmp_path / "conformance.html").read_text()


def test_conformance_cloud_blocks(tmp_path: Path, shell: Quickstart) -> None:
    """docs/conformance-kit.md "Test a cloud": the mTLS command against our cloud, and the wss command with a
    client-credentials token against our cloud taking tokens only (the authorization server's certificate
    trusted through ``SSL_CERT_FILE``, the system store the tool uses without --token-ca)."""
    certs = UplinkPki(tmp_path / "pki")
    device_cert, device_key = certs.device_files("probe-1")
    cloud = RunningCloud(certs)
    try:
        shell.subst = {"https://cloud.example.com:8443/uplink": cloud.uplink_url(), "device.pem": str(device_cert),
                       "device.key": str(device_key), "cloud-ca.pem": str(certs.ca_file),
                       "cloud.html": str(tmp_path / "cloud.html")}
        mtls = shell.run("sh", block("docs/conformance-kit.md", "--ca cloud-ca.pem --html cloud.html"))
    finally:
        cloud.stop()
    assert "PASS  CLOUD-TLS" in mtls and "SKIP  CLOUD-REQUEST" in mtls and "PASSED: " in mtls, mtls
    assert "PASSED" in (tmp_path / "cloud.html").read_text()

    world = TokenWorld(certs, tmp_path)
    try:
        (tmp_path / "secret.txt").write_text(CLIENT_SECRET + "\n")
        shell.subst = {"wss://cloud.example.com/uplink": world.uplink_url.replace("https://", "wss://"),
                       "cloud-ca.pem": str(certs.ca_file), "https://auth.example.com/": world.app.issuer + "/",
                       "cam-7": "cam-t", "secret.txt": str(tmp_path / "secret.txt")}
        shell.env["SSL_CERT_FILE"] = str(certs.ca_file)
        tokens = shell.run("sh", block("docs/conformance-kit.md", "--token-server https://auth.example.com/"))
    finally:
        world.stop()
    assert "PASS  CLOUD-WSS" in tokens and "PASS  CLOUD-TOKEN" in tokens and "PASSED: " in tokens, tokens


def test_conformance_fixture_block(tmp_path: Path) -> None:
    """docs/conformance-kit.md "In your own pytest suite": the test function, in a project of its own, passes
    with the installed plugin's fixtures against the library's own device."""
    (tmp_path / "test_snippet.py").write_text(block("docs/conformance-kit.md",
                                                    "def test_device_conformance(conformance, device):"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_snippet.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=WAIT * 2, check=False)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def commands(text: str) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments and blank lines left out."""
    joined = text.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_hierarchy_block(tmp_path: Path, shell: Quickstart) -> None:
    """docs/hierarchy.md "Running a two-level hierarchy", in a folder of its own, each ``serve`` in the
    background: the regional VSS's client finds the device's media profile near the point, through the site
    VSS and the device's uplink (the device's resources.jsonl and the client's pw.txt made by the test)."""
    (tmp_path / "resources.jsonl").write_text(json.dumps({
        "token": "cam-device:main", "kind": "MediaProfile", "name": "Gate camera main stream",
        "location": {"lon": 8.5417, "lat": 47.3769}, "scopes": [], "offline": False}) + "\n")
    (tmp_path / "pw.txt").write_text("admin-pw\n")
    shell.subst = {f"127.0.0.1:{port}": f"127.0.0.1:{free_port()}" for port in (8081, 8555, 8443, 8082, 9080, 9554)}
    setup: list[str] = []
    query = ""
    for command in commands(block("docs/hierarchy.md", "iec62676 vss lower add --data regional --prefix site")):
        if " serve " in command:
            shell.run("sh", "\n".join([f"cd {tmp_path}", *setup]))
            setup = []
            shell.start(f"cd {tmp_path}\n{command}", "device serving")
        elif command.startswith("iec62676 query "):
            query = f"cd {tmp_path}\n{command}"
        else:
            setup.append(command)
    assert query and not setup

    def found() -> bool:
        return "\ncam-device:main\tMediaProfile\tGate camera main stream\t47.376900,8.541700\t" in shell.run("sh", query)
    wait_until(found, WAIT, what="the device's media profile at the regional VSS")


def test_hierarchy_prefix_error_sample(tmp_path: Path, shell: Quickstart) -> None:
    """The line docs/hierarchy.md shows for ``vss lower add --url`` without ``--prefix`` is what the command
    prints for a device whose SerialNumber is ``A886F5A70B18`` (its device-info.json), with exit status 2."""
    seed_device(tmp_path / "device")
    (tmp_path / "device" / "device-info.json").write_text('{"serial_number": "A886F5A70B18"}')
    device = RunningDevice(tmp_path / "device")
    try:
        assert device.device_service is not None
        done = subprocess.run(["iec62676", "vss", "lower", "add", "--data", str(tmp_path / "vss"), "--url",
                               device.device_service, "--user", "admin", "--password", "admin-pw"],
                              env=shell.env, capture_output=True, text=True, timeout=WAIT, check=False)
    finally:
        device.stop()
    assert done.returncode == 2 and done.stderr == block("docs/hierarchy.md", "is not an Annex A device ID"), done


def test_examples_resources_block(tmp_path: Path, shell: Quickstart) -> None:
    """examples/README.md "Load it into a device": 300 resources loaded, one camera's listed by its prefix, the
    JSON listing holds the same lines as the file, one token removed."""
    shell.subst = {"/tmp/camera": str(tmp_path / "camera"), "/tmp/copy.jsonl": str(tmp_path / "copy.jsonl")}
    out = shell.run("sh", block("examples/README.md", "iec62676 device resources load --data /tmp/camera"))
    loaded, *listed, removed = out.splitlines()
    assert loaded == "examples/resources-city.jsonl: 300 added, 0 changed; 300 resource(s) in the registry"
    assert sorted(line.split("\t")[0] for line in listed) == [
        "32010003071321000001:Profile_1", "32010003071321000001:Profile_2", "32010003071321000001:Recording_1",
        "32010003071321000001:VideoSource_1"]
    original = (ROOT / "examples" / "resources-city.jsonl").read_text().splitlines()
    assert sorted((tmp_path / "copy.jsonl").read_text().splitlines()) == sorted(original)
    assert removed == "resource 32010003071321000001:Profile_2 removed"


def test_examples_sampledata_block(tmp_path: Path, shell: Quickstart) -> None:
    """examples/README.md "to regenerate it": the generator writes the committed file byte for byte. The second
    command runs with 1,000 resources instead of a million (384 MB, about 20 s)."""
    shell.subst = {"--out examples/resources-city.jsonl": f"--out {tmp_path / 'city.jsonl'}",
                   "--count 1000000 --out /tmp/million.jsonl": f"--count 1000 --out {tmp_path / 'million.jsonl'}"}
    text = block("examples/README.md", "python -m iec62676_2_33.testing.sampledata --count 300")
    assert all(old in text for old in shell.subst)
    shell.run("sh", text)
    assert (tmp_path / "city.jsonl").read_bytes() == (ROOT / "examples" / "resources-city.jsonl").read_bytes()
    assert len((tmp_path / "million.jsonl").read_text().splitlines()) == 1000


def test_examples_device_info_block(tmp_path: Path) -> None:
    """examples/README.md "Device information": the file as written is what GetDeviceInformation and GetScopes
    of ``device serve`` answer."""
    import zeep
    from zeep.wsse.username import UsernameToken

    from iec62676_2_33.schemas import wsdl_path

    seed_device(tmp_path / "device")
    (tmp_path / "device" / "device-info.json").write_text(block("examples/README.md", '{"manufacturer": "Acme"'))
    device = RunningDevice(tmp_path / "device")
    try:
        client = zeep.Client(str(wsdl_path("devicemgmt")), wsse=UsernameToken(*ADMIN, use_digest=True))
        service = client.create_service("{http://www.onvif.org/ver10/device/wsdl}DeviceBinding",
                                        device.device_service)
        info = service.GetDeviceInformation()
        scopes = [s.ScopeItem for s in service.GetScopes()]
    finally:
        device.stop()
    assert (info.Manufacturer, info.Model, info.FirmwareVersion, info.SerialNumber, info.HardwareId) == (
        "Acme", "Cam 5000", "7.1", "A123", "HW-1")
    assert scopes == ["onvif://www.onvif.org/name/Gate%203", "onvif://www.onvif.org/hardware/Cam%205000",
                      "onvif://www.onvif.org/location/city/nanjing",
                      "onvif://www.onvif.org/location/building/central-station"]
