"""The image sets an evaluation reads: a prepared split, or a folder of images (optionally with samples.json).

Every set is a list of files plus what is known about each (report sentences, prompt and seed, phantom
ground truth, CheXpert labels), and an ``identity`` that names its exact content for feature-cache keys.
Images are read in batches by a DataLoader, so no metric holds a whole set of images unless it must.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cxr_ldm.data.excerpts import ExcerptSampler
from cxr_ldm.data.image_files import load_image
from cxr_ldm.data.mimic import image_relpath
from cxr_ldm.phantom.schema import FINDING_COLUMNS, GROUND_TRUTH_FILE
from cxr_ldm.phantom.studies import load_ground_truth
from cxr_ldm.pipelines.sample_folder import SAMPLES_FILE, read_samples
from cxr_ldm.utils.hashing import json_digest

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _digest(items: list[Any]) -> str:
    return json_digest(items, 24)  # 24 digits, default separators: as the cached identities hold


@dataclass
class ImageSet:
    """Files of one set and per-image annotations (lists / frames aligned with ``paths``)."""

    name: str
    paths: list[Path]
    ids: list[str]
    identity: dict[str, Any]
    prompts: list[str] | None = None
    seeds: list[int] | None = None
    sentences: list[list[str]] | None = None
    truth: pd.DataFrame | None = None  # phantom: one column per FINDING_COLUMNS (severity 0..3)
    chexpert: pd.DataFrame | None = None  # prepared MIMIC/phantom: chexpert_* label columns
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray | list[int]) -> ImageSet:
        idx = [int(i) for i in indices]

        def pick(values):
            return None if values is None else [values[i] for i in idx]

        def pick_frame(frame):
            return None if frame is None else frame.iloc[idx].reset_index(drop=True)

        identity = {**self.identity, "subset": _digest(idx)}
        return replace(
            self, paths=pick(self.paths), ids=pick(self.ids), identity=identity, prompts=pick(self.prompts),
            seeds=pick(self.seeds), sentences=pick(self.sentences), truth=pick_frame(self.truth),
            chexpert=pick_frame(self.chexpert),
        )  # fmt: skip

    def sample(self, n: int | None, seed: int = 0) -> ImageSet:
        """``n`` images drawn without replacement by ``seed`` (in file order), or all when ``n`` is None."""
        if n is None or n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size=int(n), replace=False))
        return self.subset(keep)


def folder_set(folder: str | Path, name: str | None = None) -> ImageSet:
    """Images of a folder. With a ``samples.json`` (sample/evaluate commands) exactly its images, with prompts
    and seeds; otherwise every ``.png``/``.jpg`` below the folder, sorted by path."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    manifest = folder / SAMPLES_FILE
    prompts = seeds = None
    if manifest.is_file():
        records = read_samples(folder)["images"]
        paths = [folder / r["file"] for r in records]
        prompts = [str(r.get("prompt", "")) for r in records]
        seeds = [int(r["seed"]) if r.get("seed") is not None else -1 for r in records]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{manifest} lists {len(missing)} missing image(s), e.g. {missing[0]}")
    else:
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no images (.png/.jpg) in {folder}")
    stats = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    identity = {"kind": "folder", "path": str(folder.resolve()), "files": _digest(stats)}
    ids = [str(p.relative_to(folder)) for p in paths]
    return ImageSet(name or str(folder), paths, ids, identity, prompts=prompts, seeds=seeds)


def phantom_raw_dir(data_dir: str | Path) -> Path | None:
    """The phantom tree a prepared folder was made from, when it holds phantom ground truth."""
    report = Path(data_dir) / "prepare_report.json"
    if not report.is_file():
        return None
    root = json.loads(report.read_text(encoding="utf-8")).get("mimic_root")
    if root and (Path(root) / GROUND_TRUTH_FILE).is_file():
        return Path(root)
    return None


