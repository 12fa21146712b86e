"""``python -m cxr_ldm.report RUN [--sweep JOB ...] [--out DIR]``: (re)write an evaluation's ``report.md``.

``RUN`` is a ``metrics.json`` written by ``python -m cxr_ldm.evaluate`` or its folder; ``--sweep-dir DIR`` writes
the report of a whole ``-m sampling.guidance_scale=...`` multirun folder instead (``cxr_ldm/evaluation/report.py``, ``sweep_report.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cxr_ldm.evaluation.report import rewrite_run_report
from cxr_ldm.evaluation.sweep_report import write_sweep_report
from cxr_ldm.utils.cli import run_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cxr_ldm.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="a metrics.json, or the folder holding it")
    parser.add_argument("--sweep-dir", default=None, help="a multirun's out_dir: report over all its jobs")
    parser.add_argument("--sweep", nargs="+", default=None, help="metrics.json files or folders of a sweep")
    parser.add_argument("--out", default=None, help="where report.md goes (default: the run's folder)")
    return parser


def _report(args: argparse.Namespace) -> None:
    if args.sweep_dir:
        print(write_sweep_report(args.sweep_dir, args.out)["report"])
    else:
        print(rewrite_run_report(args.run, args.out, args.sweep)["report"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.run and not args.sweep_dir:
        parser.error("give RUN (a metrics.json or its folder) or --sweep-dir DIR")
    run_command(_report, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
