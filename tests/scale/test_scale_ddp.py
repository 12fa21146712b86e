"""DDP on CPU (2 processes, gloo) for both stages: what the ranks share, what they do not, and the maths.

The maths: DDP averages the ranks' gradients, so a step on 2 ranks x batch b equals one step on the global
batch of 2b *given the same random draws per sample*. The draws here come from each rank's own RNG (rank r
is seeded with seed + r), so the single-process reference below is computed on the global batch with the
noise each rank drew (replayed from the RNG state the probe recorded at the start of each step). Data
sharding differs from a single process's shuffling (DistributedSampler), so the reference takes the ranks'
batches rather than a second training run. The runs use SGD: its step is proportional to the gradient,
while Adam's first steps are about lr * sign(gradient), which turns rounding noise on gradients that are zero
in exact arithmetic (e.g. a convolution bias right before a GroupNorm) into full-size steps of either sign.

Stage 1's PatchDiscriminator uses BatchNorm. SyncBatchNorm is GPU-only in PyTorch (``trainer=ddp`` turns it
on; ``trainer=ddp_cpu`` cannot), so on CPU each rank normalizes with its own batch statistics and the maths
says: DDP step == the step whose gradient is the mean of the ranks' gradients, the discriminator evaluated
per rank's half. The reference below does exactly that; the autoencoder itself (GroupNorm) sees the global
batch. BatchNorm running statistics are rank zero's at every forward (DDP broadcasts buffers) and drift on
the other ranks in between, so they are left out of the rank comparison of stage 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import run_module
from omegaconf import OmegaConf

from cxr_ldm.models.autoencoder import AutoencoderKLModule
from cxr_ldm.models.diffusion import LatentDiffusionModule
from cxr_ldm.models.losses import adversarial_factor, kl_divergence

pytestmark = pytest.mark.slow

DDP_SMALL = ["debug=tiny", "data.batch_size=4", "trainer=ddp_cpu"]
STEPS = 3
SGD = "torch.optim.SGD"
BATCHNORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _probe(out: Path) -> list[str]:
    return ["+callbacks.rank_probe._target_=rank_probe.RankProbe", f"+callbacks.rank_probe.out_dir={out}"]


def _env() -> dict[str, str]:
    here = str(Path(__file__).parent)
    return {"PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}


def _load_probes(out: Path) -> list[dict]:
    probes = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [p["world_size"] for p in probes] == [2, 2]
    return probes


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> float:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys and all(k in b for k in keys)
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, NaN == NaN (the auto scale factor is NaN until measured)."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])


def _assert_ranks_agree(probes: list[dict], skip: tuple[str, ...] = ()) -> None:
    """Every parameter and buffer identical on both ranks: before training, after each step, at the end."""
    zero, one = probes
    states = [("initial", zero["initial"], one["initial"]), ("final", zero["final"], one["final"])]
    states += [
        (f"step {i}", a["after"], b["after"])
        for i, (a, b) in enumerate(zip(zero["steps"], one["steps"], strict=True))
    ]
    for name, a, b in states:
        assert a.keys() == b.keys()
        different = [k for k in a if not _same(a[k], b[k]) and not any(s in k for s in skip)]
        assert not different, f"{name}: ranks differ in {different[:5]}"


def _assert_ranks_saw_different_data_and_noise(probes: list[dict]) -> None:
    zero, one = probes
    assert not set(zero["seen_ids"]) & set(one["seen_ids"]), "DistributedSampler must shard the data"
    for a, b in zip(zero["steps"], one["steps"], strict=True):
        assert not torch.equal(a["rng"], b["rng"]), "each rank must draw its own noise"
        assert not torch.equal(a["image"], b["image"])


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, shared_data_dir):
    """Stage 1 on 2 ranks, started as a one-job local multirun (children must run that job, not a sweep)."""
    tmp = tmp_path_factory.mktemp("ddp_stage1")
    sweep, probe = tmp / "sweep", tmp / "probe"
    proc = run_module(
        "cxr_ldm.train", "-m", "experiment=aekl_phantom", f"paths.data_dir={shared_data_dir}",
        f"hydra.sweep.dir={sweep}", "model.adv_start=0", f"model.optimizer_g._target_={SGD}",
        f"model.optimizer_d._target_={SGD}", "model.optimizer_g.lr=0.01", "model.optimizer_d.lr=1.0",
        *DDP_SMALL, *_probe(probe),
        cwd=tmp, env=_env(), timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return {"tmp": tmp, "run": sweep / "0", "probe": probe, "proc": proc}


@pytest.fixture(scope="module")
def stage2(tmp_path_factory, shared_data_dir, stage1):
    tmp = tmp_path_factory.mktemp("ddp_stage2")
    run, probe = tmp / "run", tmp / "probe"
    proc = run_module(
        "cxr_ldm.train", "experiment=ldm_phantom", f"paths.data_dir={shared_data_dir}",
        f"hydra.run.dir={run}", f"model.autoencoder_ckpt={stage1['run'] / 'checkpoints' / 'last.ckpt'}",
        "sampling.steps=2",
        f"model.optimizer._target_={SGD}", "model.optimizer.lr=0.05",
        "callbacks.sample_grid.n_per_prompt=1", *DDP_SMALL, *_probe(probe),
        cwd=tmp, env=_env(), timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return {"tmp": tmp, "run": run, "probe": probe, "proc": proc}


def test_stage1_ranks_agree_shard_data_and_write_once(stage1):
    probes = _load_probes(stage1["probe"])
    _assert_ranks_agree(probes, skip=BATCHNORM_STATS)
    _assert_ranks_saw_different_data_and_noise(probes)
    assert [len(p["steps"]) for p in probes] == [STEPS, STEPS]
    zero = probes[0]
    assert _max_diff(zero["final"], zero["initial"], "discriminator.") > 0  # adv_start=0: it trained
    # rank zero alone logged and saved: one run folder, one metrics file, generator steps counted once
    run = stage1["run"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == STEPS
    assert sorted(p.name for p in stage1["run"].parent.iterdir() if p.is_dir()) == ["0"]
    assert len(list(run.rglob("metrics.csv"))) == 1
    assert not (stage1["tmp"] / "logs").exists(), "a DDP child started a run of its own"
    assert torch.equal(ckpt["state_dict"]["autoencoder.encoder.blocks.0.conv.weight"],
                       zero["final"]["autoencoder.encoder.blocks.0.conv.weight"])  # fmt: skip


def test_stage1_ddp_step_equals_a_step_on_the_global_batch(stage1):
    """Generator and discriminator updates on 2 ranks == one process averaging the ranks' losses."""
    probes = _load_probes(stage1["probe"])
    cfg = OmegaConf.load(stage1["run"] / ".hydra" / "config.yaml")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("_target_")
    lr_g, lr_d = model_cfg.pop("optimizer_g")["lr"], model_cfg.pop("optimizer_d")["lr"]
    module = AutoencoderKLModule(**model_cfg)
    module.load_state_dict(probes[0]["initial"])
    module.train()
    ae, disc, hp = module.autoencoder, module.discriminator, module.hparams
    assert hp.perceptual_weight == 0 and hp.adv_start == 0
    opt_g, opt_d = torch.optim.SGD(ae.parameters(), lr=lr_g), torch.optim.SGD(disc.parameters(), lr=lr_d)
    adv = module.adversarial_loss
    factor = adversarial_factor(0, hp.adv_start, hp.adv_warmup_epochs)  # one epoch: epoch 0
    assert factor > 0

    for k in range(STEPS):
        parts = [p["steps"][k] for p in probes]
        images = torch.cat([p["image"] for p in parts])
        z_mu, z_sigma = ae.encode(images)
        eps = []
        for p, part_mu in zip(parts, z_mu.chunk(2), strict=True):
            torch.set_rng_state(p["rng"])
            eps.append(torch.randn_like(part_mu))  # the rank's first draw of the step: the posterior sample
        reconstruction = ae.decode(z_mu + torch.cat(eps) * z_sigma)

        def logits(x: torch.Tensor) -> torch.Tensor:  # BatchNorm statistics per rank's half (see module doc)
            return torch.cat([disc(half)[-1] for half in x.chunk(2)])

        disc.requires_grad_(False)
        loss_g = hp.l1_weight * F.l1_loss(reconstruction, images) + hp.kl_weight * kl_divergence(
            z_mu, z_sigma
        )
        loss_g = loss_g + factor * hp.adv_weight * adv(
            logits(reconstruction), target_is_real=True, for_discriminator=False
        )
        opt_g.zero_grad()
        loss_g.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), hp.grad_clip_norm)
        opt_g.step()
        disc.requires_grad_(True)
        loss_d = 0.5 * (
            adv(logits(reconstruction.detach()), target_is_real=False, for_discriminator=True)
            + adv(logits(images), target_is_real=True, for_discriminator=True)
        )
        opt_d.zero_grad()
        (factor * hp.adv_weight * loss_d).backward()
        torch.nn.utils.clip_grad_norm_(disc.parameters(), hp.grad_clip_norm)
        opt_d.step()

        expected, ddp = module.state_dict(), parts[0]["after"]
        params = {k for k, _ in module.named_parameters()}
        ddp, expected = ({k: v for k, v in s.items() if k in params} for s in (ddp, expected))
        for prefix in ("autoencoder.", "discriminator."):
            moved = _max_diff(ddp, probes[0]["initial"], prefix)
            error = _max_diff(ddp, expected, prefix)
            print(f"stage 1 step {k} {prefix}: moved {moved:.3g}, DDP - reference {error:.3g}")
            assert moved > 0
            assert error < 1e-3 * moved, f"step {k} {prefix}: DDP differs from the global batch by {error}"