def phantom_raw_size(raw_dir: str | Path) -> int | None:
    """Shorter side of the phantom tree's JPEGs (what the adherence classifier should render at)."""
    truth = load_ground_truth(raw_dir)
    pa = truth[truth["ViewPosition"] == "PA"]
    if pa.empty:
        return None
    row = pa.iloc[0]
    path = Path(raw_dir) / image_relpath(int(row["subject_id"]), int(row["study_id"]), str(row["dicom_id"]))
    return native_size(path) if path.is_file() else None


def split_set(data_dir: str | Path, split: str, raw_dir: str | Path | None = None) -> ImageSet:
    """One split of a folder written by ``cxr_ldm.prepare``; phantom ground truth is attached when the source
    tree (``prepare_report.json``'s ``mimic_root``, or ``raw_dir``) has it."""
    data_dir = Path(data_dir).expanduser()
    csv = data_dir / f"{split}.csv"
    if not csv.is_file():
        raise FileNotFoundError(
            f"{csv} not found: data_dir must be a folder written by `python -m cxr_ldm.prepare`"
        )
    frame = pd.read_csv(csv, dtype={"dicom_id": str}, keep_default_na=False)
    if frame.empty:
        raise ValueError(f"{csv} has no images")
    paths = [data_dir / p for p in frame["image"]]
    sentences = [json.loads(s) if s else [] for s in frame["sentences"]] if "sentences" in frame else None
    label_cols = [c for c in frame.columns if c.startswith("chexpert_")]
    chexpert = None
    if label_cols:
        chexpert = frame[label_cols].replace("", np.nan).astype(float).reset_index(drop=True)
    truth = None
    raw = Path(raw_dir) if raw_dir else phantom_raw_dir(data_dir)
    if raw is not None:
        gt = load_ground_truth(raw).set_index("dicom_id")
        missing = [d for d in frame["dicom_id"] if d not in gt.index]
        if missing:
            raise ValueError(f"{len(missing)} images of {csv} have no phantom ground truth in {raw}")
        truth = gt.loc[frame["dicom_id"], list(FINDING_COLUMNS)].reset_index(drop=True)
    identity = {
        "kind": "split", "data_dir": str(data_dir.resolve()), "split": split,
        "files": _digest(list(zip(frame["dicom_id"], frame["image"], strict=True))),
        "csv_mtime": csv.stat().st_mtime_ns,
    }  # fmt: skip
    return ImageSet(
        f"{data_dir.name}/{split}", paths, list(frame["dicom_id"]), identity, sentences=sentences,
        truth=truth, chexpert=chexpert,
        extra={"raw_dir": str(raw) if raw else None, "raw_size": phantom_raw_size(raw) if raw else None},
    )  # fmt: skip


def report_excerpts(
    images: ImageSet, seed: int = 0, min_sentences: int = 1, max_sentences: int = 5
) -> list[str]:
    """A report excerpt per image (never the empty prompt), drawn by ``(seed, position)``: generation prompts
    that follow the distribution of the real set's text."""
    if images.sentences is None:
        raise ValueError(f"{images.name} has no report sentences to draw prompts from")
    excerpt = ExcerptSampler(min_sentences, max_sentences, p_uncond=0.0)
    return [
        excerpt(s, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
        for i, s in enumerate(images.sentences)
    ]


def native_size(path: str | Path) -> int:
    """Shorter side of an image file, in pixels."""
    with Image.open(path) as im:
        return min(im.size)


class _ImageFiles(Dataset):
    def __init__(self, paths: list[Path], image_size: int) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        with Image.open(path) as im:
            gray = im.convert("L")
            if gray.size == (self.image_size, self.image_size):  # already the size: no resampling at all
                return (
                    torch.from_numpy(np.asarray(gray, dtype=np.uint8).copy()).unsqueeze(0).float().div_(255.0)
                )
        return load_image(path, self.image_size)  # shorter side resized, center crop (as in training)


def image_batches(
    images: ImageSet, image_size: int, batch_size: int = 16, num_workers: int = 0
) -> DataLoader:
    """Batches ``[B, 1, S, S]`` float 0..1 in set order (shorter side resized to ``S``, center crop)."""
    return DataLoader(
        _ImageFiles(images.paths, image_size), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
