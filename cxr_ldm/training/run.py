"""One training run of any stage: Hydra's composed config -> datamodule, model, callbacks, loggers, Trainer -> fit.

The wiring of lightning-hydra-template's ``train.py``; the command itself (``python -m cxr_ldm.train``) is a
thin wrapper.

What it adds around ``Trainer.fit`` (docs/reliability.md): ``run_info.json`` in the run folder; checkpoint
files that are complete or absent (``utils/checkpoints.py``), checked before fitting when given by
``ckpt_path=`` or ``model.autoencoder_ckpt=``; a NaN/Inf guard (``nonfinite.*``); ``last.ckpt`` on Ctrl-C
(or SLURM's signals); and user errors (a wrong path, a foreign file, a full disk) as one line, no traceback.
Under DDP: the process-group timeout ``ddp_timeout_s``, and a rank that died or hung as one line from rank 0
(``utils/distributed.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from cxr_ldm.callbacks.interrupt import CheckpointOnInterrupt, TrainingInterrupted
from cxr_ldm.callbacks.nonfinite import NonFiniteGuard
from cxr_ldm.callbacks.rank_seeds import RankSeeds
from cxr_ldm.callbacks.slurm_requeue import JobInterrupted, slurm_trainer_extras
from cxr_ldm.training.options import check_latent_size, check_options, instantiate_option
from cxr_ldm.utils.checkpoints import (
    AtomicCheckpointIO,
    check_autoencoder_checkpoint,
    check_resume_checkpoint,
    load_checkpoint_file,
    resolve_ckpt_path,
)
from cxr_ldm.utils.config_tree import print_config_tree
from cxr_ldm.utils.cpu_threads import choose_cpu_threads, cpu_threads_applied, parse_cpu_threads
from cxr_ldm.utils.distributed import (
    ReportLostRank,
    ddp_strategy_with_timeout,
    fix_hydra_multirun_children,
    kill_started_ranks_at_exit,
    lost_rank_error,
)
from cxr_ldm.utils.instantiate import instantiate_callbacks, instantiate_loggers
from cxr_ldm.utils.lightning_noise import quiet_lightning
from cxr_ldm.utils.run_info import RunInfo
from cxr_ldm.utils.slurm import default_ckpt_path, in_slurm_job

log = logging.getLogger(__name__)


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit (and optionally test) the configured model; returns the final metrics and the built objects."""
    output_dir = Path(cfg.paths.output_dir)
    run_info = RunInfo.start(output_dir, cfg.get("seed"), _overrides(), enabled=rank_zero_only.rank == 0)
    status = "failed"
    try:
        with quiet_lightning():  # Lightning's tips and hints a user cannot act on (utils/lightning_noise.py)
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
    check_options(cfg)
    parse_cpu_threads(cfg.get("cpu_threads"))  # a wrong value is refused before anything is built
    print_config_tree(cfg, save_to=output_dir / "config_tree.yaml", show=cfg.get("print_config", True))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    autoencoder_ckpt = OmegaConf.select(cfg, "model.autoencoder_ckpt", default=None)
    if autoencoder_ckpt:  # stage 2 reads it when the model is built: check it first, with a clear line
        arch = check_autoencoder_checkpoint(autoencoder_ckpt)["hyper_parameters"]["autoencoder"]
        check_latent_size(cfg, arch.get("channels"))

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = instantiate_option(cfg.data, "data")
    log.info("instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = instantiate_option(cfg.model, "model")
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    nonfinite = cfg.get("nonfinite") or {}
    callbacks.append(NonFiniteGuard(**nonfinite))  # a NaN/Inf loss: stop or skip, never a NaN checkpoint
    # under SLURM: ranks from SLURM, a checkpoint and a requeue on the time-limit signal (callbacks/slurm_requeue.py);
    # elsewhere: last.ckpt on Ctrl-C / SIGTERM (callbacks/interrupt.py)
    slurm_callbacks, plugins = slurm_trainer_extras(cfg.get("slurm"), output_dir / "checkpoints")
    if not in_slurm_job():
        callbacks.append(CheckpointOnInterrupt(output_dir / "checkpoints"))
    if cfg.get("seed") is not None:  # same initial weights on every rank, different random draws
        callbacks.append(RankSeeds(cfg.seed))
    callbacks.append(ReportLostRank())  # a DDP rank died or hung: rank 0 gets to say so (utils/distributed.py)
    # under DDP a rank waits ddp_timeout_s for the others in a collective (utils/distributed.py)
    strategy = ddp_strategy_with_timeout(cfg.trainer.get("strategy", "auto"), cfg.get("ddp_timeout_s"))
    trainer: L.Trainer = instantiate_option(
        cfg.trainer, "trainer", callbacks=callbacks + slurm_callbacks, logger=loggers or False,
        plugins=[AtomicCheckpointIO(), *plugins], strategy=strategy,
    )  # fmt: skip
    fix_hydra_multirun_children(trainer)  # DDP children of a local multirun job run that job
    seed = cfg.get("seed")
    run_info.update(world_size=trainer.world_size,
                    rank_seeds=None if seed is None else [seed + r for r in range(trainer.world_size)])  # fmt: skip

    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    threads = None
    if isinstance(trainer.accelerator, CPUAccelerator):  # torch's threads on shared cores (utils/cpu_threads.py)
        threads = choose_cpu_threads(cfg.get("cpu_threads"), ranks_per_node=trainer.num_devices)
        if threads is not None:
            log.info("torch CPU threads per rank: %d (%s)", threads.threads, threads.reason)
            run_info.update(cpu_threads=threads.threads, cpu_threads_reason=threads.reason)
    with cpu_threads_applied(threads):
        return _fit_and_test(cfg, trainer, model, datamodule, output_dir, run_info)


def _fit_and_test(cfg: DictConfig, trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule,
                  output_dir: Path, run_info: RunInfo) -> tuple[dict[str, float], dict[str, Any]]:  # fmt: skip
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
            try:
                trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
            except RuntimeError as err:  # another DDP rank died or hung: one line, and no rank left behind
                lost = lost_rank_error(err, trainer, cfg.get("ddp_timeout_s"))
                if lost is None:
                    raise
                kill_started_ranks_at_exit(trainer)
                raise lost from err
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


def is_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
