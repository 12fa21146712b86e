"""The model card (``README.md``) written into an exported folder: what the model is, how it was made, what
it may be used for. It quotes numbers found beside the checkpoint; it never contains dataset content."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cxr_ldm.models.components import LDMComponents

DATA_USE = (
    "Models trained on MIMIC-CXR are derived from credentialed data. The PhysioNet Credentialed Health Data Use "
    "Agreement applies to sharing them: share only with credentialed users who signed it, never try to identify "
    "patients, and do not publish generated images as real patient data. Generated images can reproduce training "
    "images (check `python -m cxr_ldm.evaluate metrics=[memorization]` before sharing samples)."
)


def find_metrics(source: Path) -> Path | None:
    """The newest ``metrics.json`` in the checkpoint's folder, its parent, or their ``eval*`` subfolders."""
    folders = [source.parent, source.parent.parent] if source.is_file() else [source, source.parent]
    found = []
    for folder in folders:
        found += [p for p in folder.glob("metrics.json") if p.is_file()]
        found += [p for p in folder.glob("eval*/metrics.json") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _training_config(source: Path) -> dict[str, Any] | None:
    """The Hydra config of the run that wrote the checkpoint (``<run>/.hydra/config.yaml``), when it is there."""
    for folder in (source.parent, source.parent.parent):
        config = folder / ".hydra" / "config.yaml"
        if config.is_file():
            from omegaconf import OmegaConf

            return OmegaConf.to_container(OmegaConf.load(config), resolve=False)  # type: ignore[return-value]
    return None


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for name, value in metrics.items():
        if name in ("samples", "settings") or not isinstance(value, dict):
            continue
        scalars = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in list(scalars.items())[:6])
        label = " [random feature weights: plumbing only]" if "random" in json.dumps(value).lower() else ""
        lines.append(f"| {name} | {shown}{label} |")
    return lines


def model_card(components: LDMComponents, source: Path, metrics_file: Path | None) -> str:
    cfg = _training_config(source)
    data = (cfg or {}).get("data", {}) if cfg else {}
    data_name = str(data.get("_target_", "")) if isinstance(data, dict) else ""
    data_dir = data.get("data_dir") if isinstance(data, dict) else None
    unet_params = sum(p.numel() for p in components.unet.parameters())
    ae_params = sum(p.numel() for p in components.autoencoder.parameters())
    text = components.configs.get("text_encoder", {})
    lines = [
        "---",
        "library_name: cxr-ldm",
        "tags: [chest-x-ray, latent-diffusion, text-to-image, medical-imaging]",
        "---",
        "# Text-to-chest-X-ray latent diffusion model",
        "",
        "Load it with `CXRLDMPipeline.from_pretrained(\"<this folder>\")` (package `cxr-ldm`), or sample with "
        "`python -m cxr_ldm.sample model=<this folder> prompts='[\"Small left pleural effusion.\"]'`.",
        "",
        "## Model",
        f"- Autoencoder: MONAI AutoencoderKL, {ae_params:,} parameters, channels {components.configs['autoencoder'].get('channels')}, "
        f"latent {list(components.latent_shape)} (scale factor {components.scale_factor:.4g}).",
        f"- Diffusion UNet: MONAI DiffusionModelUNet, {unet_params:,} parameters"
        f"{' (EMA weights)' if components.source.get('ema') else ''}; noise schedule {components.schedule}.",
        f"- Text encoder: {text.get('name') or text.get('model_name') or 'open_clip text tower'}"
        f" ({'weights stored here' if text.get('seed') is not None else 'weights read from ' + str(text.get('weights_path') or text.get('hf_hub_id'))}).",
        f"- Exported from: `{source}` ({components.source.get('kind')}).",
        "",
        "## Training data and settings",
    ]
    if cfg is not None:
        model_cfg = cfg.get("model", {}) if isinstance(cfg.get("model"), dict) else {}
        lines += [
            f"- Data: `{data_name or 'see config'}`" + (f" from `{data_dir}`" if data_dir else ""),
            f"- Image size {data.get('image_size')}, batch size {data.get('batch_size')}, "
            f"optimizer {model_cfg.get('optimizer')}, EMA decay {model_cfg.get('ema_decay')}, "
            f"max epochs {(cfg.get('trainer') or {}).get('max_epochs')}, seed {cfg.get('seed')}.",
        ]
    else:
        lines.append("- The training run's config was not found beside the checkpoint.")
    lines += ["", "## Evaluation"]
    if metrics_file is not None:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        lines += [f"From `{metrics_file}`:", "", "| measure | values |", "| --- | --- |", *_metric_lines(metrics)]
    else:
        lines.append("No metrics.json was found beside the checkpoint (run `python -m cxr_ldm.evaluate`).")
    lines += [
        "",
        "## Intended use",
        "Research on generative models of chest radiographs: data augmentation studies, evaluation methodology, "
        "education. Not for clinical use, diagnosis or any decision about a patient. Generated images are "
        "synthetic and may show anatomy or findings that are wrong.",
        "",
        "## Data use",
        DATA_USE,
        "",
    ]
    return "\n".join(lines)
