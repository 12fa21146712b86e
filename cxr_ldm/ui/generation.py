"""What one press of Generate does, free of any web framework: check the request, sample, pack a zip.

A request is checked before anything runs, and every problem comes back as one sentence naming the field and
what it accepts (the page shows them; a script calling the API gets the same text). Images are sampled through
:func:`cxr_ldm.pipelines.sample_folder.sample_to_folder`, so a request's folder is an ordinary sample folder:
8-bit PNGs and the project's ``samples.json`` (prompt, seed and settings of every image; ``evaluate fake_dir=``
reads it), and the zip a user downloads holds exactly that folder. Image ``k`` uses seed ``seed + k``, as in
``python -m cxr_ldm.sample``, so any image can be regenerated alone.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxr_ldm.pipelines import SAMPLERS, CXRLDMPipeline
from cxr_ldm.pipelines.model_card import DATA_USE, model_card
from cxr_ldm.pipelines.sample_folder import SAMPLES_FILE, sample_to_folder
from cxr_ldm.pipelines.settings import SamplingSettings

MAX_SEED = 2**31 - 1
NOTE_SECTIONS = ("Intended use", "Data use")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: the page's ranges, enforced for API callers too."""

    max_images: int = 8
    max_steps: int = 100
    max_guidance: float = 20.0


@dataclass(frozen=True)
class Request:
    prompt: str
    n_images: int
    guidance_scale: float
    steps: int
    seed: int
    sampler: str


@dataclass(frozen=True)
class Result:
    folder: Path
    files: list[Path]
    seeds: list[int]
    zip_path: Path
    manifest: dict[str, Any]


def _whole_number(value: Any, name: str, low: int, high: int, problems: list[str]) -> int:
    """``value`` as an int in ``low..high``; otherwise a sentence in ``problems`` (and ``low``)."""
    try:
        number = float(value)
        if number != int(number):
            raise ValueError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        problems.append(f"{name} must be a whole number from {low} to {high} (got {value!r}).")
        return low
    if not low <= number <= high:
        problems.append(f"{name} must be a whole number from {low} to {high} (got {number}).")
        return low
    return number


class _WithStepProgress:
    """The pipeline with its per-step progress bar on. ``sample_to_folder`` turns the bar off; the app wants it,
    because the page's progress follows the pipeline's tqdm bar (gradio's ``Progress(track_tqdm=True)``)."""

    def __init__(self, pipe: CXRLDMPipeline) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._pipe(*args, **{**kwargs, "progress": True})


