"""``python -m cxr_ldm.export ckpt=ldm.ckpt out_dir=DIR``: a trained model as one self-contained folder.

The folder (diffusers-like: ``model_index.json``, per component ``config.json`` + safetensors, the EMA UNet, the
schedule, scale factor, latent shape and a model card) loads with ``CXRLDMPipeline.from_pretrained(DIR)`` from
JSON and safetensors only, and fine-tunes with ``python -m cxr_ldm.train experiment=ldm model.init_from=DIR``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from cxr_ldm.models.exported import check_export_folder
from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.pipelines.model_card import find_metrics, model_card
from cxr_ldm.utils import resolvers  # noqa: F401  (registers the resolvers --help and the configs use)
from cxr_ldm.utils.cli import INFERENCE_CONF, hydra_command, require_options, run_command
from cxr_ldm.utils.folders import OutputFolderError, write_or_folder_error


def run(cfg: DictConfig) -> Path:
    source = Path(str(cfg.ckpt)).expanduser()
    check_export_folder(cfg.out_dir, bool(cfg.overwrite))  # before the model is read
    pipe = CXRLDMPipeline.load(source, text_encoder=cfg.get("text_encoder"), option="ckpt")
    metrics = Path(str(cfg.metrics)).expanduser() if cfg.get("metrics") else find_metrics(source)
    if metrics is not None and not metrics.is_file():
        raise FileNotFoundError(f"metrics={str(metrics)!r} does not exist")
    card = model_card(pipe.components, source.resolve(), metrics)
    try:
        out = pipe.save_pretrained(cfg.out_dir, model_card=card, overwrite=bool(cfg.overwrite))
    except OSError as error:  # out_dir is left as it was (the folder is built beside it, then renamed)
        raise OutputFolderError(write_or_folder_error(cfg.out_dir, error, "exported model's file")) from error
    print(f"exported {source} to {out} (load with CXRLDMPipeline.from_pretrained({str(out)!r}))")
    return out


@hydra_command(config_path=INFERENCE_CONF, config_name="export")
def main(cfg: DictConfig) -> None:
    require_options(cfg, {"ckpt": "the trained ldm.ckpt to export", "out_dir": "the folder to write"},
                    "cxr_ldm.export")  # fmt: skip
    run_command(run, cfg)


if __name__ == "__main__":
    main()
