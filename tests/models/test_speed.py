"""The fast path (models/speed.py): switches per device, what each switch changes, bf16 vs fp32, compile, checkpointing.

Speed itself is measured by benchmarks/, never here: these tests check that the switches are applied, that they
change how the networks compute and not what, and that compiled modules keep their checkpoints and resume exactly.
Compile tests use ``backend: aot_eager`` (TorchDynamo + AOTAutograd, no inductor code generation, which takes
minutes per network on the CPU).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import compose_config
from ldm_fixtures import build_ldm, full_clip_state_dict, make_loader, quiet_trainer
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

from cxr_ldm.models.autoencoder import AutoencoderKLModule
from cxr_ldm.models.diffusion import LatentDiffusionModule, read_autoencoder_checkpoint
from cxr_ldm.models.speed import SPEED_SWITCHES, Speed, fused_factory, resolve_speed, use_sdpa

pytest_plugins = ["ldm_fixtures"]

ALL_ON = dict.fromkeys(SPEED_SWITCHES, True)
ALL_OFF = dict.fromkeys(SPEED_SWITCHES, False)
AOT_EAGER = {"backend": "aot_eager"}
TINY_UNET = dict(
    spatial_dims=2, in_channels=3, out_channels=3, channels=[16, 32, 32], attention_levels=[False, True, True],
    num_head_channels=[0, 16, 16], num_res_blocks=1, norm_num_groups=8, with_conditioning=True,
    cross_attention_dim=64,
)  # fmt: skip


class _Record(L.Callback):
    """The training losses each batch returned, and the trainer's metrics after each batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.metrics: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, *args: Any) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})


@pytest.fixture
def restore_matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


# --------------------------------------------------------------------------------------------- switches
def test_auto_switches_follow_the_device(tiny_ae_ckpt: Path):
    assert resolve_speed({}, False, torch.device("cpu")) == Speed()
    cuda = resolve_speed(None, True, torch.device("cuda", 0))
    assert all(getattr(cuda, name) for name in SPEED_SWITCHES) and cuda.compile == {}
    mixed = resolve_speed({"sdpa": True, "channels_last": False}, AOT_EAGER, torch.device("cuda"))
    assert mixed.sdpa and not mixed.channels_last and mixed.tf32 and mixed.compile == AOT_EAGER
    assert resolve_speed({"sdpa": True}, None, torch.device("cpu")) == Speed(sdpa=True)
    with pytest.raises(ValueError, match="model.speed.sdpa must be true, false or auto, got 'yes'"):
        resolve_speed({"sdpa": "yes"}, False, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"unknown model.speed switch\(es\) \['flash'\]"):
        resolve_speed({"flash": True}, False, torch.device("cpu"))
    with pytest.raises(ValueError, match="model.compile must be true, false or a dict"):
        build_ldm(tiny_ae_ckpt, compile="fast")  # a bad value stops the run when the module is built


def test_configs_turn_the_fast_path_on_for_gpus():
    for model in ("ldm", "aekl", "ldm_small", "aekl_small"):
        cfg = compose_config(None, [f"+model={model}"]).model
        assert dict(cfg.speed) == dict.fromkeys(SPEED_SWITCHES, "auto") and cfg.compile is False
    assert compose_config(None, ["+model=aekl"]).model.gradient_checkpointing is False
    for trainer in ("gpu", "ddp"):
        cfg = compose_config(None, [f"+trainer={trainer}"]).trainer
        assert cfg.precision == "bf16-mixed" and cfg.benchmark is True


