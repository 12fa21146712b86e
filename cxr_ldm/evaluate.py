"""Evaluate generated chest X-rays (and the stage-1 autoencoder) against real images.

    python -m cxr_ldm.evaluate out_dir=eval metrics='[fid,kid,diversity]' ldm_ckpt=ldm.ckpt data_dir=prepared

Writes ``<out_dir>/metrics.json`` (one key per metric, plus the samples' count and seeds and the settings) and
prints a table beside the published reference figures. Metrics: recon, diversity, fid, kid, adherence,
memorization (docs/evaluation.md). The work is in :mod:`cxr_ldm.metrics.evaluation`.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from cxr_ldm.utils.cli import require_options


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    require_options(cfg, {"out_dir": "the folder to write metrics.json (and generated samples) into"},
                    "cxr_ldm.evaluate")  # fmt: skip
    from cxr_ldm.metrics.evaluation import EvaluationError, run_evaluation
    from cxr_ldm.metrics.features import XRVWeightsError

    try:
        return run_evaluation(cfg)
    except (EvaluationError, XRVWeightsError) as err:
        # SystemExit is not an Exception: Hydra lets it through, so the user sees one line and exit status 1.
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
