"""Measure one piece of work in a fresh subprocess: wall time of the work itself and the
peak resident memory of the whole process, with the same thread count on every side."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field

THREADS = int(os.environ.get("MALAFLOW_BENCH_THREADS", "1"))


@dataclass
class Measurement:
    seconds: float | None
    peak_mb: float
    note: str = ""
    extra: dict = field(default_factory=dict)


def measure(module: str, function: str, *args) -> Measurement:
    """Run ``module.function(*args)`` in a new interpreter; it returns the seconds its
    work took, or a dict with ``seconds`` and further results (or raises). Report these
    and the peak RSS of that interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    code = (
        "import json, sys, torch\n"
        f"torch.set_num_threads({THREADS})\n"
        f"from {module} import {function}\n"
        f"seconds = {function}(*json.loads(sys.argv[1]))\n"
        # VmHWM, not ru_maxrss: the latter survives exec and may be the parent's
        "peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024\n"
        "print('RESULT', json.dumps([seconds, peak]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        if "Cannot open input script" in last:
            last = "its LAMMPS input script " + last.split("inputfiles/")[-1].split(":")[0] + " is not installed"
        return Measurement(None, float("nan"), last[:160])
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    result, peak = json.loads(line[7:])
    extra = dict(result) if isinstance(result, dict) else {"seconds": result}
    return Measurement(float(extra.pop("seconds")), float(peak), extra=extra)


def machine() -> str:
    """One line describing this machine, for RESULTS.md."""
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 2**20
    except OSError:
        mem = float("nan")
    return f"{cpu}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, Python {platform.python_version()}, {THREADS} thread(s) per side"


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