def test_sdpa_computes_the_same_attention():
    torch.manual_seed(0)
    unet = DiffusionModelUNet(**TINY_UNET)
    ae = AutoencoderKL(
        spatial_dims=2, channels=[8, 16], attention_levels=[False, True], latent_channels=3, num_res_blocks=1,
        norm_num_groups=8,
    )  # fmt: skip
    x, t, context = torch.randn(2, 3, 8, 8), torch.tensor([3, 900]), torch.randn(2, 77, 64)
    images = torch.rand(2, 1, 16, 16)
    reference = unet(x, timesteps=t, context=context), ae.reconstruct(images)
    blocks = [m for net in (unet, ae) for m in net.modules() if hasattr(m, "use_flash_attention")]
    assert use_sdpa(unet) + use_sdpa(ae) == len(blocks) > 0 and all(m.use_flash_attention for m in blocks)
    fast = unet(x, timesteps=t, context=context), ae.reconstruct(images)
    for a, b in zip(reference, fast, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_fused_factory_only_for_adam():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert fused_factory(partial(torch.optim.AdamW, lr=1e-3))(params).defaults["fused"] is True
    assert fused_factory(torch.optim.Adam)(params).defaults["fused"] is True
    assert fused_factory(partial(torch.optim.AdamW, fused=False))(params).defaults["fused"] is False
    assert fused_factory(partial(torch.optim.SGD, lr=0.1))(params).defaults.get("fused") in (None, False)


def _pretrained_text_encoder(tmp_path: Path) -> dict[str, Any]:
    """A file-loaded (not stored in our checkpoints) tiny text tower, written in open_clip's format."""
    weights = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(full_clip_state_dict(11), weights)
    return {"text_cfg": {"width": 64, "heads": 4, "layers": 3}, "weights_path": str(weights), "seed": None}


def test_every_switch_on_a_cpu_trainer_changes_how_not_what(
    tmp_path: Path, tiny_ae_ckpt: Path, restore_matmul_precision
):
    """All switches forced on (on a CPU): each is applied, and training computes the same losses."""
    text_encoder = _pretrained_text_encoder(tmp_path)

    def run(speed: dict[str, bool]):
        model = build_ldm(tiny_ae_ckpt, text_encoder=text_encoder, scale_factor=0.5, speed=speed)
        record = _Record()
        L.seed_everything(3)
        trainer = quiet_trainer(tmp_path, max_steps=3, limit_val_batches=0, callbacks=[record])
        trainer.fit(model, train_dataloaders=make_loader(n=12, batch_size=4))
        return model, trainer, record

    plain, _, plain_record = run(ALL_OFF)
    torch.set_float32_matmul_precision("highest")
    fast, trainer, fast_record = run(ALL_ON)

    assert torch.get_float32_matmul_precision() == "high"  # tf32
    blocks = [m for m in fast.unet.modules() if hasattr(m, "use_flash_attention")]
    assert blocks and all(m.use_flash_attention for m in blocks)  # sdpa
    assert not any(m.use_flash_attention for m in plain.unet.modules() if hasattr(m, "use_flash_attention"))
    convs = [p for p in fast.unet.parameters() if p.ndim == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)  # channels_last
    assert trainer.optimizers[0].defaults["fused"] is True  # fused_adam
    assert {p.dtype for p in fast.text_encoder.parameters()} == {torch.bfloat16}  # frozen_bf16, file-loaded tower
    assert {p.dtype for p in fast.autoencoder.parameters()} == {torch.float32}  # stored in checkpoints: exact
    assert {p.dtype for p in plain.text_encoder.parameters()} == {torch.float32}
    # the same maths: the bf16 text tower is the only change of values (its context differs by ~0.4 %)
    torch.testing.assert_close(torch.tensor(fast_record.losses), torch.tensor(plain_record.losses), rtol=1e-2, atol=0)

    trainer.save_checkpoint(tmp_path / "fast.ckpt")
    state = torch.load(tmp_path / "fast.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("text_encoder.") for k in state)
    _, stage1 = read_autoencoder_checkpoint(tiny_ae_ckpt)
    assert all(torch.equal(state[f"autoencoder.{k}"], v) for k, v in stage1.items())


# ----------------------------------------------------------------------------------------- bf16 vs fp32
# Stated tolerance: the losses of one batch agree within 1 % (bf16 keeps 8 bits of mantissa, a relative rounding of
# 2**-9 = 0.2 % per value). Measured on the tiny networks: stage 2 train/val loss 0.02 % / 0.006 %; stage 1
# L1 0.27 %, adversarial 0.06 %, discriminator 0.11 %, generator total 0.01 %.
BF16_RTOL = 1e-2


def test_bf16_and_fp32_stage2_losses_agree_on_a_fixed_batch(tmp_path: Path, tiny_ae_ckpt: Path):
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        model = build_ldm(tiny_ae_ckpt, scale_factor=0.5)
        record = _Record()
        L.seed_everything(5)
        trainer = quiet_trainer(tmp_path, max_steps=1, precision=precision, callbacks=[record])
        trainer.fit(model, train_dataloaders=make_loader(n=8, batch_size=8))
        val = trainer.validate(model, make_loader(n=8, batch_size=8), verbose=False)[0]
        losses[precision] = (record.losses[0], val["val/loss"])
    train32, val32 = losses["32-true"]
    train16, val16 = losses["bf16-mixed"]
    assert train16 == pytest.approx(train32, rel=BF16_RTOL) and val16 == pytest.approx(val32, rel=BF16_RTOL)
    assert (train16, val16) != (train32, val32)  # bf16 did run


def test_bf16_and_fp32_stage1_losses_agree_with_the_gan_step(module_kwargs: dict, make_trainer, blob_loader):
    """Generator and discriminator losses of one batch, adversarial terms on from the first step.

    The posterior is made nearly deterministic (sigma ~ e^-10, as a trained AE with KL weight 1e-8 has), so the
    bf16 and fp32 runs, which draw the posterior noise in their own dtypes, sample the same latent.
    """
    metrics = {}
    for precision in ("32-true", "bf16-mixed"):
        L.seed_everything(0)
        module = AutoencoderKLModule(**{**module_kwargs, "adv_start": 0, "adv_weight": 1.0})
        with torch.no_grad():
            module.autoencoder.quant_conv_log_sigma.conv.bias.fill_(-20.0)
        record = _Record()
        trainer = make_trainer(max_steps=1, precision=precision, callbacks=[record])
        trainer.fit(module, blob_loader(n=4, batch_size=4))
        metrics[precision] = record.metrics[0]
    for key in ("train/loss_g", "train/l1", "train/adv_g", "train/loss_d"):
        assert metrics["bf16-mixed"][key] == pytest.approx(metrics["32-true"][key], rel=BF16_RTOL), key
    assert metrics["bf16-mixed"]["train/l1"] != metrics["32-true"]["train/l1"]


# ------------------------------------------------------------------------------------- checkpointing
def test_gradient_checkpointing_changes_memory_not_results(
    module_kwargs: dict, make_trainer, blob_loader, tmp_path: Path
):
    states, records = [], []
    for checkpointing in (False, True):
        L.seed_everything(1)
        module = AutoencoderKLModule(**module_kwargs, gradient_checkpointing=checkpointing)
        record = _Record()
        trainer = make_trainer(max_steps=3, callbacks=[record])
        trainer.fit(module, blob_loader(n=6, batch_size=2))
        states.append(module.autoencoder.state_dict())
        records.append(record.losses)
        assert module.autoencoder.use_checkpoint is checkpointing
    assert "use_checkpoint" not in module.hparams.autoencoder  # stage 2 rebuilds the AE without it
    torch.testing.assert_close(records[1], records[0], rtol=1e-6, atol=0)
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-5, atol=1e-7, msg=key)


# ------------------------------------------------------------------------------------------- compile
def _no_compile_prefix(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in state)
    return state


@pytest.mark.slow
def test_compiled_stage2_keeps_its_keys_and_resumes_exactly(tmp_path: Path, tiny_ae_ckpt: Path):
    """4 steps at once == 2 steps (one epoch), checkpoint, new module and Trainer, 2 more, compiled; the checkpoint
    has eager key names, loads into an eager module and resumes an eager run too."""

    def run(max_steps: int, compiled: bool, ckpt_path: Path | None = None):
        model = build_ldm(tiny_ae_ckpt, scale_factor=0.5, compile=AOT_EAGER if compiled else False)
        L.seed_everything(9)
        trainer = quiet_trainer(tmp_path, max_steps=max_steps)
        val = make_loader(n=2, batch_size=2, seed=1)
        trainer.fit(model, make_loader(n=4, batch_size=2), val, ckpt_path=ckpt_path)
        return model, trainer

    full, _ = run(4, compiled=True)
    assert full.unet._compiled_call_impl is not None  # really compiled (nn.Module.compile, in place)
    _, half_trainer = run(2, compiled=True)
    half_trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    state = _no_compile_prefix(tmp_path / "compiled.ckpt")
    assert state.keys() == full.state_dict().keys()
    eager = LatentDiffusionModule.load_from_checkpoint(tmp_path / "compiled.ckpt", map_location="cpu")
    assert all(torch.equal(eager.state_dict()[k], v) for k, v in state.items())

    resumed, resumed_trainer = run(4, compiled=True, ckpt_path=tmp_path / "compiled.ckpt")
    assert resumed_trainer.global_step == 4
    for key, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key

    # and into an eager run: the compiled run's checkpoint resumes without compile (aot_eager computes what eager
    # computes, up to float rounding)
    resumed_eager, _ = run(4, compiled=False, ckpt_path=tmp_path / "compiled.ckpt")
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed_eager.state_dict()[key], value, rtol=1e-5, atol=1e-7, msg=key)


