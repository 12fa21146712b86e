"""Phantom studies written in the MIMIC-CXR-JPG + reports layout, with their ground truth.

Writes JPEGs under ``files/pXX/pSUBJECT/sSTUDY/``, the metadata, split and CheXpert CSVs, report text files
under ``reports/files/``, and ``phantom_findings.csv.gz`` (per image: the severity of each drawn finding).

Determinism: the cohort (ids, splits, dates) comes from ``seed`` alone and every study from
``(seed, study index)``, so the output is byte-identical for a seed whatever ``num_workers`` is.
"""

from __future__ import annotations

import gzip
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from cxr_ldm.data.mimic import (
    CHEXPERT_COLUMNS,
    CHEXPERT_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    SPLIT_FILE,
    image_relpath,
    report_relpath,
)
from cxr_ldm.phantom.anatomy import sample_anatomy
from cxr_ldm.phantom.cohort import StudyTask, plan_cohort
from cxr_ldm.phantom.findings import complete_details, sample_findings
from cxr_ldm.phantom.lateral_view import render_lateral
from cxr_ldm.phantom.pa_view import render_pa
from cxr_ldm.phantom.report_text import write_report
from cxr_ldm.phantom.schema import FINDING_COLUMNS, GROUND_TRUTH_FILE
from cxr_ldm.utils.atomic import atomic_write, atomic_write_bytes, atomic_write_text

__all__ = ["generate_phantom", "load_ground_truth", "write_study"]

log = logging.getLogger(__name__)

_VIEW_MEANING = {
    "PA": "postero-anterior",
    "AP": "antero-posterior",
    "LATERAL": "lateral",
    "LL": "left lateral",
}
_TECHNIQUE = {
    None: "Single PA view of the chest.",
    "LATERAL": "Chest PA and lateral",
    "LL": "PA and left lateral views of the chest.",
    "AP": "PA and portable AP views of the chest.",
}
_JPEG_QUALITY = 90


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5))


