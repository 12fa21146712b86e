"""``python -m cxr_ldm.train experiment=NAME [overrides]``: one entry point for every training stage.

Hydra composes data, model, trainer, logger and callbacks; this file only wires them together
(lightning-hydra-template style). Returns ``optimized_metric`` so sweeps can optimise it.

What it adds around ``Trainer.fit`` (docs/reliability.md): ``run_info.json`` in the run folder; checkpoint
files that are complete or absent (``utils/checkpoints.py``), checked before fitting when given by
``ckpt_path=`` or ``model.autoencoder_ckpt=``; a NaN/Inf guard (``nonfinite.*``); ``last.ckpt`` on Ctrl-C
(or SLURM's signals); and user errors (a wrong path, a foreign file, a full disk) as one line, no traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from cxr_ldm.callbacks.interrupt import CheckpointOnInterrupt, TrainingInterrupted
from cxr_ldm.callbacks.nonfinite import NonFiniteGuard, NonFiniteLossError, NonFiniteWeightsError
from cxr_ldm.utils import resolvers  # noqa: F401  (registers ${run_id:}, ${slurm_gpus:})
from cxr_ldm.utils.atomic import DiskFullError
from cxr_ldm.utils.checkpoints import (
    AtomicCheckpointIO,
    check_autoencoder_checkpoint,
    check_resume_checkpoint,
    load_checkpoint_file,
    resolve_ckpt_path,
)
from cxr_ldm.utils.cli import run_command
from cxr_ldm.utils.config_tree import print_config_tree
from cxr_ldm.utils.distributed import RankSeeds, fix_hydra_multirun_children
from cxr_ldm.utils.instantiate import instantiate_callbacks, instantiate_loggers
from cxr_ldm.utils.overrides import check_override_types
from cxr_ldm.utils.run_info import RunInfo
from cxr_ldm.utils.slurm import JobInterrupted, default_ckpt_path, in_slurm_job, slurm_trainer_extras

log = logging.getLogger(__name__)
# MONAI imports optuna when it is installed (for hparams_search=), and optuna's alembic logs at INFO on import
logging.getLogger("alembic").setLevel(logging.WARNING)

# what a user can fix: one line on stderr (utils/cli.run_command), CXR_LDM_TRACEBACK=1 for the traceback
USER_ERRORS = (ValueError, FileNotFoundError, DiskFullError, NonFiniteLossError, NonFiniteWeightsError)


def _instantiate(node: DictConfig, option: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``; a constructor's user error comes out as that error, naming the option."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        raise user_error(option, err.__cause__) from err
    except MisconfigurationException as err:  # Lightning's word for a bad Trainer option
        raise ValueError(f"{option}: {err}") from err


def _factor(channels: Any) -> int:
    return 2 ** (len(channels) - 1) if channels else 1


def _check_options(cfg: DictConfig) -> None:
    """Impossible values that would otherwise fail deep inside a run (or silently), as one clear line."""
    data, model, trainer = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("trainer") or {}
    for key, low in (("batch_size", 1), ("num_workers", 0), ("min_sentences", 1), ("max_sentences", 1)):
        value = data.get(key)
        if isinstance(value, int) and value < low:
            raise ValueError(f"data.{key}={value}: must be at least {low}")
    if data.get("min_sentences", 1) > data.get("max_sentences", 1 << 30):
        raise ValueError(f"data.min_sentences={data.min_sentences} is above data.max_sentences={data.max_sentences}")
    p_uncond = data.get("p_uncond")
    if isinstance(p_uncond, (int, float)) and not 0 <= p_uncond <= 1:
        raise ValueError(f"data.p_uncond={p_uncond}: a probability, between 0 and 1")
    every = trainer.get("check_val_every_n_epoch")
    if isinstance(every, int) and every < 1:
        raise ValueError(f"trainer.check_val_every_n_epoch={every}: must be at least 1 (or null with val_check_interval)")
    size = data.get("image_size")
    channels = OmegaConf.select(model, "autoencoder.channels", default=None)  # stage 1
    if isinstance(size, int) and channels is not None and size % _factor(channels):
        factor = _factor(channels)
        raise ValueError(
            f"data.image_size={size} is not divisible by {factor}, the autoencoder's downsampling factor "
            f"({len(channels)} levels in model.autoencoder.channels): use a multiple of {factor}, e.g. "
            f"{max(factor, size // factor * factor)}"
        )
    _check_latent_size(cfg, OmegaConf.select(model, "autoencoder_arch.channels", default=None))


def _check_latent_size(cfg: DictConfig, autoencoder_channels: Any) -> None:
    """Stage 2: the UNet halves the latent ``len(unet.channels) - 1`` times, so the latent must divide too."""
    size = OmegaConf.select(cfg, "data.image_size", default=None)
    unet = OmegaConf.select(cfg, "model.unet.channels", default=None)
    if not isinstance(size, int) or unet is None or autoencoder_channels is None:
        return
    ae_factor, factor = _factor(autoencoder_channels), _factor(unet)
    if size % ae_factor:
        raise ValueError(
            f"data.image_size={size} is not divisible by {ae_factor}, the downsampling factor of the stage-1 "
            f"autoencoder ({len(autoencoder_channels)} levels): use a multiple of {ae_factor * factor}"
        )
    latent = size // ae_factor
    if latent % factor:
        raise ValueError(
            f"data.image_size={size} gives {latent}x{latent} latents, not divisible by {factor}, the UNet's "
            f"downsampling factor ({len(unet)} levels in model.unet.channels): use a multiple of {ae_factor * factor}"
        )


def user_error(option: str, cause: BaseException | None) -> Exception:
    """The error a user sees for a constructor that refused its options: one line naming ``option``."""
    if isinstance(cause, FileNotFoundError):
        return FileNotFoundError(f"{option}: {cause}")
    if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
        return ValueError(f"{option}: {cause}")
    return cause if isinstance(cause, Exception) else RuntimeError(str(cause))


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit (and optionally test) the configured model; returns the final metrics and the built objects."""
    output_dir = Path(cfg.paths.output_dir)
    run_info = RunInfo.start(output_dir, cfg.get("seed"), _overrides(), enabled=rank_zero_only.rank == 0)
    status = "failed"
    try:
        metrics, objects = _train(cfg, output_dir, run_info)
        status = "finished"
        return metrics, objects
    except (TrainingInterrupted, JobInterrupted, KeyboardInterrupt):
        status = "interrupted"
        raise
    except BaseException as err:
        status = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
        raise
    finally:
        run_info.finish(status)