class Generator:
    """Checks and runs requests on one pipeline; each request gets its own folder under ``work_dir``."""

    def __init__(
        self,
        pipe: CXRLDMPipeline,
        model: str,
        work_dir: str | Path,
        limits: Limits = Limits(),
        batch_size: int = 8,
        keep_runs: int = 32,
    ) -> None:
        self.pipe = pipe
        self.model = model
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.batch_size = int(batch_size)
        self.keep_runs = max(1, int(keep_runs))
        self._count = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ checking
    def check(
        self, prompt: Any, n_images: Any, guidance_scale: Any, steps: Any, seed: Any, sampler: Any = None
    ) -> tuple[Request, list[str]]:
        """The request and every problem with it (empty when it can run), in the order of the page's fields."""
        problems: list[str] = []
        text = "" if prompt is None else str(prompt).strip()
        for problem in self.pipe.prompt_problems([text]):
            sentence = "The report text" + problem.removeprefix("prompt 0")
            if "empty" in problem:
                problems.append(f"{sentence}: type findings, e.g. \"Small left pleural effusion.\"")
            else:
                problems.append(f"{sentence}: shorten it.")
        n = _whole_number(n_images, "Number of images", 1, self.limits.max_images, problems)
        try:
            scale = float(guidance_scale)
            if not 0.0 <= scale <= self.limits.max_guidance:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"Guidance scale must be a number from 0 to {self.limits.max_guidance:g} "
                            f"(got {guidance_scale!r}).")  # fmt: skip
            scale = self.pipe.default_guidance_scale
        n_steps = _whole_number(steps, "Steps", 1, self.limits.max_steps, problems)
        first_seed = _whole_number(seed, "Seed", 0, MAX_SEED - self.limits.max_images, problems)
        name = self.pipe.default_sampler if sampler in (None, "") else str(sampler)
        if name not in SAMPLERS:
            problems.append(f"Sampler must be one of {', '.join(SAMPLERS)} (got {name!r}).")
        return Request(text, n, scale, n_steps, first_seed, name), problems

    # ------------------------------------------------------------------------------------------ running
    def _new_folder(self) -> Path:
        with self._lock:
            self._count += 1
            folder = self.work_dir / f"{time.strftime('%Y%m%d_%H%M%S')}_{self._count:04d}"
        folder.mkdir(parents=True)
        return folder

    def _prune(self) -> None:
        """Keep the newest ``keep_runs`` request folders: a long-running app does not fill the disk."""
        runs = sorted((p for p in self.work_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
        for old in runs[: -self.keep_runs]:
            shutil.rmtree(old, ignore_errors=True)

    def generate(self, request: Request) -> Result:
        """Sample ``request`` (already checked) into a new folder and zip its images with ``samples.json``."""
        folder = self._new_folder()
        seeds = [request.seed + k for k in range(request.n_images)]
        names = [f"image_{k:02d}_seed_{s}.png" for k, s in enumerate(seeds)]
        settings = SamplingSettings(sampler=request.sampler, steps=request.steps,
                                    guidance_scale=request.guidance_scale, batch_size=self.batch_size, seed=request.seed)  # fmt: skip
        manifest = sample_to_folder(_WithStepProgress(self.pipe), [request.prompt] * request.n_images, seeds, folder,
                                    settings, model=self.model, names=names, progress=False)  # fmt: skip
        zip_path = folder / f"cxr_ldm_{folder.name}.zip"
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in [*names, SAMPLES_FILE]:
                archive.write(folder / name, arcname=name)
        self._prune()
        return Result(folder, [folder / name for name in names], seeds, zip_path, manifest)


# ---------------------------------------------------------------------------------------------- the page's notes
def card_sections(card: str, titles: Sequence[str] = NOTE_SECTIONS) -> dict[str, str]:
    """The text under each ``## title`` of a markdown model card (absent titles are left out)."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in card.splitlines():
        heading = re.match(r"^##\s+(.+?)\s*$", line)
        if heading:
            current = heading.group(1) if heading.group(1) in titles else None
            if current is not None:
                sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return {title: sections[title].strip() for title in titles if sections.get(title, "").strip()}


def model_note(pipe: CXRLDMPipeline) -> str:
    """Markdown of the model card's intended use and data use: an exported folder's own card (README.md), else
    the card the export command would write for this model; the project's data-use text when neither has it."""
    source = pipe.components.source
    path = Path(str(source.get("path", "")))
    sections: dict[str, str] = {}
    if source.get("kind") == "exported" and (path / "README.md").is_file():
        sections = card_sections((path / "README.md").read_text(encoding="utf-8"))
    if len(sections) < len(NOTE_SECTIONS):
        try:
            generated = card_sections(model_card(pipe.components, path, None))
        except Exception:  # the card is informative only: never keep the page from starting
            generated = {}
        sections = {**generated, **sections}
    sections.setdefault("Data use", DATA_USE)
    return "\n\n".join(f"**{title}.** {text}" for title, text in sections.items())


def model_summary(pipe: CXRLDMPipeline, model: str) -> str:
    """One line on the page: which model, its image size and its sampling defaults."""
    source = pipe.components.source
    kinds = {"checkpoint": "trained checkpoint", "exported": "exported model", "monai_bundle": "MONAI bundle"}
    channels = pipe.components.configs.get("autoencoder", {}).get("channels")
    size = f", {pipe.latent_shape[-1] * 2 ** (len(channels) - 1)} px images" if channels else ""
    return (f"Model: `{Path(model).name}` ({kinds.get(str(source.get('kind')), source.get('kind'))}{size}); "
            f"its defaults: {pipe.default_sampler}, {pipe.default_num_inference_steps} steps, "
            f"guidance {pipe.default_guidance_scale:g}.")  # fmt: skip
