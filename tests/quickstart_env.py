"""Test helper for documents run as written: :class:`Quickstart` runs their shell and Python blocks from the
repository's root, with the venv's ``iec62676`` first on PATH, the documents' fixed folder and ports replaced
by a temporary folder and free ports, and its long-running blocks as background servers (started, waited for,
stopped; none may log a traceback). Every wait is bounded by :data:`WAIT`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from helpers import free_port

from iec62676_2_33.testing.harness import wait_until

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0


class Quickstart:
    """The README's fixed folder and ports replaced by a temporary folder and free ports."""

    def __init__(self, folder: Path) -> None:
        self.subst = {"/tmp/iec62676-quickstart": str(folder)}
        for port in ("8443", "8080", "8081"):
            self.subst[f"127.0.0.1:{port}"] = f"127.0.0.1:{free_port()}"
            self.subst[f"localhost:{port}"] = self.subst[f"127.0.0.1:{port}"].replace("127.0.0.1", "localhost")
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "IEC62676_PASSWORD": "change me"}
        self.servers: list[tuple[subprocess.Popen[str], list[str]]] = []

    def text(self, block: str) -> str:
        for old, new in self.subst.items():
            block = block.replace(old, new)
        return block

    def run(self, kind: str, block: str) -> str:
        argv = ["bash", "-euo", "pipefail", "-c", self.text(block)] if kind == "sh" else \
            [sys.executable, "-c", self.text(block)]
        proc = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=WAIT,
                              check=False)
        assert proc.returncode == 0, f"{block}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        return proc.stdout

    def start(self, block: str, ready: str) -> list[str]:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", self.text(block)], cwd=ROOT, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        out: list[str] = []
        err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
        threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
        self.servers.append((proc, err))
        wait_until(lambda: any(ready in line for line in out) or proc.poll() is not None, WAIT, what=f"{ready!r}")
        assert proc.poll() is None, "".join(err)
        return err

    def stop(self) -> None:
        for proc, _ in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, err in self.servers:
            proc.wait(WAIT)
            assert "Traceback" not in "".join(err), "".join(err)