@pytest.mark.slow
def test_compiled_stage1_keeps_its_keys_and_resumes_exactly(
    module_kwargs: dict, make_trainer, blob_loader, tmp_path: Path
):
    """8 generator steps at once == 4, checkpoint, 4 more, with the autoencoder compiled (GAN from epoch 1)."""
    kwargs = {**module_kwargs, "adv_start": 1, "compile": AOT_EAGER}
    train, val = blob_loader(n=4, batch_size=2), blob_loader(n=2, batch_size=2, seed=1)

    def run(max_steps: int, ckpt_path: Path | None = None) -> tuple[AutoencoderKLModule, L.Trainer]:
        L.seed_everything(7)
        module = AutoencoderKLModule(**kwargs)
        trainer = make_trainer(max_steps=max_steps, deterministic=True)
        trainer.fit(module, train, val, ckpt_path=ckpt_path)
        return module, trainer

    full, _ = run(8)
    assert full.autoencoder._compiled_call_impl is not None
    _, half_trainer = run(4)
    half_trainer.save_checkpoint(tmp_path / "half.ckpt")
    state = _no_compile_prefix(tmp_path / "half.ckpt")
    eager = AutoencoderKLModule.load_from_checkpoint(tmp_path / "half.ckpt", map_location="cpu")
    assert all(torch.equal(eager.state_dict()[k], v) for k, v in state.items())
    resumed, trainer = run(8, ckpt_path=tmp_path / "half.ckpt")
    assert trainer.global_step == 8
    for key, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