def write_study(task: StudyTask) -> dict[str, Any]:
    """Render, write and describe one study (in a worker process); returns its CSV rows."""
    rng = np.random.default_rng([task.seed, 1, task.index])
    anatomy = sample_anatomy(np.random.default_rng([task.seed, 2, task.subject_index]))
    findings = complete_details(sample_findings(rng), rng)
    extra_view = None
    if rng.random() < 0.3:
        extra_view = str(rng.choice(["LATERAL", "LL", "AP"], p=[0.6, 0.15, 0.25]))
    views = ["PA"] + ([extra_view] if extra_view else [])
    exam = "CHEST (PA AND LAT)" if extra_view != "AP" else "CHEST (PA AND AP)"
    technique = _TECHNIQUE[extra_view]
    if extra_view is None and rng.random() < 0.5:
        technique = "Chest PA and lateral"  # MIMIC often lists a lateral that is not in the JPG set

    out = Path(task.out_dir)
    meta_rows, truth_rows = [], []
    severities = {k: findings[k] for k in FINDING_COLUMNS}
    normal = int(not any(severities.values()))
    for view in views:
        dicom_id = _dicom_id(rng)
        height = round(task.size * rng.uniform(1.12, 1.3))
        if view in ("LATERAL", "LL"):
            pixels = render_lateral(findings, rng, task.size, height, anatomy)
        else:
            pixels = render_pa(findings, rng, task.size, height, anatomy, ap=view == "AP")
        path = out / image_relpath(task.subject_id, task.study_id, dicom_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(pixels, mode="L")
        atomic_write(path, lambda h, p=picture: p.save(h, format="JPEG", quality=_JPEG_QUALITY), what="phantom image",
                     durable=False)  # fmt: skip
        meta_rows.append({
            "dicom_id": dicom_id, "subject_id": task.subject_id, "study_id": task.study_id,
            "PerformedProcedureStepDescription": exam, "ViewPosition": view, "Rows": pixels.shape[0],
            "Columns": pixels.shape[1], "StudyDate": task.study_date, "StudyTime": task.study_time,
            "ProcedureCodeSequence_CodeMeaning": exam, "ViewCodeSequence_CodeMeaning": _VIEW_MEANING[view],
            "PatientOrientationCodeSequence_CodeMeaning": "Erect" if view != "AP" else "Recumbent",
        })  # fmt: skip
        truth_rows.append({"dicom_id": dicom_id, "subject_id": task.subject_id, "study_id": task.study_id,
                           "ViewPosition": view, **severities, "normal": normal})  # fmt: skip

    text, labels = write_report(findings, rng, exam, technique, task.follow_up, anatomy.female)
    chexpert = None
    if task.has_report:
        report = out / "reports" / report_relpath(task.subject_id, task.study_id)
        report.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(report, text, what="phantom report", durable=False)
        chexpert = {"subject_id": task.subject_id, "study_id": task.study_id,
                    **{c: labels.get(c, np.nan) for c in CHEXPERT_COLUMNS}}  # fmt: skip
    return {"meta": meta_rows, "truth": truth_rows, "chexpert": chexpert}


def _write_csv_gz(frame: pd.DataFrame, path: Path) -> None:
    """gzip without a timestamp or file name in the header, so equal content gives equal bytes."""
    data = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    atomic_write_bytes(path, gzip.compress(data, compresslevel=6, mtime=0), what="phantom table")


def _run_tasks(tasks: list[StudyTask], num_workers: int | None, progress: bool) -> list[dict[str, Any]]:
    """:func:`write_study` of every task, in order, in this process or on a pool."""
    workers = (
        min(os.cpu_count() or 1, len(tasks)) if num_workers is None else min(int(num_workers), len(tasks))
    )
    bar = tqdm(total=len(tasks), desc="phantom studies", unit="study", disable=not progress)
    results: list[dict[str, Any]] = []
    if workers <= 1:
        for task in tasks:
            results.append(write_study(task))
            bar.update()
    else:
        chunk = max(1, min(16, len(tasks) // (workers * 8)))
        with multiprocessing.Pool(workers) as pool:
            for result in pool.imap(write_study, tasks, chunksize=chunk):
                results.append(result)
                bar.update()
    bar.close()
    return results


def generate_phantom(
    out_dir: str | Path,
    n_studies: int,
    size: int = 256,
    seed: int = 0,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``n_studies`` phantom studies into ``out_dir``; returns a summary (counts, seconds).

    The split file is written last: its presence means a complete tree (the first-use bootstrap
    relies on that).
    """
    if n_studies < 1:
        raise ValueError(f"n_studies must be at least 1, got {n_studies}")
    if size < 16:
        raise ValueError(f"size (the shorter image side) must be at least 16 pixels, got {size}")
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks, split_of, n_subjects = plan_cohort(int(n_studies), int(seed), str(out), int(size))
    results = _run_tasks(tasks, num_workers, progress)

    meta = pd.DataFrame([r for res in results for r in res["meta"]], columns=list(METADATA_COLUMNS))
    truth = pd.DataFrame([r for res in results for r in res["truth"]],
                         columns=["dicom_id", "subject_id", "study_id", "ViewPosition", *FINDING_COLUMNS, "normal"])  # fmt: skip
    chexpert = pd.DataFrame([res["chexpert"] for res in results if res["chexpert"] is not None],
                            columns=["subject_id", "study_id", *CHEXPERT_COLUMNS])  # fmt: skip
    split = meta[["dicom_id", "study_id", "subject_id"]].copy()
    split["split"] = split["subject_id"].map(split_of)
    _write_csv_gz(meta, out / METADATA_FILE)
    _write_csv_gz(chexpert, out / CHEXPERT_FILE)
    _write_csv_gz(truth, out / GROUND_TRUTH_FILE)
    _write_csv_gz(split, out / SPLIT_FILE)

    pa = truth[truth["ViewPosition"] == "PA"]
    summary = {
        "out_dir": str(out),
        "n_studies": len(tasks),
        "n_subjects": n_subjects,
        "n_images": len(meta),
        "n_pa": int((meta["ViewPosition"] == "PA").sum()),
        "n_reports": len(chexpert),
        "split_studies": {
            s: int(n) for s, n in split.drop_duplicates("study_id")["split"].value_counts().items()
        },
        "split_subjects": {s: int(n) for s, n in pd.Series(split_of).value_counts().items()},
        "normal_fraction": float(pa["normal"].mean()),
        "positive_studies": {c: int((pa[c] > 0).sum()) for c in FINDING_COLUMNS},
        "seconds": round(time.perf_counter() - start, 2),
    }
    log.info("wrote %d studies (%d images) to %s in %.1f s", len(tasks), len(meta), out, summary["seconds"])
    return summary


def load_ground_truth(out_dir: str | Path) -> pd.DataFrame:
    """Per image: dicom_id, subject_id, study_id, ViewPosition, the finding severities and ``normal``."""
    path = Path(out_dir) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"phantom ground truth not found: {path}. Generate it with "
            f"`python -m cxr_ldm.phantom out_dir={Path(out_dir)} n_studies=N`."
        )
    return pd.read_csv(path, dtype={"dicom_id": str})
