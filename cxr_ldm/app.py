"""``python -m cxr_ldm.app model=PATH [host=127.0.0.1] [port=7860]``: generate chest X-rays in a browser.

Serves on 127.0.0.1 unless ``host=`` says otherwise (``host=0.0.0.0`` opens it to the network: your choice).
Needs the ``app`` extra (gradio); without it the command says how to install it.
"""

from __future__ import annotations

import importlib.util
import sys

from omegaconf import DictConfig

from cxr_ldm.utils import resolvers  # noqa: F401  (registers the resolvers --help and the configs use)
from cxr_ldm.utils.cli import INFERENCE_CONF, hydra_command, require_options, run_command

INSTALL_HINT = 'cxr_ldm.app needs gradio, which is not installed: pip install -e ".[app]"  (or pip install "gradio>=5")'


@hydra_command(config_path=INFERENCE_CONF, config_name="app")
def main(cfg: DictConfig) -> None:
    if importlib.util.find_spec("gradio") is None:
        sys.exit(INSTALL_HINT)
    require_options(cfg, {"model": "a trained ldm.ckpt, an exported folder or the MONAI bundle (+ text_encoder=)"},
                    "cxr_ldm.app")  # fmt: skip
    from cxr_ldm.ui.serve import serve_as_configured

    run_command(serve_as_configured, cfg)


if __name__ == "__main__":
    main()
