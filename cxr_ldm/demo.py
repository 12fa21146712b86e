"""``python -m cxr_ldm.demo out_dir=DIR``: phantom data -> stage 1 -> stage 2 -> samples, as a user would run them.

Each step is the project's own command in a subprocess (``cxr_ldm/training/demo_steps.py``), and a step whose
result is already in ``out_dir`` is skipped, so an interrupted demo resumes. ``model=PATH`` samples the demo's
prompts from a given model instead of training one.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from cxr_ldm.training.demo_steps import sample_prompts, summary, train_stage
from cxr_ldm.utils import resolvers  # noqa: F401  (registers the resolvers --help and the configs use)
from cxr_ldm.utils.cli import INFERENCE_CONF, hydra_command, require_options


@hydra_command(config_path=INFERENCE_CONF, config_name="demo")
def main(cfg: DictConfig) -> None:
    require_options(cfg, {"out_dir": "folder for data, checkpoints and samples"}, "cxr_ldm.demo")
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start, timings = time.perf_counter(), {}
    if cfg.get("model"):
        model, trained = str(Path(str(cfg.model)).expanduser()), None
    else:
        aekl = train_stage("aekl", "aekl_phantom", out, cfg, list(cfg.aekl_overrides), timings)
        ldm = train_stage("ldm", "ldm_phantom", out, cfg, [f"model.autoencoder_ckpt={aekl}", *cfg.ldm_overrides], timings)
        model, trained = str(ldm), (aekl, ldm)
    sample_prompts(model, cfg, out / "samples", timings)
    print(summary(out, model, trained, (time.perf_counter() - start) / 60, timings))


if __name__ == "__main__":
    main()
