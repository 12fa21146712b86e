"""MIMIC-CXR layout: where files live, and how the metadata, split and reports are read.

Kept apart from the preparation run so the phantom generator, ``prepare`` and tests agree on one
definition of the layout (``files/p10/p10000032/s50414267/<dicom_id>.jpg``).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"
REPORTS_ZIP = "mimic-cxr-reports.zip"
SPLITS = ("train", "validate", "test")

# Columns of the CheXpert label file (mimic-cxr-2.0.0-chexpert.csv.gz) after subject_id and study_id.
CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

# Columns of mimic-cxr-2.0.0-metadata.csv.gz, in MIMIC-CXR-JPG's order (the phantom writes the same).
METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip

_REPORT_NAME = re.compile(r"(?:^|/)(p\d{2}/p(\d+)/s(\d+)\.txt)$")


class LayoutError(FileNotFoundError):
    """A MIMIC-CXR input is missing or is not where the layout says; the message names the path."""


def subject_dir(subject_id: int) -> str:
    """``p10/p10000032``: MIMIC groups subjects by the first two digits of the id."""
    sid = str(int(subject_id))
    return f"p{sid[:2]}/p{sid}"


def image_relpath(subject_id: int, study_id: int, dicom_id: str, ext: str = "jpg") -> str:
    return f"files/{subject_dir(subject_id)}/s{int(study_id)}/{dicom_id}.{ext}"


def report_relpath(subject_id: int, study_id: int) -> str:
    return f"files/{subject_dir(subject_id)}/s{int(study_id)}.txt"


def require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise LayoutError(f"{what} not found: expected the file {path}. {fix}")
    return path


def read_metadata(mimic_root: Path) -> pd.DataFrame:
    """Metadata with the split joined in; the split file is authoritative (patient level, never reshuffled)."""
    mimic_root = Path(mimic_root)
    if not mimic_root.is_dir():
        raise LayoutError(
            f"mimic_root={mimic_root} is not a folder. Point it at the MIMIC-CXR-JPG root that holds "
            f"{METADATA_FILE}, {SPLIT_FILE} and files/."
        )
    fix = f"mimic_root must be the MIMIC-CXR-JPG root (the folder with {METADATA_FILE}, {SPLIT_FILE} and files/)."
    meta = pd.read_csv(require_file(mimic_root / METADATA_FILE, "MIMIC-CXR-JPG metadata", fix))
    split = pd.read_csv(require_file(mimic_root / SPLIT_FILE, "MIMIC-CXR-JPG split file", fix))
    if not (mimic_root / "files").is_dir():
        raise LayoutError(f"image folder not found: expected {mimic_root / 'files'}. {fix}")
    for name, frame, cols in (
        (METADATA_FILE, meta, ("dicom_id", "subject_id", "study_id", "ViewPosition")),
        (SPLIT_FILE, split, ("dicom_id", "split")),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise LayoutError(f"{mimic_root / name} lacks the column(s) {missing}; is it the MIMIC-CXR-JPG file?")
    meta = meta.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    meta["ViewPosition"] = meta["ViewPosition"].fillna("").astype(str)
    return meta


def read_chexpert(mimic_root: Path) -> pd.DataFrame | None:
    """CheXpert labels per study when the file is there (optional input)."""
    path = Path(mimic_root) / CHEXPERT_FILE
    return pd.read_csv(path) if path.is_file() else None


@dataclass
class ReportSource:
    """Reads ``files/pXX/pSUBJECT/sSTUDY.txt`` from a folder or from ``mimic-cxr-reports.zip``."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._zip_names: dict[tuple[int, int], str] | None = None
        if self.root.is_file() and zipfile.is_zipfile(self.root):
            with zipfile.ZipFile(self.root) as zf:
                self._zip_names = {}
                for name in zf.namelist():
                    m = _REPORT_NAME.search(name)
                    if m:
                        self._zip_names[(int(m.group(2)), int(m.group(3)))] = name
            if not self._zip_names:
                raise LayoutError(
                    f"reports={self.root} is a zip without report files (files/pXX/pSUBJECT/sSTUDY.txt)."
                )
        elif self.root.is_dir():
            if not (self.root / "files").is_dir():
                raise LayoutError(
                    f"reports={self.root} has no files/ folder: expected {self.root / 'files'} holding "
                    f"pXX/pSUBJECT/sSTUDY.txt, or pass the {REPORTS_ZIP} file itself."
                )
        else:
            raise LayoutError(
                f"reports={self.root} does not exist: pass the folder holding files/pXX/pSUBJECT/sSTUDY.txt "
                f"or the {REPORTS_ZIP} file."
            )

    @property
    def is_zip(self) -> bool:
        return self._zip_names is not None

    def read_many(self, keys: list[tuple[int, int]]) -> dict[int, str]:
        """Report text per study id for (subject_id, study_id) pairs; missing reports are absent."""
        out: dict[int, str] = {}
        if self._zip_names is not None:
            with zipfile.ZipFile(self.root) as zf:
                for subject, study in keys:
                    name = self._zip_names.get((int(subject), int(study)))
                    if name is not None:
                        out[int(study)] = zf.read(name).decode("utf-8", errors="replace")
            return out
        for subject, study in keys:
            path = self.root / report_relpath(subject, study)
            if path.is_file():
                out[int(study)] = path.read_text(encoding="utf-8", errors="replace")
        return out
