"""report.md and its figures from a metrics dict: files exist, table numbers are the input numbers, PNGs are
valid images of the documented sizes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_ldm.evaluation.report import write_report
from cxr_ldm.evaluation.report_tables import CHEXGENBENCH_FID_RADDINO, RANDOM_FLAG
from cxr_ldm.evaluation.sweep_report import load_metrics, sweep_points
from cxr_ldm.metrics.alignment import alignment_summary
from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL
from cxr_ldm.metrics.per_pathology import CHEXPERT_LABELS, label_column, per_pathology_report
from cxr_ldm.metrics.prdc import prdc_from_features
from cxr_ldm.metrics.reid import reid_report


def _metrics(guidance: float = 7.0, fid_raddino: float = 77.123, align: float = 0.3141) -> dict:
    rng = np.random.default_rng(0)
    cols = [label_column(lab) for lab in CHEXPERT_LABELS]
    labels = pd.DataFrame(rng.choice([1.0, 0.0, np.nan], size=(60, len(cols))), columns=cols)
    names = ["Effusion", "Cardiomegaly"]
    pp = per_pathology_report(labels, labels, rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 0.5,
                              rng.uniform(size=(60, 2)), rng.uniform(size=(60, 2)), names, min_images=5)  # fmt: skip
    feats = rng.normal(size=(40, 5))
    return {
        "samples": {"n": 60, "source": "ldm_ckpt", "seed": 0},
        "settings": {"sampling": {"guidance_scale": guidance}},
        "recon": {"ms_ssim": 0.97654, "psnr": 31.237, "n": 500},
        "diversity": {"generated": {"mean": 0.41234, "n_images": 60}, "real": {"mean": 0.40123}},
        "fid": {"value": 12.3456, "n_real": 60, "n_generated": 60, "xrv_weights": "/w/densenet.pt"},
        "kid": {"mean": 0.012345, "std": 0.001, "subsets": 100, "subset_size": 60},
        "fid_raddino": {"value": fid_raddino, "n_real": 60, "n_generated": 60,
                        "protocol": {"feature_extractor": "RAD-DINO", "weights": "/w/rad-dino", "weights_sha256": "ab" * 32}},
        "kid_raddino": {"mean": 0.054321, "std": 0.002, "subsets": 100, "subset_size": 60},
        "prdc": {"raddino": prdc_from_features(feats, feats + 0.2), "xrv": prdc_from_features(feats, feats * 1.5)},
        "alignment": {**alignment_summary([align - 0.1, align, align + 0.1]),
                      "protocol": {"model": "BioViL-T", "weights": "/w/biovil", "weights_sha256": {"text": "c" * 64}}},
        "reid": reid_report(np.array([0.2, 0.7, 0.4]), np.array([0, 1, 2]), n_train=10),
        "memorization": {"fraction_near_copies": 0.0123, "n_near_copies": 1, "threshold": 0.01,
                         "generated_to_train": {"n": 60}},
        "adherence": {"generated": {"mean_accuracy": 0.8123, "mean_auroc": 0.9234}, "real": {"mean_auroc": 0.95}},
        "per_pathology": pp,
    }  # fmt: skip


def _table_values(report: str) -> dict[str, str]:
    section = report.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| metric", "| ---"))]  # fmt: skip
    return {cells[0]: cells[1] for cells in ([c.strip() for c in r.strip("|").split(" | ")] for r in rows)}


@pytest.fixture()
def sample_rows(tmp_path: Path) -> list[tuple[str, list[Path]]]:
    rng = np.random.default_rng(1)
    rows = []
    for r, prompt in enumerate(["No acute cardiopulmonary process.", "Large right pleural effusion."]):
        paths = []
        for s in range(3):
            p = tmp_path / "samples" / f"{r}_{s}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(p)
            paths.append(p)
        rows.append((prompt, paths))
    return rows


def test_report_files_numbers_and_figures(tmp_path: Path, sample_rows):
    metrics = _metrics()
    sweep = [_metrics(g, f, a) for g, f, a in ((3.0, 90.0, 0.20), (7.0, 77.123, 0.3141), (11.0, 85.0, 0.35))]
    written = write_report(metrics, tmp_path / "out", sample_rows=sample_rows, sweep=sweep)
    assert set(written) == {"report", "per_pathology", "samples", "guidance_sweep"}
    assert all(p.is_file() for p in written.values())
    text = written["report"].read_text()

    values = _table_values(text)
    expected = {
        "AE reconstruction MS-SSIM": f"{0.97654:.4f}", "AE reconstruction PSNR (dB)": f"{31.237:.2f}",
        "diversity: mean pairwise MS-SSIM, generated": f"{0.41234:.4f}",
        "diversity: mean pairwise MS-SSIM, real test": f"{0.40123:.4f}",
        "FID, torchxrayvision DenseNet features": f"{12.3456:.3f}",
        "KID, torchxrayvision DenseNet features": f"{0.012345:.5f}",
        "FID, RAD-DINO features": f"{77.123:.2f}", "KID, RAD-DINO features": f"{0.054321:.5f}",
        "alignment: BioViL-T image-prompt cosine, mean": f"{metrics['alignment']['mean']:.4f}",
        "re-identification: mean of per-image max probability": f"{np.mean([0.2, 0.7, 0.4]):.4f}",
        "re-identification: max probability": f"{0.7:.4f}", "re-identification: share above 0.5": f"{1 / 3:.4f}",
        "memorization: share of near-copies": f"{0.0123:.4f}",
        "adherence: mean accuracy, generated": f"{0.8123:.3f}", "adherence: mean AUROC, generated": f"{0.9234:.3f}",
    }  # fmt: skip
    for features in ("raddino", "xrv"):
        for name in ("precision", "recall", "density", "coverage"):
            expected[f"{name} ({features})"] = f"{metrics['prdc'][features][name]:.4f}"
    for metric, value in expected.items():
        assert values[metric] == value, metric
    assert "0.9789" in text and "0.4083" in text and "9.02 (other protocol: not comparable)" in text

    # leaderboard: our FID placed between the CheXGenBench entries around it
    board = text.split("## CheXGenBench leaderboard", 1)[1].split("\n## ", 1)[0]
    ours = next(line for line in board.splitlines() if "**this model**" in line)
    rank = int(ours.strip("|").split("|")[0])
    assert rank == 1 + sum(v < 77.123 for _, _, v in CHEXGENBENCH_FID_RADDINO)
    assert "| 1 | Sana | 0.60B | 54.23 |" in board

    # per-pathology table: the input FIDs, "n/a" where there were too few images
    pp = metrics["per_pathology"]["labels"]
    for label, entry in pp.items():
        line = next(row for row in text.splitlines() if row.startswith(f"| {label} |"))
        fid_cell = line.strip("|").split(" | ")[3].strip()
        assert fid_cell == ("n/a" if entry["fid"] is None else f"{entry['fid']:.2f}")

    for name, size in (("per_pathology", (1200, 600)), ("guidance_sweep", (600, 450))):
        with Image.open(written[name]) as im:
            im.verify()
        with Image.open(written[name]) as im:
            assert im.format == "PNG" and im.size == size
    with Image.open(written["samples"]) as im:
        assert im.format == "PNG" and im.size[0] == 3 * (160 + 6) + 6 and im.size[1] > 2 * 160
    for figure in ("figures/per_pathology.png", "figures/samples.png", "figures/guidance_sweep.png"):
        assert f"]({figure})" in text
    assert re.search(r"\| 7 \| 77\.12 \| RAD-DINO \| 0\.3141 \|", text)  # the sweep table
    assert "sha256 " + "ab" * 32 in text and RANDOM_FLAG not in text


def test_random_weights_are_flagged(tmp_path: Path):
    metrics = _metrics()
    metrics["fid_raddino"]["protocol"]["weights"] = RANDOM_WEIGHTS_LABEL
    text = write_report(metrics, tmp_path)["report"].read_text()
    assert "never report them" in text
    assert RANDOM_FLAG in next(line for line in text.splitlines() if line.startswith("| FID, RAD-DINO"))


def test_minimal_metrics_write_only_what_exists(tmp_path: Path):
    written = write_report({"fid": {"value": 3.0, "n_real": 2, "n_generated": 2}}, tmp_path)
    assert set(written) == {"report"}
    assert _table_values(written["report"].read_text()) == {"FID, torchxrayvision DenseNet features": "3.000"}


def test_sweep_points_and_loading(tmp_path: Path):
    import json

    runs = [_metrics(g, 100 - g, g / 20) for g in (9.0, 1.0, 5.0)]
    for k, m in enumerate(runs):
        (tmp_path / str(k)).mkdir()
        (tmp_path / str(k) / "metrics.json").write_text(json.dumps(m, default=float))
    loaded = load_metrics([tmp_path / "0", tmp_path / "1" / "metrics.json", tmp_path / "2"])
    points = sweep_points(loaded)
    assert [p["guidance_scale"] for p in points] == [1.0, 5.0, 9.0]
    assert [p["fid"] for p in points] == [99.0, 95.0, 91.0] and points[0]["alignment"] == pytest.approx(0.05)
    del loaded[0]["settings"]
    with pytest.raises(ValueError, match="records no guidance scale"):
        sweep_points(loaded)
    with pytest.raises(FileNotFoundError, match="expected a metrics.json"):
        load_metrics([tmp_path / "missing"])


def test_command_line_rewrites_a_report_with_a_sweep(tmp_path: Path, capsys):
    import json

    from cxr_ldm.report import main

    for g in (2.0, 7.0):
        (tmp_path / f"g{g:g}").mkdir()
        (tmp_path / f"g{g:g}" / "metrics.json").write_text(json.dumps(_metrics(g, 80 + g, g / 20), default=float))
    assert main([str(tmp_path / "g7"), "--sweep", str(tmp_path / "g2"), str(tmp_path / "g7")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "g7" / "report.md")
    text = (tmp_path / "g7" / "report.md").read_text()
    assert "| 2 | 82.00 | RAD-DINO | 0.1000 |" in text and (tmp_path / "g7" / "figures" / "guidance_sweep.png").is_file()


def test_notes_follow_the_title(tmp_path: Path):
    notes = ["The feature networks were random.", "Phantom data, 64 px."]
    text = write_report({"fid": {"value": 3.0, "n_real": 2, "n_generated": 2}}, tmp_path, title="T",
                        notes=notes)["report"].read_text()  # fmt: skip
    assert text.startswith("# T\n\nThe feature networks were random.\n\nPhantom data, 64 px.\n\n")
