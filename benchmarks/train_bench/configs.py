"""The experiment configs the benchmark composes, and random-weight files in the real formats they read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cxr_ldm.utils import resolvers  # noqa: F401  (${cwd:} and friends)

REPO = Path(__file__).resolve().parents[2]

CONF = REPO / "conf"
EXPERIMENTS = {
    ("aekl", "tiny"): "aekl_phantom",
    ("aekl", "reference"): "aekl",
    ("ldm", "tiny"): "ldm_phantom",
    ("ldm", "reference"): "ldm",
}


def compose_config(stage: str, nets: str, device: str, work: Path, overrides: list[str]) -> Any:
    """The experiment's config as ``cxr_ldm.train`` composes it, pointed at ``work`` for every path."""
    base = [
        f"experiment={EXPERIMENTS[(stage, nets)]}", f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
        "logger=csv", "callbacks=none", f"paths.output_dir={work}", f"paths.work_dir={work}",
        f"paths.root_dir={work}", "data.num_workers=0",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=base + overrides)


def write_weight_files(
    cfg: Any, stage: str, work: Path, text_weights: Path | None, notes: list[str], text: bool = True
) -> list[str]:
    """Random-weight files in the real formats that the configs read; returns the overrides pointing at them."""
    from monai.networks.nets import AutoencoderKL

    out: list[str] = []
    if stage == "aekl" and cfg.model.perceptual_weight > 0:
        try:
            import lpips  # noqa: F401  (imports scipy)
        except ImportError as error:
            notes.append(f"perceptual term off on every side: lpips cannot be imported here ({error})")
            return ["model.perceptual_weight=0"]
        import torchvision

        path = work / f"{cfg.model.perceptual_network}_backbone.pth"
        if cfg.model.perceptual_network != "squeeze":
            raise SystemExit("the benchmark writes only squeezenet (the reference's LPIPS backbone)")
        torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
        out.append(f"model.perceptual_weights_path={path}")
    if stage == "ldm":
        stage1 = compose_config("aekl", "reference" if cfg.model.unet.channels[0] >= 256 else "tiny", "cpu", work, [])
        arch = OmegaConf.to_container(stage1.model.autoencoder, resolve=True)
        torch.manual_seed(0)
        ae = AutoencoderKL(**arch)
        path = work / "aekl.ckpt"
        torch.save({"hyper_parameters": {"autoencoder": arch},
                    "state_dict": {f"autoencoder.{k}": v for k, v in ae.state_dict().items()}}, path)  # fmt: skip
        out.append(f"model.autoencoder_ckpt={path}")
        if text and cfg.model.text_encoder.get("seed") is None:  # a pretrained tower (sd21): its file, random weights
            if text_weights is None:
                text_weights = work / "open_clip_pytorch_model.bin"
            if not text_weights.is_file():
                from cxr_ldm.models.text_encoder import FrozenOpenCLIPTextEncoder

                text = OmegaConf.to_container(cfg.model.text_encoder, resolve=True)
                tower = FrozenOpenCLIPTextEncoder(model_name=text["model_name"], text_cfg=text["text_cfg"], seed=0)
                torch.save(tower.tower.state_dict(), text_weights)
            out.append(f"model.text_encoder.weights_path={text_weights}")
    return out
