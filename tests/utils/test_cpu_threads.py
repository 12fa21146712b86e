"""``cpu_threads=``: torch's intra-op threads for CPU runs, from the cores a process may use and the load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_module

from cxr_ldm.utils.cpu_threads import (
    choose_cpu_threads,
    cpu_threads_applied,
    others_busy,
    parse_cpu_threads,
    usable_cores,
)

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("cores", "load", "ranks", "expected"),
    [
        (2, 0.0, 1, 2),   # an idle 2-core machine: both
        (2, 0.4, 1, 2),   # below half a core busy: still both
        (2, 1.2, 1, 1),   # another process keeps a core busy: one thread
        (2, 7.0, 1, 1),   # however busy, at least one
        (16, 3.6, 1, 12),  # 4 of 16 cores busy
        (16, 0.0, 4, 4),  # four ranks on a node share its cores
        (4, 1.0, 2, 1),   # 3 free cores over 2 ranks
    ],
)
def test_auto_counts_the_free_cores_and_splits_them_over_the_ranks(cores, load, ranks, expected):
    choice = choose_cpu_threads("auto", ranks_per_node=ranks, cores=cores, load=load, environ={})
    assert choice.threads == expected
    assert f"{cores} usable cores" in choice.reason and f"other work on {load:.2f}" in choice.reason


def test_a_number_wins_then_omp_num_threads_then_auto():
    assert choose_cpu_threads(3, cores=2, load=0.0, environ={"OMP_NUM_THREADS": "1"}).threads == 3
    given = choose_cpu_threads("auto", cores=8, load=0.0, environ={"OMP_NUM_THREADS": "5"})
    assert (given.threads, given.reason) == (5, "OMP_NUM_THREADS=5")
    assert choose_cpu_threads(None, cores=2, load=0.0, environ={}) is None  # torch's own default


@pytest.mark.parametrize("bad", ["abc", 0, -2, 1.5, True, "2 threads"])
def test_a_wrong_value_is_refused_naming_the_option(bad):
    with pytest.raises(ValueError, match=r"^cpu_threads=.*: expected auto, a number of threads"):
        parse_cpu_threads(bad)


def test_the_usable_cores_follow_the_process_affinity():
    """A process pinned to one core (taskset, a SLURM allocation) counts one core, not the machine's."""
    assert usable_cores() == len(os.sched_getaffinity(0))
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from cxr_ldm.utils.cpu_threads import choose_cpu_threads, usable_cores; "
            "print(usable_cores(), choose_cpu_threads('auto', load=0.0, environ={}).threads)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_other_work_is_the_busy_ticks_less_this_process():
    # 2 cores, 100 ticks each over 1 s: 150 busy ticks = 1.5 cores busy, 0.5 s of them ours -> 1.0 core of others
    assert others_busy((1000, 5000), (1150, 5200), own_cpu_s=0.5, elapsed_s=1.0, n_cores=2) == pytest.approx(1.0)
    assert others_busy((0, 0), (20, 200), own_cpu_s=0.0, elapsed_s=1.0, n_cores=2) == pytest.approx(0.2)
    assert others_busy((0, 0), (100, 200), own_cpu_s=1.2, elapsed_s=1.0, n_cores=2) == 0.0  # never below 0


def test_a_busy_process_on_the_same_core_is_measured():
    """Real processes: pinned to one core beside a process that spins there, that core counts as busy."""
    code = ("import os, subprocess, sys, time\n"
            "core = sorted(os.sched_getaffinity(0))[0]\n"
            "os.sched_setaffinity(0, {core})\n"
            "spin = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
            "time.sleep(1.0)\n"
            "from cxr_ldm.utils.cpu_threads import busy_cores\n"
            "print(busy_cores(0.5))\n"
            "spin.kill()\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert float(out.stdout) >= 0.8


def test_the_choice_holds_for_the_run_and_is_put_back():
    before = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    choice = choose_cpu_threads(1, environ={})
    with cpu_threads_applied(choice):
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == before


@pytest.mark.slow
def test_a_training_run_steps_with_the_chosen_threads(tmp_path, shared_data_dir):
    probe = tmp_path / "threads.json"
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS / "utils"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": None}  # fmt: skip
    ran = run_module("cxr_ldm.train", "experiment=aekl_phantom", "debug=tiny", "cpu_threads=1",
                     f"paths.data_dir={shared_data_dir}", f"paths.output_dir={tmp_path / 'run'}",
                     "+callbacks.threads._target_=thread_probe.ThreadProbe", f"+callbacks.threads.path={probe}",
                     cwd=tmp_path, env=env)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(probe.read_text()) == {"threads": 1}
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert (info["cpu_threads"], info["cpu_threads_reason"]) == (1, "cpu_threads=1")


def test_a_wrong_value_stops_the_command_in_one_line_before_anything_runs(tmp_path):
    ran = run_module("cxr_ldm.train", "experiment=aekl_phantom", "debug=tiny", "cpu_threads=many",
                     f"paths.output_dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines()[-1] == (
        "error: cpu_threads=many: expected auto, a number of threads (1, 2, ...) or null (torch's default)")
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))
