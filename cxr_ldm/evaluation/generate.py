"""The generated set of an evaluation: sampled from ``model=`` into ``out_dir/samples``, or ``fake_dir=`` as given.

Sampling goes through the project's pipeline and its one sample-folder writer (8-bit PNGs + ``samples.json``,
resumable), then the images are read back like any folder, so every measure sees the pixels a person would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxr_ldm.evaluation.inputs import EvaluationError, Inputs, option
from cxr_ldm.metrics.sources import ImageSet, folder_set
from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.pipelines.sample_folder import sample_to_folder
from cxr_ldm.pipelines.settings import SamplingConfigError

SAMPLES_DIR = "samples"


def load_pipeline(inputs: Inputs) -> CXRLDMPipeline:
    try:
        pipe = CXRLDMPipeline.load(inputs.model_path, text_encoder=option(inputs.cfg, "text_encoder"))
        inputs.sampling.check_for(pipe)
    except (ModelLoadError, FileNotFoundError, SamplingConfigError) as err:
        raise EvaluationError(str(err)) from err
    return pipe.to(inputs.device)


def sample_set(inputs: Inputs, pipe: CXRLDMPipeline) -> tuple[ImageSet, dict[str, Any], list[int] | None]:
    """``(generated set, metrics.json's "samples", prompt source rows)``: ``sampling.n`` images, image ``k`` with
    seed ``sampling.seed + k``; the source rows are also written to ``samples.json`` (``prompt_sources``), so
    a later ``fake_dir=`` run over this folder knows them too."""
    n = int(option(inputs.cfg, "sampling.n"))
    prompts, source, rows = inputs.prompts(n)
    seeds = [inputs.sampling.seed + k for k in range(n)]
    folder = inputs.out_dir / SAMPLES_DIR
    extra = None
    if rows is not None and inputs.texts is not None:
        extra = {"prompt_sources": {"images": inputs.texts.name, "identity": inputs.texts.identity, "rows": rows}}
    model = str(Path(inputs.model_path).resolve())
    manifest = sample_to_folder(pipe, prompts, seeds, folder, inputs.sampling, model=model,
                                progress=inputs.progress, extra=extra)  # fmt: skip
    samples = {
        "source": "model", "model": model, "folder": str(folder), "n": n,
        "seed": inputs.sampling.seed, "prompts": source,
        "seeds": {"first": seeds[0], "last": seeds[-1], "rule": f"image k uses seed {inputs.sampling.seed} + k"},
        **manifest["settings"],
    }  # fmt: skip
    return folder_set(folder, name="generated"), samples, rows


def folder_sources(inputs: Inputs, fake: ImageSet) -> list[int] | None:
    """The prompt source rows ``fake_dir``'s ``samples.json`` records, when they refer to this run's split."""
    manifest = inputs.fake_folder_manifest()
    recorded = (manifest or {}).get("prompt_sources")
    if not recorded or inputs.texts is None or recorded.get("identity") != inputs.texts.identity:
        return None
    rows = list(recorded.get("rows") or [])
    return rows if len(rows) == len(fake) else None


GRID_DIR = "report_samples"


def grid_rows(inputs: Inputs, pipe: CXRLDMPipeline | None, fake: ImageSet | None) -> list[tuple[str, list[Path]]]:
    """``(prompt, image files)`` rows of report.md's sample grid: ``report.images_per_prompt`` images of each
    ``report.prompts`` prompt, sampled with seeds ``sampling.seed + j`` into ``out_dir/report_samples`` (the same
    noise in every row, so rows differ by their prompt only). Without a model (``fake_dir=``): the first images
    of as many distinct prompts of the folder, the listed prompts first."""
    prompts, k = inputs.report_prompts(), int(option(inputs.cfg, "report.images_per_prompt"))
    if not prompts or k < 1:
        return []
    if pipe is not None:
        names = [f"p{i:02d}_s{j:02d}.png" for i in range(len(prompts)) for j in range(k)]
        folder = inputs.out_dir / GRID_DIR
        sample_to_folder(pipe, [p for p in prompts for _ in range(k)],
                         [inputs.sampling.seed + j for _ in prompts for j in range(k)], folder, inputs.sampling,
                         model=str(Path(inputs.model_path).resolve()), names=names, progress=inputs.progress)  # fmt: skip
        return [(p, [folder / names[i * k + j] for j in range(k)]) for i, p in enumerate(prompts)]
    if fake is None or fake.prompts is None:
        return []
    groups: dict[str, list[Path]] = {}
    for path, prompt in zip(fake.paths, fake.prompts, strict=True):
        groups.setdefault(prompt, []).append(path)
    order = [p for p in prompts if p in groups] + [p for p in groups if p not in prompts]
    return [(p, groups[p][:k]) for p in order[: len(prompts)]]
