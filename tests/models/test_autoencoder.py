"""Stage-1 LightningModule: losses, adversarial schedule, step counting, resume, precision, DDP, configs."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import hydra
import lightning as L
import pytest
import torch
from helpers import compose_config
from lightning.pytorch.plugins.precision import MixedPrecision
from monai.networks.nets import AutoencoderKL, PatchDiscriminator
from omegaconf import OmegaConf
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

from cxr_ldm.models.autoencoder import AutoencoderKLModule
from cxr_ldm.models.losses import adversarial_factor, kl_divergence
from cxr_ldm.models.ms_ssim import MS_SSIM_BETAS, ms_ssim_settings

pytestmark = pytest.mark.usefixtures("offline_torch_home")  # an empty torch cache; downloads are errors


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _assert_same_optimizer_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index, state in a["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][key])), (index, key)


def _compose(*overrides: str):
    return compose_config(None, overrides)


class _Record(L.Callback):
    """Per-batch record of what the tests assert on."""

    def __init__(self) -> None:
        self.batches = 0
        self.adv_factors: list[float] = []
        self.discriminator_after_epoch: list[dict[str, torch.Tensor]] = []
        self.global_step_at_start: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.global_step_at_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.batches += 1
        self.adv_factors.append(float(trainer.callback_metrics["train/adv_factor"]))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.discriminator_after_epoch.append(_clone_state(pl_module.discriminator))


# ----------------------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("size", "kernel_size", "scales"),
    [(32, 7, 3), (64, 7, 4), (256, 11, 5), (512, 11, 5)],
)
def test_ms_ssim_settings_are_valid_for_the_image_size(size: int, kernel_size: int, scales: int) -> None:
    settings = ms_ssim_settings(size, size)
    assert (settings.kernel_size, len(settings.betas)) == (kernel_size, scales)
    assert sum(settings.betas) == pytest.approx(1.0, abs=1e-3)
    if scales == 5:  # large images: exactly torchmetrics' standard MS-SSIM (comparable to published numbers)
        assert settings.betas == MS_SSIM_BETAS and settings.sigma == 1.5
    generator = torch.Generator().manual_seed(size)
    images = torch.rand(1, 1, size, size, generator=generator)
    noisy = (images + 0.1 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    metric = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0, **settings.as_kwargs())
    assert metric(images, images).item() == pytest.approx(1.0, abs=1e-4)
    metric.reset()
    assert 0.0 < metric(noisy, images).item() < 1.0


def test_default_ms_ssim_is_undefined_at_64_px() -> None:
    """Why the helper exists: torchmetrics' default kernel 11 and 5 scales reject small images."""
    images = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError):
        MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0)(images, images)


def test_kl_divergence_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mu, sigma = torch.randn(4, 3, 8, 8), torch.rand(4, 3, 8, 8) + 0.1
    expected = torch_kl(Normal(mu, sigma), Normal(0.0, 1.0)).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(kl_divergence(mu, sigma), expected)


def test_adversarial_factor_schedule() -> None:
    assert [adversarial_factor(e, start=2) for e in range(4)] == [0.0, 0.0, 1.0, 1.0]
    assert [adversarial_factor(e, start=1, warmup_epochs=4) for e in range(7)] == [
        0,
        0.25,
        0.5,
        0.75,
        1,
        1,
        1,
    ]
    with pytest.raises(ValueError):
        adversarial_factor(0, start=-1)


# ----------------------------------------------------------------------------------------------- configs


def test_reference_config_has_the_published_parameter_counts() -> None:
    cfg = _compose("+model=aekl")
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(module.autoencoder, AutoencoderKL)
    assert isinstance(module.discriminator, PatchDiscriminator)
    assert _n_params(module.autoencoder) == 4_607_848
    assert _n_params(module.discriminator) == 2_763_585
    # DictConfig arguments are stored as plain containers; the optimizer factories are not hyper-parameters
    assert type(module.hparams["autoencoder"]) is dict and module.hparams["autoencoder"]["channels"] == [
        64,
        128,
        128,
        128,
    ]
    assert "optimizer_g" not in module.hparams and "optimizer_d" not in module.hparams
    assert (module.hparams.kl_weight, module.hparams.perceptual_weight, module.hparams.adv_weight) == (
        1e-8,
        0.002,
        0.005,
    )
    assert module.hparams.adv_start == 5 and module.hparams.perceptual_network == "squeeze"
    opt_g, opt_d = module.configure_optimizers()
    assert isinstance(opt_g, torch.optim.Adam) and opt_g.param_groups[0]["lr"] == 5e-5
    assert isinstance(opt_d, torch.optim.Adam) and opt_d.param_groups[0]["lr"] == 1e-4
    assert module._perceptual is None  # built by setup("fit") only


