"""LatentDiffusionModule: reference size, scale factor, text conditioning, EMA, training and checkpoints."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
from helpers import CONF_DIR
from ldm_fixtures import (
    AE_ARCH,
    IMAGE_SIZE,
    build_ldm,
    full_clip_state_dict,
    ldm_config,
    make_loader,
    quiet_trainer,
)
from omegaconf import OmegaConf

from cxr_ldm.data.tokenization import tokenize
from cxr_ldm.models.diffusion import LatentDiffusionModule, read_autoencoder_checkpoint
from cxr_ldm.models.ema import EMA, ema_decay_at
from cxr_ldm.pipelines import CXRLDMPipeline

pytest_plugins = ["ldm_fixtures"]


def test_reference_unet_has_the_published_parameter_count():
    from monai.networks.nets import DiffusionModelUNet

    cfg = OmegaConf.load(CONF_DIR / "model" / "ldm.yaml")
    unet = DiffusionModelUNet(**OmegaConf.to_container(cfg.unet))
    assert sum(p.numel() for p in unet.parameters()) == 263_636_995
    assert cfg.scale_factor == 0.3 and cfg.optimizer.lr == 2.5e-5
    assert cfg.scheduler.prediction_type == "v_prediction" and cfg.scheduler.beta_end == 0.0205


def test_reads_the_stage1_checkpoint(tiny_ae_ckpt: Path):
    arch, state = read_autoencoder_checkpoint(tiny_ae_ckpt)
    assert arch == AE_ARCH
    ckpt = torch.load(tiny_ae_ckpt, map_location="cpu", weights_only=True)
    assert all(torch.equal(state[k], ckpt["state_dict"][f"autoencoder.{k}"]) for k in state)
    with pytest.raises(FileNotFoundError, match="autoencoder_ckpt="):
        read_autoencoder_checkpoint(tiny_ae_ckpt.parent / "missing.ckpt")


def test_frozen_parts_and_shape_checks(tiny_ae_ckpt: Path):
    model = build_ldm(tiny_ae_ckpt)
    model.train()
    assert not model.autoencoder.training and not model.text_encoder.training and not model.ema.training
    assert not any(p.requires_grad for p in model.autoencoder.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 1e-4
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.unet.parameters()
    )
    bad_unet = {**ldm_config(tiny_ae_ckpt)["unet"], "cross_attention_dim": 1024}
    with pytest.raises(ValueError, match="cross_attention_dim=64"):
        build_ldm(tiny_ae_ckpt, unet=bad_unet)
    with pytest.raises(ValueError, match="image_size"):
        build_ldm(tiny_ae_ckpt, image_size=30)  # not divisible by the AE's factor 4


def test_optimizer_from_a_partial_is_kept_as_a_plain_config(tiny_ae_ckpt: Path):
    """Hydra may hand over a functools.partial; the checkpoint keeps its _target_ form (loads weights_only)."""
    model = build_ldm(tiny_ae_ckpt, optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.5))
    assert model.hparams.optimizer == {
        "_target_": "torch.optim.sgd.SGD",
        "_partial_": True,
        "lr": 0.1,
        "momentum": 0.5,
    }
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.5
    model._optimizer_factory = None  # as after load_from_checkpoint: only the plain config is left
    assert isinstance(model.configure_optimizers(), torch.optim.SGD)


def test_image_size_must_match_the_training_data(tmp_path: Path, tiny_ae_ckpt: Path):
    model = build_ldm(tiny_ae_ckpt, scale_factor=0.5, image_size=64)
    assert model.latent_shape == (3, 16, 16)
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    with pytest.raises(ValueError, match="set model.image_size"):
        trainer.fit(model, train_dataloaders=make_loader(n=4))


def test_unconditional_embedding_is_the_training_empty_prompt(tiny_ae_ckpt: Path):
    """What a dropped prompt becomes in training (DataModule: "" -> tokenize) is what sampling uses as uncond."""
    model = build_ldm(tiny_ae_ckpt)
    training_tokens = tokenize(
        ["Large right pleural effusion.", ""]
    )  # the DataModule's path for a dropped text
    training_context = model.encode_text(training_tokens)
    sampling_uncond = model.unconditional_context()
    assert sampling_uncond.shape == (1, 77, 64)
    assert torch.equal(sampling_uncond, model.text_encoder(tokenize([""])))
    # same token ids as training saw; in a batch the same computation differs only by float rounding
    assert torch.equal(training_tokens[1], tokenize([""])[0])
    torch.testing.assert_close(training_context[1:], sampling_uncond, rtol=0, atol=1e-5)
    assert not torch.allclose(training_context[:1], sampling_uncond, atol=1e-2)


def test_scale_factor_auto_is_one_over_std_of_the_first_batches(tmp_path: Path, tiny_ae_ckpt: Path):
    model = build_ldm(tiny_ae_ckpt, scale_factor="auto", scale_factor_batches=2, ema_decay=None)
    loader = make_loader(n=12, batch_size=4)
    trainer = quiet_trainer(tmp_path, max_steps=3, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)

    # independent: the posterior of the first two batches; Var(z) = Var(mu) + E[sigma^2] (law of total variance)
    first = [batch["image"] for _, batch in zip(range(2), loader, strict=False)]
    ae = copy.deepcopy(model.autoencoder).double()
    mus, sigmas = zip(*(ae.encode(images.double()) for images in first), strict=True)
    mu, sigma = torch.cat(mus), torch.cat(sigmas)
    expected = 1.0 / torch.sqrt(mu.var(unbiased=False) + sigma.pow(2).mean())
    assert model.scale_factor.item() == pytest.approx(expected.item(), rel=1e-4)
    # and Monte Carlo: the std of drawn latents agrees
    draws = torch.cat([mu + sigma * torch.randn_like(mu) for _ in range(20)])
    assert model.scale_factor.item() == pytest.approx(1.0 / draws.std().item(), rel=2e-2)
    assert int(model.scale_batches_seen) == 2  # the third batch did not change it
    assert trainer.callback_metrics["train/scale_factor"].item() == pytest.approx(model.scale_factor.item())
    # stored in the checkpoint
    trainer.save_checkpoint(tmp_path / "auto.ckpt")
    ckpt = torch.load(tmp_path / "auto.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"]["scale_factor"].item() == model.scale_factor.item()


def test_ema_update_follows_the_formula():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, decay=0.9999)
    ema.num_updates.fill_(5)
    old = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
        net.bias.mul_(-2.0)
    used = ema.update(net)
    d = min(0.9999, (1 + 5) / (10 + 5))
    assert used == pytest.approx(d) == pytest.approx(ema_decay_at(5, 0.9999))
    for name, value in net.state_dict().items():
        torch.testing.assert_close(ema.module.state_dict()[name], d * old[name] + (1 - d) * value)
    assert int(ema.num_updates) == 6
    assert ema_decay_at(10**6, 0.9999) == 0.9999 and ema_decay_at(0, 0.9999, warmup=False) == 0.9999


def test_one_training_step_with_a_real_trainer(tmp_path: Path, tiny_ae_ckpt: Path):
    model = build_ldm(tiny_ae_ckpt, scale_factor=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0, accumulate_grad_batches=2)
    trainer.fit(model, train_dataloaders=make_loader(n=16, batch_size=4))
    after = model.state_dict()

    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("unet.") for k in changed)
    assert not any(k.startswith(("autoencoder.", "text_encoder.")) for k in changed)
    assert any(k.startswith("ema.module.") for k in changed)
    assert int(model.ema.num_updates) == 2  # one EMA update per optimizer step (4 batches, accumulation 2)
    assert model.latent_shape == (3, IMAGE_SIZE // 4, IMAGE_SIZE // 4)


def test_validation_loss_is_fixed_between_runs(tmp_path: Path, tiny_ae_ckpt: Path):
    model = build_ldm(tiny_ae_ckpt, scale_factor=0.5)
    trainer = quiet_trainer(tmp_path)
    loader = make_loader(n=8)
    first = trainer.validate(model, loader, verbose=False)[0]
    torch.manual_seed(123)  # the global random state must not matter
    second = trainer.validate(model, loader, verbose=False)[0]
    assert first["val/loss"] == second["val/loss"] and first["val/loss_ema"] == second["val/loss_ema"]


def test_checkpoint_is_self_contained_and_samples_identically(trained_ldm_ckpt: Path):
    ckpt = torch.load(trained_ldm_ckpt, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["autoencoder_arch"] == AE_ARCH
    assert any(k.startswith("autoencoder.") for k in ckpt["state_dict"])
    assert any(k.startswith("text_encoder.") for k in ckpt["state_dict"])  # tiny encoder: stored
    assert not Path(ckpt["hyper_parameters"]["autoencoder_ckpt"]).exists()  # the fixture deleted it

    loaded = LatentDiffusionModule.load_from_checkpoint(trained_ldm_ckpt, map_location="cpu")
    again = LatentDiffusionModule.load_from_checkpoint(trained_ldm_ckpt, map_location="cpu")
    state = loaded.state_dict()
    assert state.keys() == ckpt["state_dict"].keys()
    assert all(torch.equal(state[k], v) for k, v in ckpt["state_dict"].items())
    assert loaded.latent_shape == (3, 8, 8) and torch.isfinite(loaded.scale_factor)
    kwargs = {"guidance_scale": 3.0, "num_inference_steps": 3, "progress": False}
    prompts = ["Moderate cardiomegaly.", "Large right pleural effusion."]
    a = CXRLDMPipeline.from_module(loaded)(prompts, seeds=[1, 2], **kwargs)
    b = CXRLDMPipeline.from_module(again)(prompts, seeds=[1, 2], **kwargs)
    assert torch.equal(a, b)


def test_pretrained_text_encoder_is_not_saved_twice(tmp_path: Path, tiny_ae_ckpt: Path):
    """A file-loaded text encoder stays out of the LDM checkpoint and is read again from its file on loading."""
    weights = tmp_path / "open_clip_pytorch_model.bin"
    clip_state = full_clip_state_dict(11)
    torch.save(clip_state, weights)
    text_encoder = {
        "text_cfg": {"width": 64, "heads": 4, "layers": 3},
        "weights_path": str(weights),
        "seed": None,
    }
    model = build_ldm(tiny_ae_ckpt, text_encoder=text_encoder, scale_factor=0.5)
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=make_loader(n=4))
    trainer.save_checkpoint(tmp_path / "ldm.ckpt")

    ckpt = torch.load(tmp_path / "ldm.ckpt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("text_encoder.") for k in ckpt["state_dict"])
    loaded = LatentDiffusionModule.load_from_checkpoint(tmp_path / "ldm.ckpt", map_location="cpu")
    assert loaded.text_encoder.weights_source == str(weights)
    assert torch.equal(loaded.text_encoder.tower.token_embedding.weight, clip_state["token_embedding.weight"])
    unet_state = loaded.unet.state_dict()
    assert all(torch.equal(unet_state[k], v) for k, v in model.unet.state_dict().items())
