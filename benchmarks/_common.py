"""Shared helpers of the benchmarks: timing, machine description, result files."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def per_op(fn: Callable[[], object], n: int, *, repeats: int = 5, warmup: int = 100) -> float:
    """Median seconds per call over ``repeats`` runs of ``n`` calls."""
    for _ in range(min(warmup, n)):
        fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n)
    return statistics.median(runs)


def interleaved(fns: dict[str, Callable[[], object]], *, run_seconds: float = 0.002,
                repeat: int = 50,
                timer: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Best seconds per call of each contender.  Short runs of the contenders alternate,
    so all see the same machine load, and each run lasts about ``run_seconds`` (sized per
    contender), so a slower one is not more likely to be preempted; the best run of each
    is its least disturbed one."""
    def run(fn: Callable[[], object], n: int) -> float:
        gc.disable()
        try:
            t = timer()
            for _ in range(n):
                fn()
            return (timer() - t) / n
        finally:
            gc.enable()

    sizes = {name: max(5, int(run_seconds / max(run(fn, 20), 1e-9))) for name, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            best[name] = min(best[name], run(fn, sizes[name]))
    return best


def write(name: str, data: dict[str, Any], table: str) -> None:
    """Write ``results/<name>.json`` and ``results/<name>.md``."""
    RESULTS.mkdir(exist_ok=True)
    data = {"machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    m = data["machine"]
    (RESULTS / f"{name}.md").write_text(
        f"{table}\n\nMachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"{m['system']}.\n")


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"
