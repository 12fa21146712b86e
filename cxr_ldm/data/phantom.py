"""Phantom studies in the MIMIC-CXR-JPG + reports layout, with known ground truth.

``python -m cxr_ldm.data.phantom out_dir=DIR n_studies=N [size=256] [seed=0] [num_workers=N]``

Writes JPEGs under ``files/pXX/pSUBJECT/sSTUDY/``, the metadata, split and CheXpert CSVs, report
text files under ``reports/files/``, and ``phantom_findings.csv.gz`` (per image: the severity of each
drawn finding). The whole pipeline (prepare, training, evaluation) can thus run without MIMIC access,
and evaluation can check that generated images show what the prompt asked for.

Determinism: the cohort (ids, splits, dates) comes from ``seed`` alone and every study from
``(seed, study index)``, so the output is byte-identical for a seed whatever ``num_workers`` is.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from PIL import Image
from tqdm.auto import tqdm

from cxr_ldm.data.mimic import CHEXPERT_FILE, METADATA_FILE, SPLIT_FILE, image_relpath, report_relpath
from cxr_ldm.data.phantom_render import (
    FINDING_COLUMNS,
    complete_details,
    render_lateral,
    render_pa,
    sample_anatomy,
)
from cxr_ldm.data.phantom_reports import CHEXPERT_COLUMNS, write_report
from cxr_ldm.utils.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from cxr_ldm.utils.cli import require_options, run_command
from cxr_ldm.utils.overrides import check_override_types

__all__ = [
    "FINDING_COLUMNS",
    "GROUND_TRUTH_FILE",
    "generate_phantom",
    "load_ground_truth",
    "main",
    "render_pa",
    "sample_findings",
]

log = logging.getLogger(__name__)

GROUND_TRUTH_FILE = "phantom_findings.csv.gz"
METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
_VIEW_MEANING = {
    "PA": "postero-anterior",
    "AP": "antero-posterior",
    "LATERAL": "lateral",
    "LL": "left lateral",
}
_JPEG_QUALITY = 90


def sample_findings(rng: np.random.Generator) -> dict[str, int]:
    """Severities for one study: about 40 % normal, otherwise one to three kinds of finding."""
    f = dict.fromkeys(FINDING_COLUMNS, 0)
    if rng.random() < 0.4:
        return f
    kinds = ("cardiomegaly", "effusion", "pneumothorax", "nodule", "consolidation", "devices")
    n = int(rng.choice(3, p=[0.55, 0.3, 0.15])) + 1
    chosen = rng.choice(len(kinds), size=n, replace=False, p=[0.2, 0.22, 0.12, 0.14, 0.17, 0.15])

    def sev() -> int:
        return int(rng.choice(3, p=[0.4, 0.35, 0.25])) + 1

    for k in sorted(int(c) for c in chosen):
        kind = kinds[k]
        if kind == "cardiomegaly":
            f["cardiomegaly"] = sev()
        elif kind == "effusion":
            side = rng.choice(3, p=[0.4, 0.35, 0.25])  # right, left, bilateral
            if side in (0, 2):
                f["pleural_effusion_right"] = sev()
            if side in (1, 2):
                f["pleural_effusion_left"] = sev()
        elif kind == "pneumothorax":
            f["pneumothorax_right" if rng.random() < 0.5 else "pneumothorax_left"] = sev()
        elif kind == "nodule":
            f["nodule"] = sev()
        elif kind == "consolidation":
            side = rng.choice(3, p=[0.5, 0.4, 0.1])
            if side in (0, 2):
                f["consolidation_right"] = sev()
            if side in (1, 2):
                f["consolidation_left"] = sev()
        else:
            f["support_devices"] = int(rng.choice(3, p=[0.5, 0.3, 0.2])) + 1
    return f


# ---------------------------------------------------------------------------------------------
# Cohort plan (main process, from the seed alone)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StudyTask:
    out_dir: str
    size: int
    seed: int
    index: int
    subject_index: int
    subject_id: int
    study_id: int
    study_date: int
    study_time: float
    follow_up: bool
    has_report: bool


def _plan(n_studies: int, seed: int, out_dir: str, size: int) -> tuple[list[_StudyTask], dict[int, str], int]:
    """Subjects with 1..3 studies, ids, dates, report gaps and a patient-level split."""
    rng = np.random.default_rng([seed, 0xC0407])
    counts: list[int] = []
    while sum(counts) < n_studies:
        counts.append(int(rng.choice(3, p=[0.6, 0.25, 0.15])) + 1)
    if counts:
        counts[-1] -= sum(counts) - n_studies
    n_subjects = len(counts)
    subject_ids = np.sort(rng.choice(10_000_000, size=n_subjects, replace=False) + 10_000_000)
    study_ids = rng.choice(10_000_000, size=n_studies, replace=False) + 50_000_000
    u = rng.random(n_subjects)
    split = np.where(u < 0.9, "train", np.where(u < 0.95, "validate", "test")).astype(object)
    if n_studies >= 20:  # every split must exist for the pipeline to run end to end
        order = rng.permutation(n_subjects)
        for name in ("validate", "test", "train"):
            if name not in split:
                donor = next(int(i) for i in order if (split == split[i]).sum() > 1)
                split[donor] = name
    missing = rng.random(n_studies) < 0.01
    if n_studies >= 20 and not missing.any():
        missing[rng.integers(n_studies)] = True
    tasks, index = [], 0
    for s, count in enumerate(counts):
        day = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 80)))
        for k in range(count):
            day += dt.timedelta(days=int(rng.integers(1, 700)) if k else 0)
            clock = int(rng.integers(0, 86400))
            study_time = float(f"{clock // 3600:02d}{clock // 60 % 60:02d}{clock % 60:02d}") + round(
                float(rng.random()), 3
            )
            tasks.append(
                _StudyTask(out_dir, size, seed, index, s, int(subject_ids[s]), int(study_ids[index]),
                           int(day.strftime("%Y%m%d")), round(study_time, 3), k > 0, not bool(missing[index]))
            )  # fmt: skip
            index += 1
    split_of = {int(subject_ids[s]): str(split[s]) for s in range(n_subjects)}
    return tasks, split_of, n_subjects


# ---------------------------------------------------------------------------------------------
# One study (worker process)
# ---------------------------------------------------------------------------------------------


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5))


def _make_study(task: _StudyTask) -> dict[str, Any]:
    """Render, write and describe one study; returns its CSV rows."""
    rng = np.random.default_rng([task.seed, 1, task.index])
    anatomy = sample_anatomy(np.random.default_rng([task.seed, 2, task.subject_index]))
    findings = complete_details(sample_findings(rng), rng)
    extra = None
    if rng.random() < 0.3:
        extra = str(rng.choice(["LATERAL", "LL", "AP"], p=[0.6, 0.15, 0.25]))
    views = ["PA"] + ([extra] if extra else [])
    exam = "CHEST (PA AND LAT)" if extra != "AP" else "CHEST (PA AND AP)"
    technique = {
        None: "Single PA view of the chest.",
        "LATERAL": "Chest PA and lateral",
        "LL": "PA and left lateral views of the chest.",
        "AP": "PA and portable AP views of the chest.",
    }[extra]
    if extra is None and rng.random() < 0.5:
        technique = "Chest PA and lateral"  # MIMIC often lists a lateral that is not in the JPG set

    out = Path(task.out_dir)
    meta_rows, truth_rows = [], []
    positive = {k: findings[k] for k in FINDING_COLUMNS}
    normal = int(not any(positive.values()))
    for view in views:
        dicom_id = _dicom_id(rng)
        height = round(task.size * rng.uniform(1.12, 1.3))
        if view in ("LATERAL", "LL"):
            img = render_lateral(findings, rng, task.size, height, anatomy)
        else:
            img = render_pa(findings, rng, task.size, height, anatomy, ap=view == "AP")
        path = out / image_relpath(task.subject_id, task.study_id, dicom_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(img, mode="L")
        atomic_write(path, lambda h, p=picture: p.save(h, format="JPEG", quality=_JPEG_QUALITY), what="phantom image",
                     durable=False)  # fmt: skip
        meta_rows.append({
            "dicom_id": dicom_id, "subject_id": task.subject_id, "study_id": task.study_id,
            "PerformedProcedureStepDescription": exam, "ViewPosition": view, "Rows": img.shape[0],
            "Columns": img.shape[1], "StudyDate": task.study_date, "StudyTime": task.study_time,
            "ProcedureCodeSequence_CodeMeaning": exam, "ViewCodeSequence_CodeMeaning": _VIEW_MEANING[view],
            "PatientOrientationCodeSequence_CodeMeaning": "Erect" if view != "AP" else "Recumbent",
        })  # fmt: skip
        truth_rows.append({"dicom_id": dicom_id, "subject_id": task.subject_id, "study_id": task.study_id,
                           "ViewPosition": view, **positive, "normal": normal})  # fmt: skip

    text, labels = write_report(findings, rng, exam, technique, task.follow_up, anatomy.female)
    chexpert = None
    if task.has_report:
        report = out / "reports" / report_relpath(task.subject_id, task.study_id)
        report.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(report, text, what="phantom report", durable=False)
        chexpert = {"subject_id": task.subject_id, "study_id": task.study_id,
                    **{c: labels.get(c, np.nan) for c in CHEXPERT_COLUMNS}}  # fmt: skip
    return {"meta": meta_rows, "truth": truth_rows, "chexpert": chexpert}


# ---------------------------------------------------------------------------------------------
# Whole cohort
# ---------------------------------------------------------------------------------------------


def _write_csv_gz(frame: pd.DataFrame, path: Path) -> None:
    """gzip without a timestamp or file name in the header, so equal content gives equal bytes."""
    data = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    atomic_write_bytes(path, gzip.compress(data, compresslevel=6, mtime=0), what="phantom table")


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
    tasks, split_of, n_subjects = _plan(int(n_studies), int(seed), str(out), int(size))
    workers = (
        min(os.cpu_count() or 1, len(tasks)) if num_workers is None else min(int(num_workers), len(tasks))
    )
    bar = tqdm(total=len(tasks), desc="phantom studies", unit="study", disable=not progress)
    results: list[dict[str, Any]] = []
    if workers <= 1:
        for task in tasks:
            results.append(_make_study(task))
            bar.update()
    else:
        chunk = max(1, min(16, len(tasks) // (workers * 8)))
        with multiprocessing.Pool(workers) as pool:
            for res in pool.imap(_make_study, tasks, chunksize=chunk):
                results.append(res)
                bar.update()
    bar.close()

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
            f"`python -m cxr_ldm.data.phantom out_dir={Path(out_dir)} n_studies=N`."
        )
    return pd.read_csv(path, dtype={"dicom_id": str})


@hydra.main(version_base="1.3", config_path="../conf", config_name="phantom")
def main(cfg: DictConfig) -> dict[str, Any]:
    require_options(cfg, {"out_dir": "the folder to write the phantom MIMIC-CXR-JPG tree into"},
                    "cxr_ldm.data.phantom")  # fmt: skip
    run_command(check_override_types, cfg)  # n_studies=abc: refused, naming the option
    # a wrong option, a folder that cannot be written, a full disk: one line, no traceback
    summary = run_command(lambda c: generate_phantom(c.out_dir, c.n_studies, c.size, c.seed, c.num_workers), cfg,
                          user_errors=(ValueError, OSError))  # fmt: skip
    print(
        f"wrote {summary['n_studies']} studies ({summary['n_images']} images, {summary['n_reports']} reports, "
        f"{summary['n_subjects']} subjects) to {summary['out_dir']} in {summary['seconds']} s"
    )
    return summary


if __name__ == "__main__":
    main()
