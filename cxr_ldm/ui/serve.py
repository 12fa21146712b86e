"""The app command's work: every option checked before the model is read (a wrong port or limit costs a second,
not a model load followed by a server error), then the page served."""

from __future__ import annotations

import atexit
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxr_ldm.pipelines.prompts import check_prompt_lengths, collect_prompts
from cxr_ldm.pipelines.settings import check_steps_for


class AppConfigError(ValueError):
    """A wrong app option; the message names it and what it accepts."""


def _whole(cfg: DictConfig, key: str, low: int, high: int | None = None) -> int:
    value = cfg.get(key)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        span = f"between {low} and {high}" if high is not None else f">= {low}"
        raise AppConfigError(f"{key}={value} must be an integer {span}")
    return value


def check_app_options(cfg: DictConfig) -> dict[str, Any]:
    """The checked options: ``limits`` (max_images, max_steps, max_guidance) and ``examples``."""
    _whole(cfg, "port", 0, 65535)
    if not str(cfg.get("host") or "").strip():
        raise AppConfigError(
            "host= is empty: give an address to serve on, e.g. host=127.0.0.1 (this machine only)"
        )
    guidance = cfg.get("max_guidance")
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, int | float)
        or not math.isfinite(guidance)
        or guidance < 0
    ):
        raise AppConfigError(f"max_guidance={guidance} must be a finite number >= 0")
    for key in ("batch_size", "queue_size", "keep_runs"):
        _whole(cfg, key, 1)
    examples = (
        OmegaConf.to_container(cfg.examples, resolve=True)
        if OmegaConf.is_config(cfg.examples)
        else cfg.examples
    )
    examples = collect_prompts(examples or [], None, "examples") if examples else []
    check_prompt_lengths(examples, "examples", truncate_option=None)
    return {
        "limits": (_whole(cfg, "max_images", 1), _whole(cfg, "max_steps", 1), float(guidance)),
        "examples": examples,
    }


def serve_as_configured(cfg: DictConfig) -> None:
    """Check the options, load the model, serve the page until stopped."""
    options = check_app_options(cfg)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a dependency logs its plugin setup at import
    from cxr_ldm.pipelines import CXRLDMPipeline
    from cxr_ldm.utils.devices import resolve_device

    model = Path(str(cfg.model)).expanduser()
    pipe = CXRLDMPipeline.load(model, text_encoder=cfg.get("text_encoder")).to(
        resolve_device(str(cfg.device))
    )
    check_steps_for(pipe, options["limits"][1], "max_steps")
    from cxr_ldm.ui.generation import Generator, Limits, model_note, model_summary
    from cxr_ldm.ui.gradio_app import build_app, launch  # gradio: seconds to import, so after the checks

    work_dir = tempfile.mkdtemp(prefix="cxr_ldm_app_")
    atexit.register(shutil.rmtree, work_dir, True)
    limits = Limits(*options["limits"])
    generator = Generator(
        pipe, str(model.resolve()), work_dir, limits, int(cfg.batch_size), int(cfg.keep_runs)
    )
    demo = build_app(generator, str(cfg.title), options["examples"], model_summary(pipe, str(model)),
                     model_note(pipe), int(cfg.queue_size))  # fmt: skip
    launch(demo, str(cfg.host), int(cfg.port), allowed=[work_dir])
