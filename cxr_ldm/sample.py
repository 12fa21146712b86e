"""``python -m cxr_ldm.sample model=PATH prompts='[...]' out_dir=DIR``: chest X-rays from report text.

Writes ``<PP>_<NNN>.png`` per image (8-bit grayscale), ``grid_<PP>.png`` per prompt, ``prompt_grid.png`` (each
prompt's images captioned) and ``samples.json`` (each image's file, prompt, seed and settings: image ``k`` over all
prompts uses ``sampling.seed + k``, so any image can be regenerated alone). Options are checked and the model
loaded before anything is written.
"""

from __future__ import annotations

from omegaconf import DictConfig

from cxr_ldm.pipelines.sample_job import sample_as_configured
from cxr_ldm.utils import resolvers  # noqa: F401  (registers the resolvers --help and the configs use)
from cxr_ldm.utils.cli import INFERENCE_CONF, hydra_command, run_command


@hydra_command(config_path=INFERENCE_CONF, config_name="sample")
def main(cfg: DictConfig) -> None:
    run_command(sample_as_configured, cfg)


if __name__ == "__main__":
    main()