def test_stage2_ranks_agree_shard_data_and_share_the_scale_factor(stage2):
    probes = _load_probes(stage2["probe"])
    _assert_ranks_agree(probes)  # UNet, EMA copy, measured scale factor and its moments
    _assert_ranks_saw_different_data_and_noise(probes)
    ckpt = torch.load(stage2["run"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == STEPS
    assert len(list(stage2["run"].rglob("metrics.csv"))) == 1
    assert not (stage2["tmp"] / "logs").exists()


def test_stage2_ddp_step_equals_a_step_on_the_global_batch(stage2):
    """UNet updates and the auto scale factor on 2 ranks == one process on the global batch, same draws."""
    probes = _load_probes(stage2["probe"])
    cfg = OmegaConf.load(stage2["run"] / ".hydra" / "config.yaml")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("_target_"), model_cfg.pop("_recursive_", None)
    lr = model_cfg["optimizer"]["lr"]
    module = LatentDiffusionModule(**model_cfg)
    module.load_state_dict(probes[0]["initial"])
    module.train()
    assert module.auto_scale and module.hparams.scale_factor_batches >= STEPS
    optimizer = torch.optim.SGD(module.unet.parameters(), lr=lr)
    count = total = total_sq = 0.0

    for k in range(STEPS):
        parts = [p["steps"][k] for p in probes]
        posteriors = [module.encode_latents(p["image"]) for p in parts]
        # 1/std of all posterior latents seen so far on both ranks: std^2 = E[mu^2 + sigma^2] - E[mu]^2
        for mu, sigma in posteriors:
            count += mu.numel()
            total += mu.double().sum().item()
            total_sq += (mu.double() ** 2 + sigma.double() ** 2).sum().item()
        scale = 1.0 / ((total_sq / count - (total / count) ** 2) ** 0.5)
        losses = []
        for part, (mu, sigma) in zip(parts, posteriors, strict=True):
            torch.set_rng_state(part["rng"])  # the rank's draws, in training_step's order
            latents = (mu + torch.randn_like(sigma) * sigma) * scale
            context = module.encode_text(part["tokens"])
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, module.noise_scheduler.num_train_timesteps, (latents.shape[0],))
            losses.append(module.diffusion_loss(latents, context, noise, timesteps))
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()

        ddp = parts[0]["after"]
        assert ddp["scale_factor"].item() == pytest.approx(scale, rel=1e-5)
        moved = _max_diff(ddp, probes[0]["initial"], "unet.")
        error = _max_diff(ddp, {f"unet.{k}": v for k, v in module.unet.state_dict().items()}, "unet.")
        print(f"stage 2 step {k}: moved {moved:.3g}, DDP - reference {error:.3g}")
        assert moved > 0
        assert error < 1e-3 * moved, f"step {k}: DDP UNet differs from the global batch by {error}"
