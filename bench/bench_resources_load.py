#!/usr/bin/env python3
"""``iec62676 device resources load`` of a 1,000,000-line file: peak memory and time (issue 15).

The file is written once by :func:`iec62676_2_33.testing.sampledata.write_jsonl` into
``/tmp/iec62676-bench`` and reused. Each measured command runs as a process
of its own; its peak resident set size is the kernel's ``ru_maxrss``
(``os.wait4``), its time the wall clock. Baselines from the same run:

* memory: ``iec62676 device resources list`` on an empty device (the CLI,
  the registry and SQLite loaded, no work) — the load's peak minus this is
  what loading costs;
* time: one Python pass over the file doing only ``json.loads`` of each line
  (the floor of any loader of this format).

Goal: peak RSS < 200 MiB for 1,000,000 lines (the loader streams; before, it
held every resource and every event: 1.38 GB).

Usage: ``python bench/bench_resources_load.py [--count 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iec62676_2_33.testing.sampledata import write_jsonl

CACHE = Path(tempfile.gettempdir()) / "iec62676-bench"
CLI = [sys.executable, "-m", "iec62676_2_33"]


def measured(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a child process; it must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit status {proc.returncode}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    source = CACHE / f"resources-{args.count}.jsonl"
    if not source.exists():
        write_jsonl(source, args.count)
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        empty = work / "empty"
        subprocess.run([*CLI, "device", "resources", "load", "--data", str(empty), os.devnull], check=True,
                       stdout=subprocess.DEVNULL)
        _, base_rss = measured([*CLI, "device", "resources", "list", "--data", str(empty)])
        parse_only = "import json, sys\nfor line in open(sys.argv[1], 'rb'): json.loads(line)"
        parse_s, _ = measured([sys.executable, "-c", parse_only, str(source)])
        load_s, load_rss = measured([*CLI, "device", "resources", "load", "--data", str(work / "dev"), str(source)])
        again_s, again_rss = measured([*CLI, "device", "resources", "load", "--data", str(work / "dev"), str(source)])
    finally:
        shutil.rmtree(work)
    size = source.stat().st_size / 2**20
    print(json.dumps({"lines": args.count, "file_mib": round(size, 1)}))
    print(f"baseline: CLI on an empty device: peak RSS {base_rss:.0f} MiB; json.loads of every line: {parse_s:.1f} s")
    print(f"load into an empty device:   {load_s:6.1f} s ({load_s / parse_s:.1f}x the parse-only pass), "
          f"peak RSS {load_rss:.0f} MiB (+{load_rss - base_rss:.0f} MiB over the baseline)")
    print(f"load again (all unchanged):  {again_s:6.1f} s ({again_s / parse_s:.1f}x), peak RSS {again_rss:.0f} MiB")
    goal = load_rss < 200 and again_rss < 200
    print(f"goal peak RSS < 200 MiB: {'met' if goal else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
