"""Hydra multirun of the evaluation, e.g. a guidance-scale sweep: one folder per job, one report over them all.

    python -m cxr_ldm.evaluate -m out_dir=eval/sweep model=ldm.ckpt data_dir=... \
        metrics='[fid_raddino,alignment]' sampling.guidance_scale=1,3,5,7,9

evaluate.yaml puts job ``k`` in ``out_dir/k`` (``hydra.sweep.dir`` / ``subdir``), where :func:`use_job_dir`
points the job's ``out_dir`` (its samples, metrics.json, report.md). A job only sees its own results, so the
sweep's report is written when the whole multirun ends, by the Hydra callback :class:`SweepReport` that
evaluate.yaml registers: ``out_dir/report.md`` with FID against alignment, one point per guidance scale.
The same report can be written again later with ``python -m cxr_ldm.report --sweep-dir out_dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def use_job_dir(cfg: DictConfig) -> DictConfig:
    """In a Hydra multirun, ``out_dir`` becomes this job's folder (``out_dir/<job number>``); else unchanged."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return cfg
    with open_dict(cfg):
        cfg.out_dir = str(HydraConfig.get().runtime.output_dir)
    return cfg


class SweepReport(Callback):
    """At the end of a multirun: ``<sweep dir>/report.md`` over the jobs' ``metrics.json`` files."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from cxr_ldm.evaluation.sweep_report import write_sweep_report

        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        try:
            written = write_sweep_report(sweep_dir)
        except (FileNotFoundError, ValueError) as err:  # no job finished, or runs without a guidance scale
            log.warning("no sweep report for %s: %s", sweep_dir, err)
            return
        print(f"wrote {written['report']}")
