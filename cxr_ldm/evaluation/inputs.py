"""What an evaluation reads: its options, checked before anything slow runs, and the image sets it measures.

Every default lives in ``conf/inference/evaluate.yaml`` (and the ``sampling`` group); :func:`option`
reads the composed config and never supplies one of its own, so the file is the one place to look. The checks
use what each measure needs (:mod:`cxr_ldm.evaluation.registry`), so a missing input, checkpoint or label file
stops the command with one line naming the option before any sampling or feature extraction starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cxr_ldm.metrics.sources import ImageSet, folder_set, report_excerpts, split_set
from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.models.loading import existing_path, model_kind
from cxr_ldm.pipelines.prompts import PromptError, check_prompt_lengths, collect_prompts
from cxr_ldm.pipelines.sample_folder import SAMPLES_FILE, read_samples
from cxr_ldm.pipelines.settings import SamplingSettings
from cxr_ldm.utils.devices import resolve_device
from cxr_ldm.utils.folders import OutputFolderError, check_output_folder

_ABSENT = object()
# what a measure can need (registry.Measure.needs)
GENERATED, REAL, TRAIN, PROMPTS, AUTOENCODER, LABELS = "generated", "real", "train", "prompts", "autoencoder", "labels"


class EvaluationError(ValueError):
    """A user error in the evaluation options; reported in one line, without a traceback."""


class MeasureSpec(Protocol):
    """What the input checks need to know of a measure (``registry.Measure``)."""

    needs: frozenset[str]


def option(cfg: DictConfig, key: str) -> Any:
    """The value of ``key`` in the composed config (plain Python containers); a key the config lacks is an error,
    since the defaults are evaluate.yaml's, not the code's."""
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is _ABSENT:
        raise EvaluationError(
            f"option {key} is missing from the configuration: run python -m cxr_ldm.evaluate (or compose "
            "conf/inference/evaluate.yaml), which defines every option"
        )
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def path_option(cfg: DictConfig, key: str) -> Path | None:
    value = option(cfg, key)
    return Path(str(value)).expanduser() if value not in (None, "") else None


def _who(names: list[str]) -> str:
    return ", ".join(names)


@dataclass
class Inputs:
    """The checked options of one evaluation and the real / prompt-text sets they name."""

    cfg: DictConfig
    names: list[str]
    out_dir: Path
    device: torch.device
    sampling: SamplingSettings
    seed: int
    batch_size: int
    num_workers: int
    progress: bool
    cache_dir: Path | None
    data_dir: Path | None
    model_path: Path | None
    fake_dir: Path | None
    real: ImageSet | None
    texts: ImageSet | None
    judge_kind: str
    _real_eval: ImageSet | None = field(default=None, repr=False)
    _train: dict[Any, ImageSet] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, cfg: DictConfig, measures: Mapping[str, MeasureSpec]) -> Inputs:
        """Read and check every option the chosen measures use; raises :class:`EvaluationError`."""
        names = _metric_names(cfg, measures)
        try:
            device = resolve_device(str(option(cfg, "device")))
            sampling = SamplingSettings.from_config(option(cfg, "sampling"))
        except ValueError as err:
            raise EvaluationError(str(err)) from err
        try:
            out_dir = check_output_folder(str(option(cfg, "out_dir")))
        except OutputFolderError as err:
            raise EvaluationError(str(err)) from err
        data_dir = path_option(cfg, "data_dir")
        real = _real_set(cfg, data_dir)
        inputs = cls(
            cfg=cfg, names=names, out_dir=out_dir, device=device,
            sampling=sampling, seed=int(option(cfg, "seed")), batch_size=int(option(cfg, "batch_size")),
            num_workers=int(option(cfg, "num_workers")), progress=bool(option(cfg, "progress")),
            cache_dir=path_option(cfg, "cache_dir"), data_dir=data_dir,
            # model= (a checkpoint, an exported folder or the MONAI bundle); ldm_ckpt= is its older name
            model_path=path_option(cfg, "model") or path_option(cfg, "ldm_ckpt"),
            fake_dir=path_option(cfg, "fake_dir"), real=real, texts=_text_set(cfg, data_dir, real),
            judge_kind=_judge_kind(cfg, real),
        )  # fmt: skip
        inputs._check({name: measures[name].needs for name in names})
        return inputs

    # ------------------------------------------------------------------------------------------ checks
    def _check(self, needs: Mapping[str, frozenset[str]]) -> None:
        def wanting(need: str) -> list[str]:
            return [name for name in self.names if need in needs[name]]

        cfg = self.cfg
        if (wanted := wanting(GENERATED)) and not (self.model_path or self.fake_dir):
            raise EvaluationError(
                f"{_who(wanted)} need generated images: give model=PATH (an ldm.ckpt, an exported folder or "
                "the MONAI bundle; samples are generated first) or fake_dir=FOLDER"
            )
        if self.model_path and self.fake_dir:
            raise EvaluationError("give either model= (sample now) or fake_dir= (already generated), not both")
        if (wanted := wanting(REAL)) and self.real is None:
            raise EvaluationError(
                f"{_who(wanted)} need real images: give data_dir=PREPARED_DIR or real_dir=FOLDER"
            )
        if (wanted := wanting(AUTOENCODER)) and not (option(cfg, "ae_ckpt") or self.model_path):
            raise EvaluationError(f"{_who(wanted)} needs a stage-1 checkpoint: give ae_ckpt=STAGE1.ckpt (or model=)")
        if wanted := wanting(TRAIN):
            self._check_train(wanted)
        if (wanted := wanting(PROMPTS)) and self.fake_dir is not None and not (self.fake_dir / SAMPLES_FILE).is_file():
            raise EvaluationError(
                f"{_who(wanted)} needs each generated image's prompt: {self.fake_dir} has no {SAMPLES_FILE} "
                "(written by cxr_ldm.sample and cxr_ldm.evaluate)"
            )
        if wanted := wanting(LABELS):
            self._check_labels(wanted)
        self.report_prompts()
        ae_ckpt = path_option(cfg, "ae_ckpt")
        if ae_ckpt is not None and not ae_ckpt.is_file():
            raise EvaluationError(f"ae_ckpt={str(ae_ckpt)!r} does not exist")
        if self.model_path is not None:
            try:
                model_kind(existing_path(self.model_path))
            except ModelLoadError as err:
                raise EvaluationError(str(err)) from err
        if self.model_path and wanting(GENERATED) and not self.has_prompt_list:
            if self.texts is None or self.texts.sentences is None:
                raise EvaluationError(
                    "sampling needs prompts: give sampling.prompts=[...] or sampling.prompts_file=FILE, or "
                    "data_dir= to draw them from the split's reports"
                )
        if self.model_path is not None:
            self._check_sampling()

    def _check_sampling(self) -> None:
        """What sampling from ``model=`` will use: a count, and prompts the text encoder reads whole."""
        n = option(self.cfg, "sampling.n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise EvaluationError(f"sampling.n={n} must be an integer >= 1 (the number of images to generate)")
        truncate = bool(option(self.cfg, "truncate_prompts"))
        try:
            if self.has_prompt_list:
                check_prompt_lengths(self._listed_prompts(), "sampling.prompts", truncate)
            check_prompt_lengths(self.report_prompts(), "report.prompts", truncate)
        except PromptError as err:
            raise EvaluationError(str(err)) from err

    def _check_train(self, wanted: list[str]) -> None:
        train_dir = path_option(self.cfg, "train_dir")
        if not (self.data_dir or train_dir):
            raise EvaluationError(
                f"{_who(wanted)} needs training images: give data_dir= (its train split) or train_dir="
            )
        if train_dir is not None and not train_dir.is_dir():
            raise EvaluationError(f"train_dir={str(train_dir)!r} is not a folder")
        train_csv = self.data_dir / f"{option(self.cfg, 'train_split')}.csv" if self.data_dir else None
        if train_dir is None and not train_csv.is_file():
            raise EvaluationError(f"{wanted[0]}: {train_csv} not found (train_split= names the training split)")

    def _check_labels(self, wanted: list[str]) -> None:
        from cxr_ldm.metrics.per_pathology import LABEL_COLUMNS

        chexpert = self.real.chexpert if self.real is not None else None
        missing = [c for c in LABEL_COLUMNS.values() if chexpert is None or c not in chexpert.columns]
        if missing:
            raise EvaluationError(
                f"{_who(wanted)} needs the CheXpert labels of the real images ({len(missing)} chexpert_* "
                "columns missing): give data_dir= a folder prepared with mimic-cxr-2.0.0-chexpert.csv.gz "
                "(real_dir= images carry no labels)"
            )

    def report_prompts(self) -> list[str]:
        """The fixed prompts of report.md's sample grid (``report.prompts``), checked; [] without a report."""
        if not option(self.cfg, "report.enabled") or not option(self.cfg, "report.prompts"):
            return []
        try:
            return collect_prompts(option(self.cfg, "report.prompts"), None, "report.prompts")
        except PromptError as err:
            raise EvaluationError(str(err)) from err

    def _listed_prompts(self) -> list[str]:
        try:
            return collect_prompts(
                option(self.cfg, "sampling.prompts"), option(self.cfg, "sampling.prompts_file"), "sampling.prompts"
            )
        except PromptError as err:
            raise EvaluationError(str(err)) from err

    @property
    def has_prompt_list(self) -> bool:
        return bool(option(self.cfg, "sampling.prompts")) or bool(option(self.cfg, "sampling.prompts_file"))

    # ------------------------------------------------------------------------------------------ sets
    @property
    def real_eval(self) -> ImageSet:
        """The real images of the distribution measures: ``n_real`` drawn by ``seed``."""
        if self._real_eval is None:
            assert self.real is not None
            self._real_eval = self.real.sample(option(self.cfg, "n_real"), self.seed)
        return self._real_eval

    def prompts(self, n: int) -> tuple[list[str], str, list[int] | None]:
        """``(prompts, where they come from, source rows)`` for ``n`` generated images: the prompt list cycled,
        or report excerpts of the split's images in a seeded order; the source rows (indices into
        ``texts``, for per-pathology labels) only for excerpts."""
        if self.has_prompt_list:
            listed = self._listed_prompts()
            return [listed[k % len(listed)] for k in range(n)], f"list of {len(listed)} prompts, cycled", None
        assert self.texts is not None
        excerpts = report_excerpts(self.texts, seed=self.seed)
        order = np.random.default_rng(self.seed).permutation(len(excerpts))
        rows = [int(order[k % len(order)]) for k in range(n)]
        return [excerpts[r] for r in rows], f"report excerpts of {self.texts.name}", rows

    def fake_folder(self) -> tuple[ImageSet, dict[str, Any]]:
        """``fake_dir``'s images and what metrics.json says about them."""
        assert self.fake_dir is not None
        try:
            fake = folder_set(self.fake_dir, name=f"fake_dir {self.fake_dir}")
        except FileNotFoundError as err:
            raise EvaluationError(str(err)) from err
        samples: dict[str, Any] = {"source": "fake_dir", "path": str(self.fake_dir.resolve()), "n": len(fake)}
        if fake.seeds is not None:
            samples["seeds"] = {"first": fake.seeds[0], "last": fake.seeds[-1], "n_unique": len(set(fake.seeds))}
        manifest = self.fake_folder_manifest()
        if manifest and isinstance(manifest.get("settings"), Mapping):  # sampler, steps, guidance_scale, ...
            samples.update(manifest["settings"])
        return fake, samples

    def fake_folder_manifest(self) -> dict[str, Any] | None:
        if self.fake_dir is None or not (self.fake_dir / SAMPLES_FILE).is_file():
            return None
        return read_samples(self.fake_dir)

    def train_set(self, n: int | None) -> ImageSet:
        """Training images (``train_dir``, else ``data_dir``'s ``train_split``), ``n`` drawn by ``seed``."""
        if n not in self._train:
            train_dir = path_option(self.cfg, "train_dir")
            try:
                if train_dir is not None:
                    train = folder_set(train_dir, name=f"train_dir {train_dir}")
                else:
                    train = split_set(self.data_dir, str(option(self.cfg, "train_split")),
                                      option(self.cfg, "phantom_raw_dir"))  # fmt: skip
            except (FileNotFoundError, ValueError) as err:
                raise EvaluationError(str(err)) from err
            self._train[n] = train.sample(n, self.seed)
        return self._train[n]


