"""Turn a MIMIC-CXR-JPG tree plus the MIMIC-CXR reports into a training-ready folder.

Output (``out_dir``): ``images/...png`` (shorter side = ``size``, orientation exactly as the source),
``train.csv`` / ``validate.csv`` / ``test.csv`` and ``prepare_report.json``. Every file is written
atomically (``utils/atomic.py``), so a re-run after an interruption skips every finished image instead of
redoing it, and a full disk stops the run with one line (how many images are done) and leaves only complete
files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from cxr_ldm.data.mimic import SPLITS, ReportSource, image_relpath, read_chexpert, read_metadata
from cxr_ldm.data.reports import parse_report, report_sentences
from cxr_ldm.utils.atomic import DiskFullError, atomic_write, atomic_write_text

log = logging.getLogger(__name__)

SKIP_REASONS = ("not_pa", "not_in_split", "no_report", "no_findings_or_impression", "unreadable_image")
CSV_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "split", "image", "width", "height",
    "findings", "impression", "sentences",
)  # fmt: skip


# PIL modes with more than 8 bits per pixel
WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer", "F": "32-bit float"}


@dataclass
class PrepareResult:
    kept: int
    skipped: dict[str, list[str]] = field(default_factory=dict)
    resized: int = 0
    reused: int = 0
    seconds: float = 0.0


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, aspect kept; no EXIF transpose and no flips (orientation as stored)."""
    w, h = img.size
    scale = size / min(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if img.format == "JPEG" and scale < 0.5:
        img.draft("L", (new[0] * 2, new[1] * 2))  # DCT-domain downscale: much faster decoding of big JPEGs
    img = img.convert("L")
    if img.size == new:
        return img
    return img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _output_is_done(dst: Path, size: int) -> bool:
    if not dst.is_file():
        return False
    try:
        with Image.open(dst) as im:
            return min(im.size) == size
    except OSError:
        return False


def _process_image(task: tuple[str, str, str, int]) -> tuple[str, str, int, int, str]:
    """Worker: (dicom_id, src, dst, size) -> (dicom_id, status, width, height, error)."""
    dicom_id, src, dst, size = task
    dst_path = Path(dst)
    if _output_is_done(dst_path, size):
        with Image.open(dst_path) as im:
            return dicom_id, "reused", im.size[0], im.size[1], ""
    try:
        with Image.open(src) as im:
            if im.mode in WIDE_MODES:  # convert("L") would clip them to white: say so instead
                return dicom_id, "unreadable", 0, 0, (
                    f"mode {im.mode} ({WIDE_MODES[im.mode]}): prepare takes 8-bit images as MIMIC-CXR-JPG has "
                    f"them; convert the source to 8-bit grayscale first")  # fmt: skip
            out = resize_shorter_side(im, size)  # RGB, RGBA, palette, CMYK: to 8-bit grayscale (luminance)
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises these for missing/truncated/corrupt files
        return dicom_id, "unreadable", 0, 0, f"{type(err).__name__}: {err}"
    # a failed write (a full disk) is not the image's fault: it stops the run (atomic: a finished file is
    # always complete, a failed one leaves nothing)
    atomic_write(dst_path, lambda handle: out.save(handle, format="PNG"), what="prepared image", durable=False)
    return dicom_id, "resized", out.size[0], out.size[1], ""


def _map(tasks: list, num_workers: int) -> Iterable:
    if num_workers <= 1:
        yield from map(_process_image, tasks)
        return
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        yield from pool.map(_process_image, tasks, chunksize=max(1, min(64, len(tasks) // (8 * num_workers))))


def prepare_dataset(
    mimic_root: str | Path,
    reports: str | Path,
    out_dir: str | Path,
    size: int = 512,
    num_workers: int | None = None,
    views: Iterable[str] = ("PA",),
    progress: bool = True,
) -> PrepareResult:
    """Filter to PA, attach report sentences, resize, and write the split CSVs plus a report of what was skipped."""
    start = time.perf_counter()
    mimic_root, out_dir = Path(mimic_root), Path(out_dir)
    if size < 8:
        raise ValueError(f"size={size} is too small; use the shorter side in pixels, e.g. size=512")
    meta = read_metadata(mimic_root)
    source = ReportSource(Path(reports))
    out_dir.mkdir(parents=True, exist_ok=True)
    num_workers = num_workers if num_workers is not None else (os.cpu_count() or 1)

    skipped: dict[str, list[str]] = {r: [] for r in SKIP_REASONS}
    views = {v.upper() for v in views}
    meta = _with_report_text(_of_views_in_split(meta, views, skipped), source, skipped)
    dims, counts, errors = _resize_images(meta, mimic_root, out_dir, size, num_workers, progress, skipped)

    meta = meta[meta["dicom_id"].isin(dims.keys())].copy()
    meta["width"] = [dims[d][0] for d in meta["dicom_id"]]
    meta["height"] = [dims[d][1] for d in meta["dicom_id"]]
    meta = _attach_chexpert(meta, mimic_root)
    extra = [c for c in meta.columns if c.startswith("chexpert_")]
    for split in SPLITS:
        part = meta[meta["split"] == split].sort_values(["subject_id", "study_id", "dicom_id"])
        _write_csv_atomic(part[list(CSV_COLUMNS) + extra], out_dir / f"{split}.csv")

    result = PrepareResult(
        kept=len(meta), skipped=skipped, resized=counts["resized"], reused=counts["reused"],
        seconds=time.perf_counter() - start,
    )  # fmt: skip
    report = {
        "kept": result.kept,
        "kept_per_split": {s: int((meta["split"] == s).sum()) for s in SPLITS},
        "skipped_counts": {r: len(ids) for r, ids in skipped.items()},
        "skipped": skipped,
        "unreadable_errors": errors,
        "images_resized": result.resized,
        "images_reused": result.reused,
        "size": size,
        "views": sorted(views),
        "mimic_root": str(mimic_root),
        "reports": str(reports),
        "seconds": round(result.seconds, 2),
    }
    _write_text_atomic(out_dir / "prepare_report.json", json.dumps(report, indent=2))
    log.info("kept %d images (%s); skipped %s", result.kept, report["kept_per_split"], report["skipped_counts"])
    return result


def _of_views_in_split(meta: pd.DataFrame, views: set[str], skipped: dict[str, list[str]]) -> pd.DataFrame:
    """The images of ``views`` (upper case) in a split; the others' ids go to ``skipped``."""
    is_view = meta["ViewPosition"].str.upper().isin(views)
    skipped["not_pa"] = sorted(meta.loc[~is_view, "dicom_id"])
    meta = meta[is_view]
    in_split = meta["split"].isin(SPLITS)
    skipped["not_in_split"] = sorted(meta.loc[~in_split, "dicom_id"])
    return meta[in_split].copy()


def _with_report_text(meta: pd.DataFrame, source: ReportSource, skipped: dict[str, list[str]]) -> pd.DataFrame:
    """Each image with its study's findings, impression, sentences and output path; images whose study has no
    report, or one without findings and impression, go to ``skipped``."""
    studies = meta[["subject_id", "study_id"]].drop_duplicates()
    texts = source.read_many(list(zip(studies["subject_id"], studies["study_id"], strict=True)))
    sections = {study: parse_report(text) for study, text in texts.items()}
    has_report = meta["study_id"].isin(texts.keys())
    skipped["no_report"] = sorted(meta.loc[~has_report, "dicom_id"])
    meta = meta[has_report].copy()
    meta["findings"] = [sections[s].findings for s in meta["study_id"]]
    meta["impression"] = [sections[s].impression for s in meta["study_id"]]
    meta["sentences"] = [json.dumps(report_sentences(sections[s]), ensure_ascii=False) for s in meta["study_id"]]
    has_text = (meta["findings"].str.len() > 0) | (meta["impression"].str.len() > 0)
    skipped["no_findings_or_impression"] = sorted(meta.loc[~has_text, "dicom_id"])
    meta = meta[has_text].copy()
    meta["image"] = [
        image_relpath(sub, st, dcm, ext="png").replace("files/", "images/", 1)
        for sub, st, dcm in zip(meta["subject_id"], meta["study_id"], meta["dicom_id"], strict=True)
    ]
    return meta


def _resize_images(
    meta: pd.DataFrame, mimic_root: Path, out_dir: Path, size: int, num_workers: int, progress: bool,
    skipped: dict[str, list[str]],
) -> tuple[dict[str, tuple[int, int]], dict[str, int], dict[str, str]]:  # fmt: skip
    """Resize (or reuse) every image: each one's size, the resized/reused counts and why unreadable ones failed
    (their ids go to ``skipped``). A full disk says how many images are already complete."""
    tasks = [
        (dcm, str(mimic_root / image_relpath(sub, st, dcm)), str(out_dir / img), size)
        for dcm, sub, st, img in zip(meta["dicom_id"], meta["subject_id"], meta["study_id"], meta["image"], strict=True)
    ]
    dims: dict[str, tuple[int, int]] = {}
    counts = {"resized": 0, "reused": 0}
    errors: dict[str, str] = {}
    bar = tqdm(total=len(tasks), desc="prepare images", unit="img", disable=not progress)
    try:
        for dicom_id, status, w, h, err in _map(tasks, num_workers):
            bar.update()
            if status == "unreadable":
                skipped["unreadable_image"].append(dicom_id)
                errors[dicom_id] = err
            else:
                counts[status] += 1
                dims[dicom_id] = (w, h)
    except DiskFullError as err:
        done = counts["resized"] + counts["reused"]
        raise DiskFullError(err.errno, f"{err} ({done} of {len(tasks)} images are written, complete, and a re-run "
                                       f"reuses them)") from err  # fmt: skip
    finally:
        bar.close()
    skipped["unreadable_image"].sort()
    return dims, counts, errors


def _attach_chexpert(meta: pd.DataFrame, mimic_root: Path) -> pd.DataFrame:
    labels = read_chexpert(mimic_root)
    if labels is None:
        return meta
    label_cols = [c for c in labels.columns if c not in ("subject_id", "study_id")]
    renamed = labels.rename(columns={c: "chexpert_" + c.lower().replace(" ", "_") for c in label_cols})
    return meta.merge(renamed.drop(columns=["subject_id"]), on="study_id", how="left")


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, frame.to_csv(index=False), what="split file")


def _write_text_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text, what="report file")
