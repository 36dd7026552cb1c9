"""Interleaved timing on a noisy shared machine.

Each repetition runs every candidate once, in turn (ours, theirs, ours, theirs, ...), so that a
burst of load from a neighbour hits both sides alike; ratios are taken per repetition and then
summarised, which cancels slow drift better than a ratio of two separate medians.

Two clocks are read around every call: wall time (what a user waits) and this process's CPU time
(`time.process_time`), which ignores the time neighbours hold the cores and so stays steady on a
busy machine; it also counts OpenMP threads spinning idle, which both sides do alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict:
    """{clock: {candidate: [seconds per call]}} over `repeats` rounds after `warmup` untimed ones."""
    times = {clock: {name: [] for name in candidates} for clock in CLOCKS}
    for round_index in range(warmup + repeats):
        for name, fn in candidates.items():
            start = {clock: read() for clock, read in CLOCKS.items()}
            fn()
            if round_index >= warmup:
                for clock, read in CLOCKS.items():
                    times[clock][name].append(read() - start[clock])
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def ratio(times: dict, numerator: str, denominator: str, clock: str = "wall") -> dict:
    """Median of the per-round ratios numerator/denominator, with its interquartile range."""
    ratios = [a / b for a, b in zip(times[clock][numerator], times[clock][denominator], strict=True)]
    q1, median, q3 = quartiles(ratios)
    return {"median": round(median, 3), "iqr": (round(q1, 3), round(q3, 3))}


def median_ms(times: dict, clock: str = "wall") -> dict[str, float]:
    """Median milliseconds per call of every candidate."""
    return {name: round(1000 * statistics.median(values), 1) for name, values in times[clock].items()}


def run_child(command: list[str], env: dict, what: str) -> dict:
    """Run `command` to completion in a child process: {"wall_s", "cpu_s" (its user + system time),
    "peak_rss_mb" (its own maximum resident set, wait4 rusage)}. A failure raises with the tail of
    its stderr, naming `what`. stderr goes to a file: a pipe read only after wait4 would block a
    child that fills it."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            raise RuntimeError(f"{what} failed:\n{stderr.read().decode(errors='replace')[-3000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024)}