def _metric_names(cfg: DictConfig, measures: Mapping[str, Any]) -> list[str]:
    names = option(cfg, "metrics")
    names = [names] if isinstance(names, str) else list(names or [])
    unknown = [n for n in names if n not in measures]
    if unknown or not names:
        raise EvaluationError(f"metrics= must list some of {', '.join(measures)}; got {names}")
    return list(dict.fromkeys(names))


def _real_set(cfg: DictConfig, data_dir: Path | None) -> ImageSet | None:
    real_dir = path_option(cfg, "real_dir")
    try:
        if real_dir is not None:
            return folder_set(real_dir, name=f"real_dir {real_dir}")
        if data_dir is not None:
            return split_set(data_dir, str(option(cfg, "split")), option(cfg, "phantom_raw_dir"))
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from err
    return None


def _text_set(cfg: DictConfig, data_dir: Path | None, real: ImageSet | None) -> ImageSet | None:
    """Where report-excerpt prompts come from: data_dir's split (even when real_dir gives the images)."""
    if data_dir is None or (real is not None and real.sentences is not None):
        return real
    try:
        return split_set(data_dir, str(option(cfg, "split")), option(cfg, "phantom_raw_dir"))
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from err


def _judge_kind(cfg: DictConfig, real: ImageSet | None) -> str:
    kind = str(option(cfg, "adherence.classifier"))
    if kind not in ("auto", "phantom", "xrv"):
        raise EvaluationError(f"adherence.classifier must be auto, phantom or xrv, got {kind!r}")
    if kind == "auto":
        kind = "phantom" if real is not None and real.truth is not None else "xrv"
    return kind
