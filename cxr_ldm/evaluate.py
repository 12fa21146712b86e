"""Evaluate generated chest X-rays (and the stage-1 autoencoder) against real images.

    python -m cxr_ldm.evaluate out_dir=eval metrics='[fid,kid,diversity]' model=ldm.ckpt data_dir=prepared

Writes ``<out_dir>/metrics.json`` (one key per metric, plus the samples' count and seeds and the settings) and
prints a table beside the published reference figures. Metrics: recon, diversity, fid, kid, adherence,
memorization, ... (docs/evaluation.md). The work is in :mod:`cxr_ldm.evaluation.runner`.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from cxr_ldm.utils.cli import require_options, run_command


@hydra.main(version_base="1.3", config_path="conf/inference", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    require_options(cfg, {"out_dir": "the folder to write metrics.json (and generated samples) into"},
                    "cxr_ldm.evaluate")  # fmt: skip
    from cxr_ldm.evaluation.runner import run_evaluation

    return run_command(run_evaluation, cfg)

if __name__ == "__main__":
    main()
