"""The evaluation run behind ``python -m cxr_ldm.evaluate``: check, load, sample, then one measure at a time.

Options and inputs are checked and every feature network is loaded before anything slow happens (missing
inputs or weights files stop the command first); generated images are sampled into ``out_dir/samples`` and
read back like any folder; ``metrics.json`` is rewritten after every measure, so a long run that fails late
keeps what it measured; the table is printed and ``report.md`` written last.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxr_ldm.evaluation.context import Context
from cxr_ldm.evaluation.generate import folder_sources, grid_rows, load_pipeline, sample_set
from cxr_ldm.evaluation.inputs import GENERATED, EvaluationError, Inputs, option
from cxr_ldm.evaluation.networks import load_networks
from cxr_ldm.evaluation.registry import MEASURES, networks_for
from cxr_ldm.evaluation.report import write_report
from cxr_ldm.evaluation.table import format_table
from cxr_ldm.metrics.sources import native_size
from cxr_ldm.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SAMPLING_KEYS = ("sampler", "steps", "guidance_scale", "eta", "timestep_spacing")

__all__ = ["METRICS_FILE", "Evaluation", "EvaluationError", "run_evaluation"]


class Evaluation:
    """One configured evaluation; :meth:`run` computes the measures and returns (and writes) them."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.inputs = Inputs.from_config(cfg, MEASURES)
        self.names = self.inputs.names
        self.out_dir = self.inputs.out_dir
        # before any sampling: a missing weights file fails fast
        self.networks = load_networks(networks_for(self.names, self.inputs), cfg, self.inputs.device)
        self.metrics: dict[str, Any] = {}
        self.ctx: Context | None = None
        self.grid: list[tuple[str, list[Path]]] = []
        self.payload: dict[str, Any] = {}

    def _generated(self) -> Context:
        inputs = self.inputs
        fake, samples, sources, pipe = None, {}, None, None
        if any(GENERATED in MEASURES[name].needs for name in self.names):
            if inputs.fake_dir is not None:
                fake, samples = inputs.fake_folder()
                sources = folder_sources(inputs, fake)
            else:
                pipe = load_pipeline(inputs)
                fake, samples, sources = sample_set(inputs, pipe)
        self.grid = grid_rows(inputs, pipe, fake)
        del pipe
        size = option(self.cfg, "image_size")
        if not size:
            first = fake if fake is not None else inputs.real
            assert first is not None
            size = native_size(first.paths[0])
        return Context(inputs, self.networks, fake, int(size), samples, sources)

    def _write(self) -> Path:
        ctx, xrv = self.ctx, self.networks.xrv
        real = self.inputs.real
        settings = {
            "metrics": self.names, "image_size": ctx.image_size if ctx else None, "seed": self.inputs.seed,
            "n_real": option(self.cfg, "n_real"), "real": real.name if real is not None else None,
            "device": str(self.inputs.device), "xrv_weights": xrv.weights_label if xrv is not None else None,
            "sampling": self._sampling(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }  # fmt: skip
        samples = ctx.samples if ctx else None
        payload = {**self.metrics, "samples": samples or None, "settings": settings}
        self.payload = payload
        path = self.out_dir / METRICS_FILE
        atomic_write_text(path, json.dumps(payload, indent=2, default=str), "metrics file", durable=False)
        return path

    def _sampling(self) -> dict[str, Any]:
        """The sampling settings the generated images were made with (resolved: the model's defaults filled
        in), else the configured ones: what a guidance-scale sweep's report reads."""
        samples = self.ctx.samples if self.ctx else {}
        resolved = {k: samples[k] for k in SAMPLING_KEYS if k in samples}
        return resolved or self.inputs.sampling.as_dict()

    def _report(self) -> Path | None:
        if not option(self.cfg, "report.enabled"):
            return None
        inputs = self.inputs
        source = inputs.model_path or inputs.fake_dir
        name = option(self.cfg, "report.model_name") or (source.name if source is not None else "this model")
        written = write_report(self.payload, self.out_dir, sample_rows=self.grid or None,
                               title=str(option(self.cfg, "report.title")), model_name=str(name),
                               notes=list(option(self.cfg, "report.notes") or []))  # fmt: skip
        return written["report"]

    def run(self) -> dict[str, Any]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ctx = self._generated()
        for name in self.names:
            start = time.perf_counter()
            log.info("computing %s", name)
            result = MEASURES[name].compute(self.ctx)
            result["seconds"] = round(time.perf_counter() - start, 2)
            self.metrics[name] = result
            self._write()
        print(format_table(self.metrics, self.names))
        print(f"wrote {self.out_dir / METRICS_FILE}")
        report = self._report()
        if report is not None:
            print(f"wrote {report}")
        return self.metrics


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    return Evaluation(cfg).run()
