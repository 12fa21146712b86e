"""``python -m cxr_ldm.evaluate`` with CheXGenBench's measures on the tiny trained LDM: every network is a tiny
random-weight file written in its real format by the library that owns it (the writers of tests/metrics), and the
numbers in metrics.json and report.md are checked against computations that do not use the evaluation code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import compose_config, run_module
from metrics.test_alignment import biovil_folder  # noqa: F401 (a fixture: the BioViL-T folder layout)
from metrics.test_prdc import reference_prdc
from metrics.test_raddino import write_tiny_raddino
from metrics.test_reid import CheXGenBenchSiamese
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance
from transformers import AutoImageProcessor, AutoModel

from cxr_ldm.evaluation.runner import Evaluation, EvaluationError
from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL
from cxr_ldm.metrics.per_pathology import CHEXPERT_LABELS, label_column
from cxr_ldm.metrics.raddino import RadDinoWeightsError
from cxr_ldm.metrics.reid import REID_FILE
from cxr_ldm.report import main as report_main

pytest_plugins = ["ldm_fixtures"]

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NEW_MEASURES = ["fid_raddino", "kid_raddino", "prdc", "alignment", "reid", "per_pathology"]
GRID_PROMPTS = ["Large right pleural effusion.", "Moderate cardiomegaly."]


@pytest.fixture(scope="module")
def raddino_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_raddino(tmp_path_factory.mktemp("rad-dino"))


@pytest.fixture(scope="module")
def reid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CheXGenBench's Siamese network, random weights, saved as its released file is (a plain state dict)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("reid") / REID_FILE
    torch.save(CheXGenBenchSiamese().state_dict(), path)
    return path


class Passthrough(torch.nn.Module):
    """torchmetrics' FID on given feature vectors (its "images" are the features)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _pixels(path: Path, size: int) -> np.ndarray:
    """uint8 ``[size, size]``: the image, center-cropped (the prepared phantom images' shorter side is ``size``)."""
    array = np.asarray(Image.open(path).convert("L"))
    h, w = array.shape
    assert min(h, w) == size
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    return array[top : top + size, left : left + size]


def _raddino_features(folder: Path, arrays: list[np.ndarray]) -> np.ndarray:
    """What a person does with transformers: the folder's processor on RGB PIL images, then pooler_output."""
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        out = model(**processor(images=[Image.fromarray(a).convert("RGB") for a in arrays], return_tensors="pt"))
    return out.pooler_output.double().numpy()


