"""One rank of the per-rank RNG resume check (started twice by ``test_rng_resume.py`` with torchrun's variables).

For each stage given (``ae``, ``ldm``): an uninterrupted 2-epoch DDP fit that checkpoints after
epoch 0, then a second fit resumed from that checkpoint, seeded as train.py seeds (the same seed, RankSeeds). Each rank writes the
global torch RNG state after every training step and the final weights of both fits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers, ldm_fixtures
from helpers import TINY_AUTOENCODER  # noqa: E402
from ldm_fixtures import build_ldm, make_loader, quiet_trainer  # noqa: E402

from cxr_ldm.callbacks.rank_seeds import RankSeeds  # noqa: E402
from cxr_ldm.models.autoencoder import AutoencoderKLModule  # noqa: E402


class RngProbe(L.Callback):
    def __init__(self) -> None:
        self.states: list[tuple[int, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # after the step: what it drew (a callback's on_train_batch_start runs before the module's)
        self.states.append((trainer.current_epoch, torch.get_rng_state()))


def build(stage: str, ae_ckpt: str):
    torch.manual_seed(0)  # the same initial weights on both ranks
    if stage == "ae":
        disc = {"spatial_dims": 2, "in_channels": 1, "channels": 8, "num_layers_d": 1}
        return AutoencoderKLModule(TINY_AUTOENCODER, disc, perceptual_weight=0.0, adv_start=1)
    return build_ldm(ae_ckpt, scale_factor=0.5, image_size=32)


def fit(stage: str, ae_ckpt: str, root: Path, seed: int, ckpt_path: str | None):
    L.seed_everything(seed, verbose=False)  # as train.py: the same seed, then RankSeeds gives rank r seed + r
    probe = RngProbe()
    checkpoint = ModelCheckpoint(dirpath=root, filename="epoch{epoch}", every_n_epochs=1, save_top_k=-1,
                                 auto_insert_metric_name=False)  # fmt: skip
    trainer = quiet_trainer(
        root, strategy="ddp", devices=2, max_epochs=2, limit_val_batches=0, callbacks=[RankSeeds(seed), probe, checkpoint],
        enable_checkpointing=True, use_distributed_sampler=True,
    )  # fmt: skip
    module = build(stage, ae_ckpt)
    trainer.fit(module, train_dataloaders=make_loader(n=8, batch_size=2), ckpt_path=ckpt_path)
    final = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return probe.states, final, trainer.global_step


def main() -> None:
    out, ae_ckpt = Path(sys.argv[1]), sys.argv[2]
    rank = int(__import__("os").environ["RANK"])
    torch.set_num_threads(1)
    result = {}
    for stage in sys.argv[3].split(","):
        full_states, full_final, full_steps = fit(stage, ae_ckpt, out / stage / "full", 100, None)
        resumed_states, resumed_final, resumed_steps = fit(
            stage, ae_ckpt, out / stage / "resumed", 100, str(out / stage / "full" / "epoch0.ckpt")
        )
        result[stage] = {
            "full": full_states, "full_final": full_final, "full_steps": full_steps,
            "resumed": resumed_states, "resumed_final": resumed_final, "resumed_steps": resumed_steps,
        }  # fmt: skip
    torch.save(result, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