def _train(cfg: DictConfig, output_dir: Path, run_info: RunInfo) -> tuple[dict[str, float], dict[str, Any]]:
    _check_options(cfg)
    print_config_tree(cfg, save_to=output_dir / "config_tree.yaml", show=cfg.get("print_config", True))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    autoencoder_ckpt = OmegaConf.select(cfg, "model.autoencoder_ckpt", default=None)
    if autoencoder_ckpt:  # stage 2 reads it when the model is built: check it first, with a clear line
        check_autoencoder_checkpoint(autoencoder_ckpt)
        arch = load_checkpoint_file(autoencoder_ckpt, "model.autoencoder_ckpt")["hyper_parameters"]["autoencoder"]
        _check_latent_size(cfg, arch.get("channels"))

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = _instantiate(cfg.data, "data")
    log.info("instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = _instantiate(cfg.model, "model")
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    nonfinite = cfg.get("nonfinite") or {}
    callbacks.append(NonFiniteGuard(**nonfinite))  # a NaN/Inf loss: stop or skip, never a NaN checkpoint
    # under SLURM: ranks from SLURM, a checkpoint and a requeue on the time-limit signal (utils/slurm.py);
    # elsewhere: last.ckpt on Ctrl-C / SIGTERM (callbacks/interrupt.py)
    slurm_callbacks, plugins = slurm_trainer_extras(cfg.get("slurm"), output_dir / "checkpoints")
    if not in_slurm_job():
        callbacks.append(CheckpointOnInterrupt(output_dir / "checkpoints"))
    if cfg.get("seed") is not None:  # same initial weights on every rank, different random draws
        callbacks.append(RankSeeds(cfg.seed))
    trainer: L.Trainer = _instantiate(
        cfg.trainer, "trainer", callbacks=callbacks + slurm_callbacks, logger=loggers or False,
        plugins=[AtomicCheckpointIO(), *plugins],
    )  # fmt: skip
    fix_hydra_multirun_children(trainer)  # DDP children of a local multirun job run that job
    seed = cfg.get("seed")
    run_info.update(world_size=trainer.world_size,
                    rank_seeds=None if seed is None else [seed + r for r in range(trainer.world_size)])  # fmt: skip

    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    no_validation: str | None = None
    try:
        if cfg.get("train", True):
            ckpt_path = resolve_ckpt_path(default_ckpt_path(cfg.get("ckpt_path")), output_dir)
            start_step = 0
            if ckpt_path:
                check_resume_checkpoint(ckpt_path, model)
                start_step = int(load_checkpoint_file(ckpt_path, "ckpt_path").get("global_step", 0))
                log.info("resuming from %s", ckpt_path)
                run_info.update(ckpt_path=str(ckpt_path))
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
            metrics.update(_as_floats(trainer.callback_metrics))
            metrics.update(_best_scores(trainer))
            if ckpt_path and trainer.global_step == start_step:
                log.info(
                    "the run had already finished (step %d, epoch %d of trainer.max_epochs=%s): nothing to train",
                    trainer.global_step, trainer.current_epoch, trainer.max_epochs,
                )  # fmt: skip
            if not any(k.startswith(("val/", "best/")) for k in metrics):
                no_validation = _why_no_validation(trainer)
        if cfg.get("test", False):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if not best:
                log.warning("no best checkpoint found; testing the current weights")
            trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(_as_floats(trainer.callback_metrics))
    finally:
        _finish_wandb()
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}
    return metrics, {**objects, "no_validation": no_validation}


