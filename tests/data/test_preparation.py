"""``prepare``: PA filter, official split, report text, skipped-image reporting, orientation, size, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_ldm.data.mimic import LayoutError
from cxr_ldm.data.preparation import prepare_dataset
from cxr_ldm.data.reports import parse_report, report_sentences


def read_all(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(out / f"{s}.csv", dtype={"dicom_id": str}) for s in ("train", "validate", "test")])


def test_keeps_pa_with_text_and_reports_every_skip(mimic_tree, tmp_path):
    root, expect = mimic_tree
    out = tmp_path / "out"
    result = prepare_dataset(root, root / "reports", out, size=64, num_workers=1, progress=False)
    frame = read_all(out)
    assert sorted(frame["dicom_id"]) == sorted(d for d, why in expect.items() if why == "kept")
    report = json.loads((out / "prepare_report.json").read_text())
    for reason in ("not_pa", "no_report", "no_findings_or_impression", "unreadable_image", "not_in_split"):
        assert report["skipped"][reason] == sorted(d for d, why in expect.items() if why == reason), reason
    assert report["kept"] == result.kept == len(frame)
    assert set(report["unreadable_errors"]) == {"cccc0001", "ffff0001"}


def test_split_comes_from_the_official_file(mimic_tree, tmp_path):
    root, _ = mimic_tree
    out = tmp_path / "out"
    prepare_dataset(root, root / "reports", out, size=64, num_workers=1, progress=False)
    official = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz").set_index("dicom_id")["split"]
    for split in ("train", "validate", "test"):
        part = pd.read_csv(out / f"{split}.csv", dtype={"dicom_id": str})
        assert (part["split"] == split).all()
        assert all(official[d] == split for d in part["dicom_id"])
    frame = read_all(out)
    assert frame.groupby("subject_id")["split"].nunique().max() == 1


def test_each_image_gets_its_own_studys_text(mimic_tree, tmp_path):
    root, _ = mimic_tree
    out = tmp_path / "out"
    prepare_dataset(root, root / "reports", out, size=64, num_workers=1, progress=False)
    frame = read_all(out).set_index("dicom_id")
    for dicom, row in frame.iterrows():
        txt = root / "reports" / "files" / f"p{str(row.subject_id)[:2]}" / f"p{row.subject_id}" / f"s{row.study_id}.txt"
        sections = parse_report(txt.read_text())
        assert json.loads(row["sentences"]) == report_sentences(sections), dicom
        assert (row["findings"] if isinstance(row["findings"], str) else "") == sections.findings
    first = frame.loc["aaaa0001"]
    assert "4.5 cm mass" in first["findings"]  # decimals survive, wrapped line joined
    assert json.loads(first["sentences"])[0] == "Heart size is normal."
    assert frame.loc["bbbb0001", "impression"] == "No acute cardiopulmonary process."


def test_size_aspect_and_orientation_are_kept(mimic_tree, tmp_path):
    root, _ = mimic_tree
    out = tmp_path / "out"
    prepare_dataset(root, root / "reports", out, size=60, num_workers=1, progress=False)
    row = read_all(out).set_index("dicom_id").loc["aaaa0001"]
    with Image.open(out / row["image"]) as im:
        assert im.mode == "L"
        assert im.size == (60, 80)  # source 300 x 400: shorter side 60, aspect 3:4 kept
        assert (row["width"], row["height"]) == im.size
        array = np.asarray(im, dtype=float)
    # the source's bright block sits top-left (rows < h/3, cols < w/3): no flip, no transpose
    assert array[:20, :15].mean() > 200
    assert array[-20:, -15:].mean() < 120
    assert array[:20, -15:].mean() < 120 and array[-20:, :15].mean() < 120


def test_reports_from_the_zip_give_the_same_output(mimic_tree, tmp_path):
    root, _ = mimic_tree
    archive = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (root / "reports").rglob("*.txt"):
            zf.write(path, path.relative_to(root / "reports").as_posix())
    prepare_dataset(root, root / "reports", tmp_path / "a", size=32, num_workers=1, progress=False)
    prepare_dataset(root, archive, tmp_path / "b", size=32, num_workers=1, progress=False)
    for split in ("train", "validate", "test"):
        assert (tmp_path / "a" / f"{split}.csv").read_text() == (tmp_path / "b" / f"{split}.csv").read_text()


def test_rerun_resumes_instead_of_redoing(mimic_tree, tmp_path):
    root, _ = mimic_tree
    out = tmp_path / "out"
    first = prepare_dataset(root, root / "reports", out, size=64, num_workers=2, progress=False)
    frame = read_all(out)
    victim = out / frame.iloc[0]["image"]
    victim.unlink()  # as if the run had been interrupted before this image
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    second = prepare_dataset(root, root / "reports", out, size=64, num_workers=2, progress=False)
    assert (first.resized, first.reused) == (3, 0)
    assert (second.resized, second.reused) == (1, 2)
    assert victim.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert read_all(out).equals(frame)


def test_a_different_size_redoes_the_images(mimic_tree, tmp_path):
    root, _ = mimic_tree
    out = tmp_path / "out"
    prepare_dataset(root, root / "reports", out, size=64, num_workers=1, progress=False)
    again = prepare_dataset(root, root / "reports", out, size=32, num_workers=1, progress=False)
    assert again.reused == 0 and again.resized == 3


@pytest.mark.parametrize("missing", ["mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-split.csv.gz", "files"])
def test_missing_inputs_stop_at_once_naming_the_path(mimic_tree, tmp_path, missing):
    root, _ = mimic_tree
    target = root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(LayoutError) as err:
        prepare_dataset(root, root / "reports", tmp_path / "out", size=64, num_workers=1, progress=False)
    assert str(target) in str(err.value)
    assert not (tmp_path / "out" / "train.csv").exists()


def test_wrong_folders_are_named(mimic_tree, tmp_path):
    root, _ = mimic_tree
    with pytest.raises(LayoutError, match="is not a folder"):
        prepare_dataset(tmp_path / "nowhere", root / "reports", tmp_path / "out", progress=False)
    with pytest.raises(LayoutError, match=str(root / "files" / "files")):
        prepare_dataset(root, root / "files", tmp_path / "out", progress=False)  # reports= points one level too deep
    with pytest.raises(LayoutError, match="does not exist"):
        prepare_dataset(root, tmp_path / "no_reports", tmp_path / "out", progress=False)


def test_command_line(mimic_tree, tmp_path):
    root, _ = mimic_tree
    out = tmp_path / "cli"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "cxr_ldm.prepare", f"mimic_root={root}", f"reports={root / 'reports'}",
         f"out_dir={out}", "size=32", "num_workers=1"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "kept 3 images" in proc.stdout
    assert (out / "train.csv").is_file() and (out / "prepare_report.json").is_file()
    assert not (tmp_path / "outputs").exists()
    missing = subprocess.run(
        [sys.executable, "-m", "cxr_ldm.prepare", f"mimic_root={root}", f"out_dir={out}"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "reports" in missing.stderr