def test_small_config_overrides_the_reference() -> None:
    cfg = _compose("+model=aekl_small")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    assert model_cfg["autoencoder"]["channels"] == [16, 32, 32]
    assert len(model_cfg["autoencoder"]["attention_levels"]) == 3
    assert model_cfg["perceptual_weight"] == 0.0 and model_cfg["adv_start"] == 2
    assert model_cfg["kl_weight"] == 1e-8 and model_cfg["optimizer_g"]["lr"] == 5e-5  # inherited
    module = hydra.utils.instantiate(cfg.model)
    z_mu, z_sigma = module.autoencoder.encode(torch.rand(1, 1, 32, 32))
    assert z_mu.shape == z_sigma.shape == (1, 3, 8, 8)


def test_default_optimizers_without_factories(module_kwargs: dict) -> None:
    opt_g, opt_d = AutoencoderKLModule(**module_kwargs).configure_optimizers()
    assert (opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"]) == (5e-5, 1e-4)


# ----------------------------------------------------------------------------------------------- training


def test_overfitting_one_batch_lowers_the_reconstruction_error(
    module_kwargs: dict, make_trainer, blob_loader
) -> None:
    L.seed_everything(0)
    module = AutoencoderKLModule(
        **{**module_kwargs, "adv_start": 1000}, optimizer_g=partial(torch.optim.Adam, lr=2e-3)
    )
    loader = blob_loader(n=4, batch_size=4)
    images = next(iter(loader))["image"]
    with torch.no_grad():
        before = (module.reconstruct(images) - images).abs().mean().item()
    make_trainer(max_steps=30).fit(module, loader)
    with torch.no_grad():
        after = (module.reconstruct(images) - images).abs().mean().item()
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize(("warmup", "factors"), [(0, [0, 0, 1, 1, 1, 1]), (2, [0, 0, 0.5, 0.5, 1, 1])])
def test_discriminator_is_untouched_before_adv_start(
    module_kwargs: dict, make_trainer, blob_loader, warmup: int, factors: list[float]
) -> None:
    L.seed_everything(0)
    module = AutoencoderKLModule(**{**module_kwargs, "adv_start": 1, "adv_warmup_epochs": warmup})
    initial_d, initial_ae = _clone_state(module.discriminator), _clone_state(module.autoencoder)
    record = _Record()
    trainer = make_trainer(max_epochs=3, callbacks=[record])
    trainer.fit(module, blob_loader(n=4, batch_size=2))
    assert record.adv_factors == factors
    # epoch 0: no discriminator step and no forward either (BatchNorm running stats included)
    assert _states_equal(record.discriminator_after_epoch[0], initial_d)
    assert not _states_equal(_clone_state(module.autoencoder), initial_ae)
    # epoch 1 on: the discriminator trains
    assert not _states_equal(record.discriminator_after_epoch[1], initial_d)
    assert trainer.global_step == 6
    opt_g, opt_d = trainer.optimizers
    assert [s["step"].item() for s in opt_g.state.values()][0] == 6
    assert [s["step"].item() for s in opt_d.state.values()][0] == 4


@pytest.mark.parametrize("adv_start", [0, 100], ids=["adversarial", "no-adversarial"])
def test_max_steps_counts_generator_steps(
    module_kwargs: dict, make_trainer, blob_loader, adv_start: int
) -> None:
    module = AutoencoderKLModule(**{**module_kwargs, "adv_start": adv_start})
    record = _Record()
    trainer = make_trainer(max_steps=6, callbacks=[record])
    trainer.fit(module, blob_loader(n=8, batch_size=2))  # 4 batches an epoch: stops in the 2nd epoch
    assert record.batches == 6
    assert trainer.global_step == 6
    opt_g, opt_d = trainer.optimizers
    assert next(iter(opt_g.state.values()))["step"].item() == 6
    d_steps = next(iter(opt_d.state.values()))["step"].item() if opt_d.state else 0
    assert d_steps == (6 if adv_start == 0 else 0)


def test_resume_reproduces_an_uninterrupted_run(
    module_kwargs: dict, make_trainer, blob_loader, tmp_path: Path
) -> None:
    """8 generator steps at once == 4 steps, checkpoint, new Trainer and module, resume to 8 (adversarial from
    epoch 1)."""
    kwargs = {**module_kwargs, "adv_start": 1}
    train, val = blob_loader(n=4, batch_size=2), blob_loader(n=2, batch_size=2, seed=1)

    def run(max_steps: int, ckpt_path: str | None = None) -> tuple[L.Trainer, AutoencoderKLModule, _Record]:
        L.seed_everything(7)
        module, record = AutoencoderKLModule(**kwargs), _Record()
        trainer = make_trainer(max_steps=max_steps, deterministic=True, callbacks=[record])
        trainer.fit(module, train, val, ckpt_path=ckpt_path)
        return trainer, module, record

    full_trainer, full, _ = run(8)
    half_trainer, _, _ = run(4)
    checkpoint = tmp_path / "half.ckpt"
    half_trainer.save_checkpoint(checkpoint)
    resumed_trainer, resumed, record = run(8, ckpt_path=str(checkpoint))

    assert record.global_step_at_start == 4 and record.batches == 4
    assert full_trainer.global_step == resumed_trainer.global_step == 8
    assert _states_equal(_clone_state(full.autoencoder), _clone_state(resumed.autoencoder))
    assert _states_equal(_clone_state(full.discriminator), _clone_state(resumed.discriminator))
    for full_opt, resumed_opt in zip(full_trainer.optimizers, resumed_trainer.optimizers, strict=True):
        _assert_same_optimizer_state(full_opt.state_dict(), resumed_opt.state_dict())


def test_bf16_mixed_on_cpu_gives_finite_losses(module_kwargs: dict, make_trainer, blob_loader) -> None:
    L.seed_everything(0)
    module = AutoencoderKLModule(**module_kwargs)
    initial = _clone_state(module.autoencoder)
    trainer = make_trainer(max_steps=4, precision="bf16-mixed")
    trainer.fit(module, blob_loader(n=8, batch_size=2))
    metrics = trainer.callback_metrics
    for key in ("train/loss_g", "train/l1", "train/kl", "train/adv_g", "train/loss_d"):
        assert torch.isfinite(metrics[key]), key
    assert trainer.global_step == 4
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert not _states_equal(_clone_state(module.autoencoder), initial)


class _GradNormProbe(AutoencoderKLModule):
    """Records the gradient norm before and after the module's own clipping, and the GradScaler's scale."""

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        before = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
        super().on_before_optimizer_step(optimizer)
        after = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
        self.norms.append((before, after, self.trainer.precision_plugin.scaler.get_scale()))


def test_16_mixed_clips_unscaled_gradients(module_kwargs: dict, make_trainer, blob_loader) -> None:
    """fp16 AMP with a GradScaler (CPU): clipping sees unscaled gradients, both networks step, 1 step a batch.

    Lightning maps ``precision="16-mixed"`` on CPU to bf16, so the fp16 plugin is given explicitly.
    """
    L.seed_everything(0)
    module = _GradNormProbe(**module_kwargs)
    module.norms = []
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = make_trainer(max_steps=3, plugins=[plugin])
    trainer.fit(module, blob_loader(n=8, batch_size=2))
    assert trainer.global_step == 3
    assert len(module.norms) == 6  # generator and discriminator, 3 batches
    for before, after, scale in module.norms:
        assert scale >= 1024  # the loss was scaled ...
        assert before < 100  # ... but the gradients were unscaled before clipping
        assert after <= 1.0 + 1e-4 and after == pytest.approx(min(before, 1.0), rel=1e-3)
    assert any(before > 1.0 for before, _, _ in module.norms)  # clipping did act
    assert torch.isfinite(trainer.callback_metrics["train/loss_d"])


def test_strategy_ddp_trains_without_unused_parameter_errors(
    module_kwargs: dict, make_trainer, blob_loader
) -> None:
    """Plain ``strategy="ddp"`` (one CPU process, gloo): each backward leaves a network without gradients."""
    module = AutoencoderKLModule(**{**module_kwargs, "adv_start": 1})
    record = _Record()
    with mock.patch.dict(os.environ):  # Lightning sets MASTER_ADDR/PORT etc.
        try:
            trainer = make_trainer(max_epochs=2, strategy="ddp", callbacks=[record])
            trainer.fit(module, blob_loader(n=4, batch_size=2))
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is True
    assert record.adv_factors == [0, 0, 1, 1]
    assert trainer.global_step == 4


# ----------------------------------------------------------------------------------------------- evaluation


def test_validation_and_test_metrics_match_an_independent_computation(
    module_kwargs: dict, make_trainer, blob_loader
) -> None:
    L.seed_everything(0)
    module = AutoencoderKLModule(**module_kwargs)
    loader = blob_loader(n=6, batch_size=4, seed=3)  # uneven batches: 4 + 2
    trainer = make_trainer()
    val = trainer.validate(module, loader, verbose=False)[0]
    test = trainer.test(module, loader, verbose=False)[0]

    images = loader.dataset.images
    with torch.no_grad():
        z_mu, _ = module.autoencoder.encode(images)
        reconstructions = module.autoencoder.decode(z_mu).clamp(0, 1)
    mse = (reconstructions - images).pow(2).mean(dim=(1, 2, 3))
    ms_ssim = MultiScaleStructuralSimilarityIndexMeasure(
        data_range=1.0, **ms_ssim_settings(32, 32).as_kwargs()
    )
    expected = {
        "l1": (reconstructions - images).abs().mean().item(),
        "psnr": (10 * torch.log10(1 / mse)).mean().item(),
        "ms_ssim": ms_ssim(reconstructions, images).item(),
    }
    for name, value in expected.items():
        assert val[f"val/{name}"] == pytest.approx(value, rel=1e-4), name
        assert test[f"test/{name}"] == pytest.approx(value, rel=1e-4), name


def test_checkpoint_loads_without_arguments_or_perceptual_weights(
    module_kwargs: dict,
    make_trainer,
    blob_loader,
    cached_squeezenet: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Train with LPIPS (random local weights), then load the checkpoint where no LPIPS weights exist."""
    cfg = OmegaConf.create({**module_kwargs, "perceptual_weight": 0.002})
    module = AutoencoderKLModule(**cfg)  # DictConfig values, as from Hydra
    trainer = make_trainer(max_steps=2)
    trainer.fit(module, blob_loader(n=4, batch_size=2))
    assert module._perceptual is not None
    assert torch.isfinite(trainer.callback_metrics["train/perceptual"])
    checkpoint = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(checkpoint)

    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)  # stage 2 reads it this way too
    assert not any("perceptual" in key for key in raw["state_dict"])
    assert type(raw["hyper_parameters"]["autoencoder"]) is dict

    empty_home = tmp_path / "empty_torch_home"
    monkeypatch.setenv("TORCH_HOME", str(empty_home))
    torch.manual_seed(5)
    AutoencoderKLModule(**raw["hyper_parameters"])
    rng_after_construction = torch.get_rng_state()
    torch.manual_seed(5)
    loaded = AutoencoderKLModule.load_from_checkpoint(checkpoint, map_location="cpu")
    # the RNG states saved for resuming are not applied by loading (only when fitting resumes)
    assert torch.equal(torch.get_rng_state(), rng_after_construction)
    assert isinstance(loaded.autoencoder, AutoencoderKL)
    assert _states_equal(_clone_state(loaded.autoencoder), _clone_state(module.autoencoder))
    images = next(iter(blob_loader(n=2, batch_size=2)))["image"]
    with torch.no_grad():
        z_mu, z_sigma = loaded.autoencoder.encode(images)
        decoded = loaded.autoencoder.decode(loaded.autoencoder.sampling(z_mu, z_sigma))
    assert decoded.shape == images.shape
    assert not empty_home.exists()
