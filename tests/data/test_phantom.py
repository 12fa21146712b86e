"""The phantom generator: MIMIC layout, patient-level split, determinism, and images/text/labels that agree."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_ldm.data.mimic import CHEXPERT_COLUMNS
from cxr_ldm.phantom.findings import complete_details, sample_findings
from cxr_ldm.phantom.lateral_view import render_lateral
from cxr_ldm.phantom.pa_view import render_pa
from cxr_ldm.phantom.report_text import write_report
from cxr_ldm.phantom.schema import FINDING_COLUMNS, GROUND_TRUTH_FILE
from cxr_ldm.phantom.studies import generate_phantom, load_ground_truth

N_STUDIES, SIZE, SEED = 30, 64, 7
METADATA_COLUMNS = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]  # fmt: skip
DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """The same cohort written in-process and with two worker processes, and a cohort of another seed."""
    root = tmp_path_factory.mktemp("phantom")
    out = {"one": root / "one", "two": root / "two", "other": root / "other"}
    generate_phantom(out["one"], N_STUDIES, size=SIZE, seed=SEED, num_workers=1, progress=False)
    generate_phantom(out["two"], N_STUDIES, size=SIZE, seed=SEED, num_workers=2, progress=False)
    generate_phantom(out["other"], N_STUDIES, size=SIZE, seed=SEED + 1, num_workers=1, progress=False)
    return out


def _csv(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / name, dtype={"dicom_id": str})


def _subject_dir(subject_id: int) -> str:
    s = str(subject_id)
    return f"p{s[:2]}/p{s}"


def _report(root: Path, subject_id: int, study_id: int) -> Path:
    return root / "reports" / "files" / _subject_dir(subject_id) / f"s{study_id}.txt"


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


def test_metadata_columns_paths_and_images(trees):
    root = trees["one"]
    meta = _csv(root, "mimic-cxr-2.0.0-metadata.csv.gz")
    assert list(meta.columns) == METADATA_COLUMNS
    assert meta["dicom_id"].map(lambda d: bool(DICOM_ID.match(d))).all()
    assert meta["dicom_id"].is_unique
    assert meta["subject_id"].between(10_000_000, 19_999_999).all()
    assert meta["study_id"].between(50_000_000, 59_999_999).all()
    assert meta["StudyDate"].astype(str).str.fullmatch(r"2\d{7}").all()
    heights = set()
    for row in meta.itertuples():
        path = root / "files" / _subject_dir(row.subject_id) / f"s{row.study_id}" / f"{row.dicom_id}.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L"
            assert im.size == (row.Columns, row.Rows)
        assert row.Columns == SIZE and row.Rows > 1.1 * SIZE  # not square, shorter side == size
        heights.add(row.Rows)
    assert len(heights) > 3  # the aspect ratio varies


def test_one_pa_per_study_and_some_other_views(trees):
    meta = _csv(trees["one"], "mimic-cxr-2.0.0-metadata.csv.gz")
    assert meta["study_id"].nunique() == N_STUDIES
    pa = meta[meta["ViewPosition"] == "PA"]
    assert len(pa) == N_STUDIES and pa["study_id"].is_unique
    others = meta[meta["ViewPosition"] != "PA"]
    assert len(others) > 0 and set(others["ViewPosition"]) <= {"AP", "LATERAL", "LL"}
    meaning = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}
    assert (meta["ViewPosition"].map(meaning) == meta["ViewCodeSequence_CodeMeaning"]).all()
    per_subject = meta.groupby("subject_id")["study_id"].nunique()
    assert per_subject.between(1, 3).all() and (per_subject > 1).any()


def test_split_is_patient_level_with_every_split(trees):
    root = trees["one"]
    meta = _csv(root, "mimic-cxr-2.0.0-metadata.csv.gz")
    split = _csv(root, "mimic-cxr-2.0.0-split.csv.gz")
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert set(split["dicom_id"]) == set(meta["dicom_id"])
    assert set(split["split"]) == {"train", "validate", "test"}
    assert (split.groupby("subject_id")["split"].nunique() == 1).all()
    assert (split["split"] == "train").mean() > 0.6


def test_chexpert_and_ground_truth_files(trees):
    root = trees["one"]
    chex = _csv(root, "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert list(chex.columns) == ["subject_id", "study_id", *CHEXPERT_COLUMNS]
    values = set(np.unique(chex[list(CHEXPERT_COLUMNS)].to_numpy().ravel().astype(str)))
    assert values <= {"1.0", "0.0", "-1.0", "nan"} and "nan" in values and "1.0" in values
    raw = gzip.decompress((root / "mimic-cxr-2.0.0-chexpert.csv.gz").read_bytes()).decode()
    assert ",," in raw and "1.0" in raw  # empty cells as in MIMIC, floats written as 1.0
    truth = load_ground_truth(root)
    assert list(truth.columns) == [
        "dicom_id",
        "subject_id",
        "study_id",
        "ViewPosition",
        *FINDING_COLUMNS,
        "normal",
    ]
    meta = _csv(root, "mimic-cxr-2.0.0-metadata.csv.gz")
    assert list(truth["dicom_id"]) == list(meta["dicom_id"])
    assert (truth["ViewPosition"].to_numpy() == meta["ViewPosition"].to_numpy()).all()
    assert truth[list(FINDING_COLUMNS)].isin([0, 1, 2, 3]).all().all()
    assert (truth["normal"] == (truth[list(FINDING_COLUMNS)].sum(axis=1) == 0)).all()
    assert 0 < truth["normal"].mean() < 1


def test_reports_layout_and_missing_reports(trees):
    root = trees["one"]
    meta = _csv(root, "mimic-cxr-2.0.0-metadata.csv.gz").drop_duplicates("study_id")
    chex = _csv(root, "mimic-cxr-2.0.0-chexpert.csv.gz")
    have = {
        (r.subject_id, r.study_id)
        for r in meta.itertuples()
        if _report(root, r.subject_id, r.study_id).is_file()
    }
    # CheXpert labels exist exactly where report text exists
    assert have == set(zip(chex["subject_id"], chex["study_id"], strict=True))
    assert 1 <= N_STUDIES - len(have) <= 2  # about 1 % lack a report; at least one from 20 studies on
    for subject, study in have:
        text = _report(root, subject, study).read_text()
        lines = text.splitlines()
        assert lines[0] == " " * 33 + "FINAL REPORT"
        assert all(line.startswith(" ") for line in lines[1:])
        assert max(len(line) for line in lines) <= 80
        assert re.search(r"^ (INDICATION|Indication):.*___", text, re.M)
        assert re.search(r"^ (IMPRESSION|CONCLUSION|FINDINGS AND IMPRESSION|Impression|Conclusion|"
                         r"Findings and impression):", text, re.M)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_byte_identical_for_a_seed_whatever_num_workers(trees):
    one, two = _all_files(trees["one"]), _all_files(trees["two"])
    assert one.keys() == two.keys()
    assert [k for k in one if one[k] != two[k]] == []
    other = _all_files(trees["other"])
    assert one[GROUND_TRUTH_FILE] != other[GROUND_TRUTH_FILE]


def test_render_pa_is_deterministic_and_sized():
    a = render_pa({"nodule": 2}, np.random.default_rng(1), 96)
    b = render_pa({"nodule": 2}, np.random.default_rng(1), 96)
    assert a.dtype == np.uint8 and a.ndim == 2 and np.array_equal(a, b)
    assert a.shape[1] == 96 and 1.12 * 96 - 1 <= a.shape[0] <= 1.3 * 96 + 1
    assert render_pa({}, np.random.default_rng(1), 80, height=100).shape == (100, 80)
    assert render_lateral({}, np.random.default_rng(1), 80, height=100).shape == (100, 80)


# ---------------------------------------------------------------------------------------------
# Labels, text and pixels agree
# ---------------------------------------------------------------------------------------------


def _check_text_and_labels(f: dict[str, int], text: str, labels: dict[str, float]) -> None:
    low = " ".join(text.lower().split())
    pairs = {
        "Cardiomegaly": f["cardiomegaly"],
        "Pleural Effusion": f["pleural_effusion_left"] + f["pleural_effusion_right"],
        "Pneumothorax": f["pneumothorax_left"] + f["pneumothorax_right"],
        "Lung Lesion": f["nodule"],
        "Consolidation": f["consolidation_left"] + f["consolidation_right"],
        "Support Devices": f["support_devices"],
    }
    for col, severity in pairs.items():
        if severity:
            assert labels.get(col) == 1.0, (col, text)
        else:
            assert labels.get(col) in (None, 0.0), (col, text)
    pathology = sum(v for k, v in pairs.items() if k != "Support Devices")
    assert (labels.get("No Finding") == 1.0) == (pathology == 0)
    sev = {1: "small", 2: "moderate", 3: "large"}
    r, left = f["pleural_effusion_right"], f["pleural_effusion_left"]
    if r and left:
        assert "bilateral" in low and "effusion" in low
    elif r or left:
        assert f"{sev[r or left]} {'right' if r else 'left'}" in low and "effusion" in low, text
    else:
        assert not re.search(r"(small|moderate|large)[^.]*effusion", low), text
    r, left = f["pneumothorax_right"], f["pneumothorax_left"]
    if r or left:
        assert f"{sev[r or left]} {'right' if r else 'left'}" in low and "pneumothorax" in low, text
    else:
        assert not re.search(r"(small|moderate|large)[^.]*pneumothora", low), text
    if f["cardiomegaly"]:
        word = {1: "mild", 2: "moderate", 3: ("severe", "marked")}[f["cardiomegaly"]]
        assert any(w in low for w in np.atleast_1d(word)) and ("cardiomegaly" in low or "enlarged" in low), (
            text
        )
    else:
        assert "cardiomegaly" not in low
    if f["nodule"]:
        side = "right" if f["nodule_side"] == 0 else "left"
        assert re.search(rf"(nodule|mass).*{side}|{side}.*(nodule|mass)", low), text
        assert ("mass" in low) == (f["nodule"] == 3)
    for side in ("right", "left"):
        if f[f"consolidation_{side}"]:
            assert "consolidation" in low and side in low, text
    if f["support_devices"]:
        assert re.search(r"tube|catheter|line|pacemaker", low)
    if not any(f[k] for k in FINDING_COLUMNS):
        assert re.search(r"no acute|normal chest|no evidence of acute", low), text


def test_report_text_and_chexpert_labels_follow_findings():
    """Many random studies: every drawn finding is named with side and severity, absent ones never positive."""
    layouts = set()
    for i in range(400):
        rng = np.random.default_rng([11, i])
        f = complete_details(sample_findings(rng), rng)
        text, labels = write_report(
            f, rng, "CHEST (PA AND LAT)", "Chest PA and lateral", i % 2 == 0, i % 3 == 0
        )
        _check_text_and_labels(f, text, labels)
        layouts |= set(re.findall(r"^ (FINDINGS AND IMPRESSION|FINDINGS|IMPRESSION|CONCLUSION):", text, re.M))
        if re.search(r"^ 2\. ", text, re.M):
            layouts.add("numbered")
    assert layouts == {"FINDINGS", "IMPRESSION", "FINDINGS AND IMPRESSION", "CONCLUSION", "numbered"}


def test_generated_reports_and_labels_agree_with_ground_truth(trees):
    root = trees["one"]
    truth = load_ground_truth(root)
    truth = truth[truth["ViewPosition"] == "PA"]
    chex = _csv(root, "mimic-cxr-2.0.0-chexpert.csv.gz").set_index("study_id")
    checked = 0
    for row in truth.itertuples():
        path = _report(root, row.subject_id, row.study_id)
        if not path.is_file():
            continue
        f = {k: int(getattr(row, k)) for k in FINDING_COLUMNS}
        labels = {
            k: float(v) for k, v in chex.loc[row.study_id, list(CHEXPERT_COLUMNS)].items() if not pd.isna(v)
        }
        text = path.read_text()
        for col, keys in (("Pleural Effusion", ("pleural_effusion_left", "pleural_effusion_right")),
                          ("Cardiomegaly", ("cardiomegaly",)), ("Support Devices", ("support_devices",)),
                          ("Pneumothorax", ("pneumothorax_left", "pneumothorax_right")), ("Lung Lesion", ("nodule",)),
                          ("Consolidation", ("consolidation_left", "consolidation_right"))):  # fmt: skip
            assert (labels.get(col) == 1.0) == any(f[k] for k in keys), (col, text)
        low = " ".join(text.lower().split())
        sides = [side for side in ("right", "left") if f[f"pleural_effusion_{side}"]]
        if sides:
            assert "effusion" in low and ("bilateral" if len(sides) == 2 else sides[0]) in low
        if row.normal:
            assert labels.get("No Finding") == 1.0
        checked += 1
    assert checked >= N_STUDIES - 2
    assert truth["normal"].between(0, 1).all() and 0.15 < truth["normal"].mean() < 0.7


def _region(img: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> float:
    h, w = img.shape
    return float(img[int(rows[0] * h) : int(rows[1] * h), int(cols[0] * w) : int(cols[1] * w)].mean())


IMAGE_LEFT, IMAGE_RIGHT = (0.14, 0.32), (0.68, 0.86)  # the patient's right and left lung (PA view)


@pytest.mark.parametrize("side", ["right", "left"])
def test_large_effusion_whitens_the_lower_named_hemithorax(side):
    size, height = 128, 154
    base = render_pa({}, np.random.default_rng(3), size, height).astype(float)
    fluid = render_pa({f"pleural_effusion_{side}": 3}, np.random.default_rng(3), size, height).astype(float)
    named, other = (IMAGE_LEFT, IMAGE_RIGHT) if side == "right" else (IMAGE_RIGHT, IMAGE_LEFT)
    lower = (0.5, 0.66)
    assert _region(fluid, lower, named) > _region(base, lower, named) + 50
    assert abs(_region(fluid, lower, other) - _region(base, lower, other)) < 2
    apex = (0.18, 0.3)  # stays clear
    assert abs(_region(fluid, apex, named) - _region(base, apex, named)) < 3
    # still obvious after squashing to the 64 x 64 a small demo model trains on
    small = [
        np.asarray(Image.fromarray(x.astype(np.uint8)).resize((64, 64), Image.BILINEAR), float)
        for x in (base, fluid)
    ]
    assert _region(small[1], lower, named) > _region(small[0], lower, named) + 40


def _heart_width(img: np.ndarray) -> float:
    """Widest bright run through the image centre between the lungs, above the domes, as a fraction of width."""
    h, w = img.shape
    lung = np.median(img[int(0.3 * h) : int(0.5 * h), int(0.15 * w) : int(0.3 * w)])
    mediastinum = np.median(img[int(0.3 * h) : int(0.45 * h), w // 2 - 2 : w // 2 + 2])
    bright = img > (lung + mediastinum) / 2
    best = 0
    for r in range(int(0.42 * h), int(0.56 * h)):
        row, c = bright[r], w // 2
        left, right = c, c
        while left > 0 and row[left - 1]:
            left -= 1
        while right < w - 1 and row[right + 1]:
            right += 1
        best = max(best, right - left + 1)
    return best / w


def test_cardiomegaly_widens_the_heart():
    widths = [_heart_width(render_pa({"cardiomegaly": s}, np.random.default_rng(4), 128, 154).astype(float))
              for s in range(4)]  # fmt: skip
    assert 0.25 < widths[0] < 0.42
    assert widths[0] <= widths[1] < widths[2] < widths[3]
    assert widths[3] > 1.3 * widths[0]
    # the growth is to the patient's left (image right): a box lateral to the normal left heart border brightens
    normal = render_pa({}, np.random.default_rng(4), 128, 154).astype(float)
    big = render_pa({"cardiomegaly": 3}, np.random.default_rng(4), 128, 154).astype(float)
    assert _region(big, (0.5, 0.56), (0.77, 0.82)) > _region(normal, (0.5, 0.56), (0.77, 0.82)) + 40


@pytest.mark.parametrize("side", ["right", "left"])
def test_pneumothorax_darkens_the_apex_of_the_named_side(side):
    base = render_pa({}, np.random.default_rng(8), 128, 154).astype(float)
    ptx = render_pa({f"pneumothorax_{side}": 3}, np.random.default_rng(8), 128, 154).astype(float)
    named, other = (IMAGE_LEFT, IMAGE_RIGHT) if side == "right" else (IMAGE_RIGHT, IMAGE_LEFT)
    upper = (0.16, 0.3)
    assert _region(ptx, upper, named) < _region(base, upper, named) - 8
    assert abs(_region(ptx, upper, other) - _region(base, upper, other)) < 1


def test_nodule_consolidation_and_devices_change_the_right_places():
    rng = lambda: np.random.default_rng(9)  # noqa: E731
    base = render_pa({}, rng(), 128, 154).astype(int)

    def changed(f: dict[str, int]) -> np.ndarray:
        return np.abs(render_pa(f, rng(), 128, 154).astype(int) - base) > 25

    small = changed({"nodule": 1, "nodule_side": 0, "nodule_zone": 0})
    mass = changed({"nodule": 3, "nodule_side": 0, "nodule_zone": 0})
    assert 0 < small.sum() < mass.sum()
    ys, xs = np.nonzero(mass)
    assert xs.mean() < 64 and ys.mean() < 0.45 * 154  # right (image left) upper lung
    cons = changed({"consolidation_left": 3, "consolidation_left_zone": 2})
    ys, xs = np.nonzero(cons)
    assert cons.sum() > 100 and xs.min() >= 60 and ys.mean() > 0.45 * 154  # left (image right) lower lobe
    tubes = changed({"support_devices": 2})
    assert tubes.sum() > 30


# ---------------------------------------------------------------------------------------------
# Entry points and errors
# ---------------------------------------------------------------------------------------------


def test_command_line_writes_tree_without_stray_folders(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [
        sys.executable,
        "-m",
        "cxr_ldm.phantom",
        f"out_dir={out}",
        "n_studies=3",
        "size=32",
        "num_workers=1",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "mimic-cxr-2.0.0-split.csv.gz").is_file() and (out / GROUND_TRUTH_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no outputs/ in the working folder
    missing = subprocess.run(cmd[:3] + ["n_studies=3"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "out_dir" in missing.stderr and "Traceback" not in missing.stderr


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="phantom_findings.csv.gz"):
        load_ground_truth(tmp_path)
    with pytest.raises(ValueError, match="n_studies"):
        generate_phantom(tmp_path, 0)
