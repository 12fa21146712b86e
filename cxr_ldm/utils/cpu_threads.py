"""How many intra-op threads torch uses for a run on CPUs (``cpu_threads=``).

torch starts one thread per core it sees, whatever else runs there. When another process already keeps a core
busy, its threads and ours take turns and every parallel region waits for the thread that lost its core: the
demo's stage-2 step at 2 threads beside one busy process on 2 cores is slower than at 1 thread
(benchmarks/cpu_threads.py, figures in docs/benchmarks.md; a demo under heavier sharing once ran 50x slower). So
``auto`` counts the cores this process may run on (``os.sched_getaffinity``: a SLURM allocation, ``taskset``,
a container's cpuset) less those other processes keep busy now, and splits them over the ranks of this node.
"Now" is the busy time of those cores in ``/proc/stat`` over half a second, less this process's own: the load
average lags by minutes and counts work that just ended (the demo's previous step made its stage 2 pick one
thread on an idle machine). ``OMP_NUM_THREADS``, when the user set it, wins over ``auto``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPTION = "cpu_threads"


@dataclass(frozen=True)
class ThreadChoice:
    """The number of threads and why (written to run_info.json and the log)."""

    threads: int
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not all the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _core_jiffies(cores: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks of ``cores`` since boot, from ``/proc/stat``; None where it cannot be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
            continue
        ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


def busy_cores(interval_s: float = 0.5) -> float:
    """Cores of this process's affinity that other processes keep busy, measured over ``interval_s``: their
    busy share in ``/proc/stat`` less this process's own CPU time; the 1-minute load average (capped at the
    usable cores) where ``/proc/stat`` is missing, 0 where neither is."""
    cores = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    before, own_before, start = _core_jiffies(cores), _own_cpu_s(), time.monotonic()
    if before is None:
        try:
            return min(float(len(cores)), max(0.0, os.getloadavg()[0]))
        except (AttributeError, OSError):
            return 0.0
    time.sleep(interval_s)
    after, own_after, elapsed = _core_jiffies(cores), _own_cpu_s(), time.monotonic() - start
    if after is None or after[1] <= before[1]:
        return 0.0
    return others_busy(before, after, own_after - own_before, elapsed, len(cores))


def others_busy(before: tuple[int, int], after: tuple[int, int], own_cpu_s: float, elapsed_s: float,
                n_cores: int) -> float:  # fmt: skip
    """Cores busy with other processes' work between two ``(busy, total)`` tick readings of ``n_cores`` cores,
    when this process used ``own_cpu_s`` of CPU time in the ``elapsed_s`` between them."""
    share = (after[0] - before[0]) / (after[1] - before[1])  # busy fraction of those cores
    return max(0.0, share * n_cores - own_cpu_s / max(elapsed_s, 1e-6))


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def parse_cpu_threads(setting: Any) -> int | str | None:
    """``cpu_threads=`` as given: a number of threads, ``"auto"`` or ``None``; anything else is refused."""
    if setting is None or (isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1):
        return setting
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return "auto"
    raise ValueError(f"{OPTION}={setting}: expected auto, a number of threads (1, 2, ...) or null (torch's default)")


def choose_cpu_threads(setting: Any, ranks_per_node: int = 1, cores: int | None = None, load: float | None = None,
                       environ: Mapping[str, str] | None = None) -> ThreadChoice | None:  # fmt: skip
    """Threads for each rank: ``None`` (torch's own default) for ``cpu_threads=null``, the number given, or
    ``auto``: the free cores of this node's affinity, split over its ranks, at least 1.

    ``load``: cores busy with other work (default: measured, :func:`busy_cores`). A core counts as busy from
    0.5 on (0.4 -> none busy, 1.5 -> 2); one core always counts as free.
    """
    setting = parse_cpu_threads(setting)
    if setting is None:
        return None
    if isinstance(setting, int):
        return ThreadChoice(setting, f"{OPTION}={setting}")
    environ = os.environ if environ is None else environ
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return ThreadChoice(int(given), f"OMP_NUM_THREADS={given}")
    ranks = max(1, int(ranks_per_node))
    cores = usable_cores() if cores is None else cores
    load = busy_cores() if load is None else load
    busy = min(cores - 1, math.floor(load + 0.5))
    threads = max(1, (cores - busy) // ranks)
    return ThreadChoice(threads, f"{OPTION}=auto: {cores} usable cores, other work on {load:.2f} ({busy} busy), {ranks} rank(s)")


@contextlib.contextmanager
def cpu_threads_applied(choice: ThreadChoice | None) -> Iterator[None]:
    """torch's intra-op threads and ``OMP_NUM_THREADS`` (read by the DDP ranks this run starts, and by
    Lightning's launchers, which otherwise divide all cores among the ranks) set for the run, then put back."""
    if choice is None:
        yield
        return
    import torch

    before_threads, before_env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(choice.threads)
    os.environ["OMP_NUM_THREADS"] = str(choice.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before_threads)
        if before_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before_env
