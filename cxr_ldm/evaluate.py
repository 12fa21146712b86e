"""Evaluate generated chest X-rays (and the stage-1 autoencoder) against real images.

    python -m cxr_ldm.evaluate out_dir=eval metrics='[fid,kid,diversity]' model=ldm.ckpt data_dir=prepared

Writes ``<out_dir>/metrics.json`` (one key per measure, plus the samples' count and seeds and the settings) and
``report.md``, and prints a table beside the published reference figures. Measures: recon, diversity, fid, kid,
adherence, memorization, fid_raddino, kid_raddino, prdc, alignment, reid, per_pathology (docs/evaluation.md).
With ``-m`` (e.g. ``sampling.guidance_scale=1,3,7``) each job writes to ``out_dir/<job>`` and the sweep's report
goes to ``out_dir/report.md``. The work is in :mod:`cxr_ldm.evaluation`.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cxr_ldm.utils import resolvers  # noqa: F401  (registers the resolvers --help and the configs use)
from cxr_ldm.utils.cli import INFERENCE_CONF, hydra_command, require_options, run_command


@hydra_command(config_path=INFERENCE_CONF, config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    require_options(cfg, {"out_dir": "the folder to write metrics.json (and generated samples) into"},
                    "cxr_ldm.evaluate")  # fmt: skip
    from cxr_ldm.evaluation.runner import run_evaluation
    from cxr_ldm.evaluation.sweep import use_job_dir

    return run_command(run_evaluation, use_job_dir(cfg))


if __name__ == "__main__":
    main()