@pytest.mark.slow
def test_chexgenbench_measures_end_to_end(tmp_path: Path, trained_ldm_ckpt: Path, phantom32: Path, raddino_dir: Path,
                                          biovil_folder: Path, reid_file: Path):  # noqa: F811  # fmt: skip
    out = tmp_path / "eval"
    result = run_module(
        "cxr_ldm.evaluate", f"out_dir={out}", f"metrics=[fid,{','.join(NEW_MEASURES)}]", f"model={trained_ldm_ckpt}",
        f"data_dir={phantom32}", f"raddino_weights={raddino_dir}", f"alignment_weights={biovil_folder}",
        f"reid_weights={reid_file}", "allow_random_xrv=true", f"cache_dir={tmp_path / 'cache'}", "n_real=null",
        "sampling.n=8", "sampling.steps=2", "sampling.batch_size=4", "sampling.seed=5", "kid_raddino.subsets=3",
        "kid_raddino.subset_size=4", "reid.n_train=8", "per_pathology.min_images=2", "report.images_per_prompt=2",
        f"report.prompts=[{','.join(GRID_PROMPTS)}]", "batch_size=8", "num_workers=0", "device=cpu",
        "progress=false", cwd=tmp_path, env={**SINGLE_THREAD, "HOME": str(tmp_path)}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    test = pd.read_csv(phantom32 / "test.csv")
    manifest = json.loads((out / "samples" / "samples.json").read_text())
    generated = [out / "samples" / r["file"] for r in manifest["images"]]
    assert len(generated) == 8

    # the protocol of every measure: its network, the weights and their hash, the counts, the seeds
    for name in ["fid", *NEW_MEASURES]:
        protocol = metrics[name]["protocol"]
        assert protocol["seed"] == 0 and protocol["generated_seeds"]["first"] == 5, name
    assert metrics["fid"]["protocol"]["weights"] == RANDOM_WEIGHTS_LABEL and metrics["fid"]["protocol"]["n_real"] == len(test)
    assert metrics["fid_raddino"]["protocol"]["weights"] == str(raddino_dir.resolve())
    assert len(metrics["fid_raddino"]["protocol"]["weights_sha256"]) == 64
    assert metrics["alignment"]["protocol"]["weights"] == str(biovil_folder.resolve())
    assert metrics["reid"]["protocol"]["weights"] == str(reid_file.resolve())
    assert metrics["per_pathology"]["protocol"]["weights"] == RANDOM_WEIGHTS_LABEL
    assert metrics["prdc"]["xrv"]["protocol"]["weights"] == RANDOM_WEIGHTS_LABEL
    assert metrics["settings"]["sampling"]["steps"] == 2  # the resolved settings, for a sweep's report

    # fid_raddino and prdc against features computed with transformers alone, FID by torchmetrics
    real_f = _raddino_features(raddino_dir, [_pixels(phantom32 / p, 32) for p in test["image"]])
    fake_f = _raddino_features(raddino_dir, [_pixels(p, 32) for p in generated])
    fid = FrechetInceptionDistance(feature=Passthrough(real_f.shape[1]))
    fid.update(torch.from_numpy(real_f), real=True)
    fid.update(torch.from_numpy(fake_f), real=False)
    assert metrics["fid_raddino"]["value"] == pytest.approx(float(fid.compute()), rel=1e-3)
    assert (metrics["fid_raddino"]["n_real"], metrics["fid_raddino"]["n_generated"]) == (len(test), 8)
    expected = reference_prdc(real_f, fake_f, 5)
    for key, value in expected.items():
        assert metrics["prdc"]["raddino"][key] == pytest.approx(value, abs=1e-9), key
    assert metrics["kid_raddino"]["subsets"] == 3 and metrics["kid_raddino"]["subset_size"] == 4

    # alignment: one score per generated image, their mean is the number
    per_image = pd.read_csv(out / "alignment_per_image.csv")
    assert metrics["alignment"]["n"] == 8 and list(per_image["prompt"]) == [r["prompt"] for r in manifest["images"]]
    assert metrics["alignment"]["mean"] == pytest.approx(per_image["score"].mean())

    # re-identification: against 8 training images, real test images as the baseline
    reid = metrics["reid"]
    assert (reid["n_generated"], reid["n_train"], reid["real_test_to_train"]["n"]) == (8, 8, len(test))
    assert 0 <= reid["mean"] <= reid["max"] <= 1

    # per pathology: each generated image carries the labels of the study its prompt came from
    rows = manifest["prompt_sources"]["rows"]
    labels = metrics["per_pathology"]["labels"]
    for label in CHEXPERT_LABELS:
        column = label_column(label)
        assert labels[label]["n_real"] == int((test[column] == 1).sum()), label
        assert labels[label]["n_generated"] == int((test[column].iloc[rows] == 1).sum()), label

    # report.md: the numbers of metrics.json, the sample grid of the fixed prompts, the per-pathology figure
    report = (out / "report.md").read_text()
    assert f"{metrics['fid_raddino']['value']:.2f}" in report
    assert f"{metrics['prdc']['raddino']['precision']:.4f}" in report
    assert f"{metrics['alignment']['mean']:.4f}" in report
    assert "RANDOM weights" in report  # the DenseNet of per_pathology and prdc/xrv was random
    with Image.open(out / "figures" / "samples.png") as grid:
        assert grid.size[0] > 2 * 32
    assert (out / "figures" / "per_pathology.png").is_file()
    assert sorted(p.name for p in (out / "report_samples").glob("*.png")) == [
        "p00_s00.png", "p00_s01.png", "p01_s00.png", "p01_s01.png"
    ]  # fmt: skip
    assert "fid_raddino" in result.stdout and "report.md" in result.stdout

    # the report command writes the same report again from metrics.json and the grid's folder
    (out / "report.md").unlink()
    assert report_main([str(out)]) == 0
    assert (out / "report.md").read_text() == report


def compose_evaluate(*overrides: str):
    return compose_config("evaluate", overrides, inference=True)


def test_new_options_are_checked_before_any_sampling(tmp_path: Path, phantom32: Path, trained_ldm_ckpt: Path):
    out = tmp_path / "out"
    base = [f"out_dir={out}", f"model={trained_ldm_ckpt}", f"data_dir={phantom32}", "allow_random_xrv=true",
            f"hf_cache_dir={tmp_path / 'empty_hub'}", "device=cpu"]  # fmt: skip
    with pytest.raises(RadDinoWeightsError, match=r"raddino_weights='.*nowhere'.*allow_random_raddino=true"):
        Evaluation(compose_evaluate(*base, "metrics=[fid,fid_raddino]", f"raddino_weights={tmp_path / 'nowhere'}"))
    with pytest.raises(RadDinoWeightsError, match=r"not in .*empty_hub"):
        Evaluation(compose_evaluate(*base, "metrics=[prdc]"))
    with pytest.raises(EvaluationError, match=r"prdc.features must list some of raddino, xrv"):
        Evaluation(compose_evaluate(*base, "metrics=[prdc]", "prdc.features=[inception]"))
    with pytest.raises(EvaluationError, match=r"per_pathology needs the CheXpert labels.*real_dir="):
        Evaluation(compose_evaluate(*base, "metrics=[per_pathology]", f"real_dir={phantom32 / 'images'}"))
    with pytest.raises(EvaluationError, match=r"reid needs training images"):
        Evaluation(compose_evaluate(f"out_dir={out}", "metrics=[reid]", f"fake_dir={tmp_path}"))
    with pytest.raises(EvaluationError, match=r"alignment needs each generated image's prompt.*samples.json"):
        Evaluation(compose_evaluate(f"out_dir={out}", "metrics=[alignment]", f"fake_dir={tmp_path}"))
    with pytest.raises(EvaluationError, match=r"report.prompts= contains empty prompts"):
        Evaluation(compose_evaluate(*base, "metrics=[fid]", "report.prompts=[ok,' ']"))
    assert not out.exists()  # nothing sampled, nothing written
