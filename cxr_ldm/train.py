"""``python -m cxr_ldm.train experiment=NAME [overrides]``: one entry point for every training stage.

Hydra composes data, model, trainer, logger and callbacks; this file only wires them together
(lightning-hydra-template style). Returns ``optimized_metric`` so sweeps can optimise it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from cxr_ldm.utils import resolvers  # noqa: F401  (registers ${run_id:})
from cxr_ldm.utils.checkpoints import resolve_ckpt_path
from cxr_ldm.utils.config_tree import print_config_tree
from cxr_ldm.utils.distributed import RankSeeds, fix_hydra_multirun_children
from cxr_ldm.utils.instantiate import instantiate_callbacks, instantiate_loggers
from cxr_ldm.utils.slurm import default_ckpt_path, slurm_trainer_extras

log = logging.getLogger(__name__)
# MONAI imports optuna when it is installed (for hparams_search=), and optuna's alembic logs at INFO on import
logging.getLogger("alembic").setLevel(logging.WARNING)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit (and optionally test) the configured model; returns the final metrics and the built objects."""
    output_dir = Path(cfg.paths.output_dir)
    print_config_tree(cfg, save_to=output_dir / "config_tree.yaml", show=cfg.get("print_config", True))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    log.info("instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model, _convert_="all")
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    # under SLURM: ranks from SLURM, a checkpoint and a requeue on the time-limit signal (utils/slurm.py)
    slurm_callbacks, plugins = slurm_trainer_extras(cfg.get("slurm"), output_dir / "checkpoints")
    if cfg.get("seed") is not None:  # same initial weights on every rank, different random draws
        callbacks.append(RankSeeds(cfg.seed))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks + slurm_callbacks, logger=loggers or False, plugins=plugins or None
    )
    fix_hydra_multirun_children(trainer)  # DDP children of a local multirun job run that job

    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    try:
        if cfg.get("train", True):
            ckpt_path = resolve_ckpt_path(default_ckpt_path(cfg.get("ckpt_path")), output_dir)
            if ckpt_path:
                log.info("resuming from %s", ckpt_path)
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
            metrics.update(_as_floats(trainer.callback_metrics))
            metrics.update(_best_scores(trainer))
        if cfg.get("test", False):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if not best:
                log.warning("no best checkpoint found; testing the current weights")
            trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(_as_floats(trainer.callback_metrics))
    finally:
        _finish_wandb()
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


def _best_scores(trainer: L.Trainer) -> dict[str, float]:
    """``best/<monitor>``: the score of the checkpoint ModelCheckpoint kept (what a sweep should compare)."""
    ckpt = trainer.checkpoint_callback
    if ckpt is None or not getattr(ckpt, "monitor", None) or ckpt.best_model_score is None:
        return {}
    return {f"best/{ckpt.monitor}": float(ckpt.best_model_score)}


def _as_floats(metrics: dict) -> dict[str, float]:
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


def _finish_wandb() -> None:
    """Close this job's wandb run, so every job of a sweep gets (and finishes) its own run."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def metric_value(metrics: dict[str, float], name: str | None) -> float | None:
    if not name:
        return None
    if name not in metrics:
        raise KeyError(
            f"optimized_metric={name} was not logged; logged metrics: {sorted(metrics)}. "
            f"Set optimized_metric to one of them."
        )
    # the kept (best) checkpoint's score when ModelCheckpoint monitors this metric, else the last value
    value = metrics.get(f"best/{name}", metrics[name])
    log.info("optimized_metric %s = %s", name, value)
    return value


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
