"""``python -m cxr_ldm.train experiment=NAME [overrides]``: one entry point for every training stage.

Hydra composes data, model, trainer, logger and callbacks; ``cxr_ldm/training/run.py`` wires them together
(lightning-hydra-template style). Returns ``optimized_metric`` so sweeps can optimise it. ``--help`` lists the
config groups and options.

What a run adds around ``Trainer.fit`` (docs/reliability.md): ``run_info.json`` in the run folder; checkpoint
files that are complete or absent; a NaN/Inf guard (``nonfinite.*``); ``last.ckpt`` on Ctrl-C (or SLURM's
signals); and user errors (a wrong path, a foreign file, a full disk) as one line, no traceback.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from cxr_ldm.callbacks.nonfinite import (
    NonFiniteLossError,
    NonFiniteLossReportedByRankZero,
    NonFiniteWeightsError,
)
from cxr_ldm.training.run import is_multirun, train
from cxr_ldm.training.sweep_metric import metric_value
from cxr_ldm.utils import resolvers  # noqa: F401  (registers ${run_id:}, ${slurm_gpus:})
from cxr_ldm.utils.atomic import DiskFullError
from cxr_ldm.utils.cli import CONF, hydra_command, run_command
from cxr_ldm.utils.distributed import DDPRankLostError

# what a user can fix: one line on stderr (utils/cli.run_command), CXR_LDM_TRACEBACK=1 for the traceback
USER_ERRORS = (ValueError, FileNotFoundError, DiskFullError, NonFiniteLossError, NonFiniteWeightsError,
               DDPRankLostError)  # fmt: skip


def _main(cfg: DictConfig) -> float | None:
    try:
        metrics, objects = train(cfg)
    except NonFiniteLossReportedByRankZero:
        sys.exit(1)  # DDP: rank 0 prints the one message (callbacks/nonfinite.py); this rank only stops with it
    return metric_value(metrics, cfg.get("optimized_metric"), is_multirun(), objects.get("no_validation"))


@hydra_command(config_path=CONF, config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_command(_main, cfg, user_errors=USER_ERRORS)


if __name__ == "__main__":
    main()
