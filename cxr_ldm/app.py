"""``python -m cxr_ldm.app model=PATH [host=127.0.0.1] [port=7860]``: generate chest X-rays in a browser.

Serves on 127.0.0.1 unless ``host=`` says otherwise (``host=0.0.0.0`` opens it to the network: your choice).
Needs the ``app`` extra (gradio); without it the command says how to install it.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from cxr_ldm.utils import resolvers  # noqa: F401  (registers the resolvers --help and the configs use)
from cxr_ldm.utils.cli import INFERENCE_CONF, hydra_command, require_options, run_command

INSTALL_HINT = 'cxr_ldm.app needs gradio, which is not installed: pip install -e ".[app]"  (or pip install "gradio>=5")'


def run(cfg: DictConfig) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a dependency logs its plugin setup at import
    from cxr_ldm.pipelines import CXRLDMPipeline
    from cxr_ldm.ui.generation import Generator, Limits, model_note, model_summary
    from cxr_ldm.ui.gradio_app import build_app, launch
    from cxr_ldm.utils.devices import resolve_device

    model = Path(str(cfg.model)).expanduser()
    pipe = CXRLDMPipeline.load(model, text_encoder=cfg.get("text_encoder")).to(resolve_device(str(cfg.device)))
    work_dir = tempfile.mkdtemp(prefix="cxr_ldm_app_")
    atexit.register(shutil.rmtree, work_dir, True)
    limits = Limits(int(cfg.max_images), int(cfg.max_steps), float(cfg.max_guidance))
    generator = Generator(pipe, str(model.resolve()), work_dir, limits, int(cfg.batch_size), int(cfg.keep_runs))
    demo = build_app(generator, str(cfg.title), list(cfg.examples), model_summary(pipe, str(model)),
                     model_note(pipe), int(cfg.queue_size))  # fmt: skip
    launch(demo, str(cfg.host), int(cfg.port), allowed=[work_dir])


@hydra_command(config_path=INFERENCE_CONF, config_name="app")
def main(cfg: DictConfig) -> None:
    if importlib.util.find_spec("gradio") is None:
        sys.exit(INSTALL_HINT)
    require_options(cfg, {"model": "a trained ldm.ckpt, an exported folder or the MONAI bundle (+ text_encoder=)"},
                    "cxr_ldm.app")  # fmt: skip
    run_command(run, cfg)


if __name__ == "__main__":
    main()
