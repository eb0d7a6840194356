"""Shared pieces of the uplink benchmarks (not a benchmark itself).

* certificates made at run time (one CA, the cloud's server certificate, device
  certificates made inside the simulator processes);
* a cloud process (``run_cloud``) that reports its device count and RSS over a pipe;
* simulated devices: our TLS transport + ``UpgradeClient`` (``dial.upgrade``) +
  ``H2ServerRole`` driven by ``H2Driver`` — a device without services, so
  thousands fit in one process.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from iec62676_2_33 import pki
from iec62676_2_33.http2.server import H2ServerRole
from iec62676_2_33.runtime.dial import upgrade
from iec62676_2_33.runtime.h2driver import H2Driver
from iec62676_2_33.transport.contexts import client_context
from iec62676_2_33.transport.tls import connect_tls


def raise_nofile() -> int:
    """Raise the open-files limit to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> str:
    return (f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


@dataclass
class Certs:
    dir: Path

    @classmethod
    def make(cls) -> Certs:
        d = Path(tempfile.mkdtemp(prefix="uplink-bench-"))
        ca = pki.make_ca("bench CA")
        ca.write(d, "ca")
        pki.make_leaf(ca, "cloud", kind="server", sans=["localhost", "127.0.0.1"]).write(d, "cloud")
        return cls(d)

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    def ca(self) -> pki.CertKey:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        return pki.CertKey(pki.load_cert_pem(self.dir / "ca.pem"),
                           load_pem_private_key((self.dir / "ca.key").read_bytes(), None))  # type: ignore[arg-type]

    def seed_device(self, cn: str, cloud_port: int) -> Path:
        """A device data folder (``<dir>/device``): a client certificate for ``cn``, a policy trusting this CA and
        one Operator uplink to ``https://localhost:<cloud_port>/uplink``."""
        from iec62676_2_33.store import DeviceStore
        from iec62676_2_33.uplinkconfig import UplinkConfiguration

        data = self.dir / "device"
        leaf = pki.make_leaf(self.ca(), cn, kind="client")
        with DeviceStore(data) as store:
            store.put_certificate("c", leaf.cert_pem(), leaf.key_pem())
            store.put_policy("p", [self.ca_file.read_bytes()])
            store.put_uplink(UplinkConfiguration(remote_address=f"https://localhost:{cloud_port}/uplink",
                                                 user_level=("Operator",), certificate_id="c",
                                                 cert_path_validation_policy_id="p"), max_uplinks=8)
        return data


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_of(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


# -- the cloud process ---------------------------------------------------------------------

def cloud_main(conn: object, certs_dir: str, port: int, proxy: bool = False) -> None:
    """Run ``run_cloud`` on ``port``; answer "count" with (devices, rss, accepted) on ``conn``."""
    import gc

    from iec62676_2_33.runtime.cloud import ListenerSettings
    from iec62676_2_33.runtime.cloud_server import CloudOptions, run_cloud
    from iec62676_2_33.sansio.admission import AdmissionLimits

    raise_nofile()
    # The whole simulated fleet dials from 127.0.0.1, one source: the per-source limits, meant for
    # floods, would throttle it; the global cap and eviction stay as in production.
    settings = ListenerSettings(admission=AdmissionLimits(per_source_pending=None, rate=None))
    d = Path(certs_dir)
    options = CloudOptions(listen=f"127.0.0.1:{port}", cert=d / "cloud.pem", key=d / "cloud.key",
                           client_cas=[d / "ca.pem"], proxy="127.0.0.1:0" if proxy else None)
    pipe = conn  # multiprocessing Connection

    async def main() -> None:
        stop = asyncio.Event()
        holder: list[object] = []
        task = asyncio.create_task(run_cloud(options, stop, lambda _t: None, settings=settings,
                                             ready=holder.append))
        while not holder:
            await asyncio.sleep(0.01)
        cloud = holder[0]
        pipe.send("ready")  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        while True:
            msg = await loop.run_in_executor(None, pipe.recv)  # type: ignore[attr-defined]
            if msg == "stop":
                break
            if msg == "gc":
                gc.collect()
            pipe.send((len(cloud.devices()), rss_of(os.getpid())))  # type: ignore[attr-defined, union-attr]
        stop.set()
        await task

    asyncio.run(main())


# -- simulated devices -----------------------------------------------------------------------

async def sim_connect(port: int, ctx: object, url: str, local_addr: tuple[str, int] | None = None) -> H2Driver:
    """Dial (from ``local_addr``, if given), upgrade and start serving HTTP/2 (no services);
    returns the running driver."""
    loop = asyncio.get_running_loop()
    stream = await connect_tls("127.0.0.1", port, ctx, server_hostname="localhost", timeout=60,  # type: ignore[arg-type]
                               local_addr=local_addr)
    trailing = await upgrade(stream, url)
    role = H2ServerRole(now=loop.time())
    driver = H2Driver(stream, role, lambda _ev: None, name="sim")
    driver.task = asyncio.create_task(driver.run(trailing))  # type: ignore[attr-defined]
    return driver


def device_contexts(certs_dir: str, prefix: str, n: int) -> list[object]:
    """``n`` TLS client contexts, each with its own device certificate (CN ``prefix-i``)."""
    certs = Certs(Path(certs_dir))
    ca = certs.ca()
    anchors = [certs.ca_file.read_bytes()]
    out = []
    for i in range(n):
        leaf = pki.make_leaf(ca, f"{prefix}-{i}", kind="client")
        out.append(client_context(cafile_pems=anchors, certfile_pem=leaf.cert_pem(), keyfile_pem=leaf.key_pem()))
    return out


def sim_main(conn: object, port: int, certs_dir: str, prefix: str, n: int, parallel: int = 48) -> None:
    """A simulator process: ``n`` idle devices connected to the cloud on ``port``; reports
    ("up", count) and holds them until it receives "stop"."""
    raise_nofile()
    contexts = device_contexts(certs_dir, prefix, n)
    url = f"https://localhost:{port}/uplink"

    async def main() -> None:
        sem = asyncio.Semaphore(parallel)
        drivers: list[H2Driver] = []

        async def one(ctx: object) -> None:
            error: BaseException | None = None
            for _ in range(10):
                async with sem:
                    try:
                        drivers.append(await sim_connect(port, ctx, url))
                        return
                    except (OSError, Exception) as exc:  # noqa: BLE001 - retried, then reported
                        error = exc
                await asyncio.sleep(0.5)
            raise RuntimeError(f"a simulated device could not connect: {error}")

        await asyncio.gather(*(one(c) for c in contexts))
        conn.send(("up", len(drivers)))  # type: ignore[attr-defined]
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # type: ignore[attr-defined]
        for d in drivers:
            d.close("benchmark over")
        await asyncio.gather(*(d.task for d in drivers), return_exceptions=True)  # type: ignore[attr-defined]

    asyncio.run(main())
