"""A small hand-built MIMIC-CXR-JPG + reports tree with every case ``prepare`` must handle."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 COMPARISON:  ___

 FINDINGS:

 {findings}

 IMPRESSION:

 {impression}
"""


def write_asymmetric_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    """A bright block in the top-left corner, so any flip or transpose is detectable after resizing."""
    rng = np.random.default_rng(seed)
    array = (rng.random((height, width)) * 40 + 60).astype(np.uint8)
    array[: height // 3, : width // 3] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="L").save(path, format="JPEG", quality=92)


def build_mimic_tree(root: Path, n_plain: int = 0) -> dict:
    """Write the tree; returns the expected outcome per dicom_id."""
    rows, split_rows, expect = [], [], {}
    reports = root / "reports" / "files"

    def add(dicom, subject, study, split, view="PA", report=None, image="ok", in_split=True, size=(300, 400)):
        rows.append(
            dict(dicom_id=dicom, subject_id=subject, study_id=study, ViewPosition=view,
                 Rows=size[1], Columns=size[0], StudyDate=21800101, StudyTime=120000.0)
        )  # fmt: skip
        if in_split:
            split_rows.append(dict(dicom_id=dicom, study_id=study, subject_id=subject, split=split))
        img = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        if image == "ok":
            write_asymmetric_jpeg(img, *size, seed=len(rows))
        elif image == "corrupt":
            img.parent.mkdir(parents=True, exist_ok=True)
            img.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
        if report is not None:
            txt = reports / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(report)

    r1 = REPORT.format(findings="Heart size is normal. There is a 4.5 cm mass in the right\n upper lobe.",
                       impression="Right upper lobe mass.")  # fmt: skip
    add("aaaa0001", 10000032, 50000001, "train", report=r1)
    expect["aaaa0001"] = "kept"
    add("aaaa0002", 10000032, 50000001, "train", view="LATERAL")
    expect["aaaa0002"] = "not_pa"
    add("aaaa0003", 10000032, 50000002, "train", report=None)  # the report file is missing
    expect["aaaa0003"] = "no_report"
    add("bbbb0001", 10000100, 50000003, "validate",
        report="FINAL REPORT\n INDICATION: chest pain\n\n IMPRESSION: No acute cardiopulmonary process.\n")
    expect["bbbb0001"] = "kept"
    add("cccc0001", 10000200, 50000004, "test", image="corrupt", report=REPORT.format(
        findings="Lungs are clear.", impression="Normal chest."))  # fmt: skip
    expect["cccc0001"] = "unreadable_image"
    add("cccc0002", 10000200, 50000005, "test", report="FINAL REPORT\n INDICATION: ___ \n TECHNIQUE: PA.\n")
    expect["cccc0002"] = "no_findings_or_impression"
    add("dddd0001", 10000300, 50000006, "train", report=REPORT.format(
        findings="Small left pleural effusion.", impression="Small left effusion."))  # fmt: skip
    expect["dddd0001"] = "kept"
    add("dddd0002", 10000300, 50000006, "train", view="AP")
    expect["dddd0002"] = "not_pa"
    add("eeee0001", 10000400, 50000007, "train", in_split=False, report=REPORT.format(
        findings="Clear lungs.", impression="Normal."))  # fmt: skip
    expect["eeee0001"] = "not_in_split"
    add("ffff0001", 10000500, 50000008, "test", image="missing", report=REPORT.format(
        findings="Clear lungs.", impression="Normal."))  # fmt: skip
    expect["ffff0001"] = "unreadable_image"
    splits = ("train", "validate", "test")
    for i in range(n_plain):
        subject, study = 11000000 + i, 58000000 + i
        sentences = " ".join(f"Plain sentence number {j} of study {i}." for j in range(1 + i % 7))
        add(f"plain{i:04d}", subject, study, splits[i % 3] if i < 9 else "train",
            report=REPORT.format(findings=sentences, impression=f"Impression of study {i}."),
            size=(96 + i % 5, 120))  # fmt: skip
        expect[f"plain{i:04d}"] = "kept"

    def write_gz(frame: pd.DataFrame, name: str) -> None:
        with gzip.open(root / name, "wt") as fh:
            frame.to_csv(fh, index=False)

    write_gz(pd.DataFrame(rows), "mimic-cxr-2.0.0-metadata.csv.gz")
    write_gz(pd.DataFrame(split_rows), "mimic-cxr-2.0.0-split.csv.gz")
    return expect


@pytest.fixture
def mimic_tree(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "mimic"
    root.mkdir()
    return root, build_mimic_tree(root)


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """A prepared folder with enough studies for DataModule batches (session-scoped: built once)."""
    from cxr_ldm.data.preparation import prepare_dataset

    root = tmp_path_factory.mktemp("mimic_plain")
    build_mimic_tree(root, n_plain=30)
    out = root / "prepared"
    prepare_dataset(root, root / "reports", out, size=48, num_workers=1, progress=False)
    return out