def _why_no_validation(trainer: L.Trainer) -> str:
    """Why a fit logged no validation metric, and what would make it validate."""
    if not trainer.val_dataloaders or trainer.limit_val_batches == 0:
        return "validation is off (trainer.limit_val_batches=0 or no validation data)"
    every = trainer.check_val_every_n_epoch or 1
    per_epoch = trainer.num_training_batches
    first = every * per_epoch if isinstance(per_epoch, int) else None
    text = (
        "no validation ran: it runs at the end of " + ("each epoch" if every == 1 else f"every {every} epochs")
        + (f" ({per_epoch} training batches an epoch, so first after step {first})" if first else "")
        + f", and this run stopped after {trainer.global_step} steps"
    )
    if trainer.max_steps and trainer.max_steps > 0:
        text += f" (trainer.max_steps={trainer.max_steps})"
    fix = f"trainer.max_steps>={first}, " if first else ""
    return text + f"; let it reach that point ({fix}trainer.check_val_every_n_epoch=1 or trainer.val_check_interval=<steps>)"


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


class MetricNotLoggedError(ValueError):
    """``optimized_metric`` names a metric the run never logged."""


def metric_value(
    metrics: dict[str, float], name: str | None, multirun: bool = False, no_validation: str | None = None
) -> float | None:
    """The value a sweep optimises: the kept (best) checkpoint's score when ModelCheckpoint monitors ``name``
    (also when the run had nothing left to train), else the last logged value.

    A run that never validated (e.g. ``trainer.max_steps`` below one epoch; ``no_validation`` says why) gets that
    reason; a single run then returns None with a warning, a sweep's job fails with that line (a sweeper needs
    a number).
    """
    if not name:
        return None
    if f"best/{name}" in metrics or name in metrics:
        value = metrics.get(f"best/{name}", metrics.get(name))
        log.info("optimized_metric %s = %s", name, value)
        return value
    logged = sorted(metrics)
    if no_validation and name.startswith("val/"):
        message = f"optimized_metric={name} was not logged: {no_validation}"
    else:
        message = (f"optimized_metric={name} was not logged; logged metrics: {logged}. Set optimized_metric to one "
                   f"of them")  # fmt: skip
    if multirun:
        raise MetricNotLoggedError(message)
    log.warning(message)
    return None


def _is_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _main(cfg: DictConfig) -> float | None:
    check_override_types(cfg)  # trainer.max_epochs=abc: refused here, naming the option
    metrics, objects = train(cfg)
    return metric_value(metrics, cfg.get("optimized_metric"), _is_multirun(), objects.get("no_validation"))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_command(_main, cfg, user_errors=USER_ERRORS)


if __name__ == "__main__":
    main()
