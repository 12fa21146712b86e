"""``python -m cxr_ldm.evaluate`` end to end on the tiny trained checkpoints and a small phantom dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchxrayvision as xrv
from helpers import compose_config, run_module
from PIL import Image

from cxr_ldm.evaluation.runner import EvaluationError, run_evaluation
from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL

pytest_plugins = ["ldm_fixtures"]

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 2 shared cores: one thread is much faster



@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """An empty HOME: no torchxrayvision cache, whatever the machine has."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def evaluate_cli(*args: str, cwd: Path, home: Path):
    return run_module(
        "cxr_ldm.evaluate", *args, cwd=cwd, env={**SINGLE_THREAD, "HOME": str(home)}, timeout=600
    )


SMALL = [
    "n_real=null", "sampling.n=8", "sampling.steps=2", "sampling.batch_size=4", "sampling.seed=5",
    "diversity.n=4", "recon.n=6", "kid.subsets=3", "kid.subset_size=4", "memorization.n_train=16",
    "adherence.phantom.n_train=128", "adherence.phantom.n_val=32", "adherence.phantom.epochs=1",
    "batch_size=8", "num_workers=0", "device=cpu", "progress=false",
]  # fmt: skip


@pytest.mark.slow
def test_every_metric_end_to_end_then_reuse_samples_and_cached_features(
    tmp_path: Path, home: Path, trained_ldm_ckpt: Path, tiny_ae_ckpt: Path, phantom32: Path
):
    out, cache = tmp_path / "eval", tmp_path / "cache"
    result = evaluate_cli(
        f"out_dir={out}", "metrics=[recon,diversity,fid,kid,adherence,memorization]",
        f"model={trained_ldm_ckpt}", f"ae_ckpt={tiny_ae_ckpt}", f"data_dir={phantom32}",
        "allow_random_xrv=true", f"cache_dir={cache}", *SMALL, cwd=tmp_path, home=home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("recon", "diversity", "fid", "kid", "adherence", "memorization", "samples", "settings"):
        assert name in metrics, name
    n_test = len(pd.read_csv(phantom32 / "test.csv"))

    # the samples: count and seeds recorded, images on disk
    samples = metrics["samples"]
    assert (samples["n"], samples["seed"], samples["seeds"]["first"], samples["seeds"]["last"]) == (
        8,
        5,
        5,
        12,
    )
    assert samples["prompts"].startswith("report excerpts")
    manifest = json.loads((out / "samples" / "samples.json").read_text())
    assert [r["seed"] for r in manifest["images"]] == list(range(5, 13))
    for record in manifest["images"]:
        with Image.open(out / "samples" / record["file"]) as png:
            assert png.mode == "L" and png.size == (32, 32)

    # random weights are labelled wherever they were used, and in the printed table
    for name in ("fid", "kid", "memorization"):
        assert metrics[name]["xrv_weights"] == RANDOM_WEIGHTS_LABEL
    assert "RANDOM xrv weights" in result.stdout and "published reference" in result.stdout
    assert np.isfinite(metrics["fid"]["value"]) and metrics["fid"]["n_generated"] == 8
    assert metrics["fid"]["n_real"] == n_test and metrics["fid"]["real_features_cache"] == "miss (stored)"
    assert metrics["kid"]["subset_size"] == 4 and metrics["kid"]["subsets"] == 3

    recon = metrics["recon"]
    per_image = pd.read_csv(out / "recon_per_image.csv")
    assert recon["n"] == len(per_image) == min(6, n_test)
    assert recon["ms_ssim"] == pytest.approx(per_image["ms_ssim"].mean()) and 0 < recon["ms_ssim"] <= 1
    assert recon["ms_ssim_settings"]["kernel_size"] <= 11

    diversity = metrics["diversity"]
    assert diversity["generated"]["n_pairs"] == 6 and diversity["real"]["n_images"] == min(4, n_test)

    adherence = metrics["adherence"]
    assert adherence["classifier"].startswith("phantom CNN (32 px")
    assert adherence["generated"]["n_images"] > 0  # phantom report excerpts name findings
    assert adherence["real"]["labels"] == "phantom ground truth" and adherence["real"]["n_images"] == n_test
    assert adherence["classifier_settings"]["raw_size"] == 64  # read off the phantom tree the data came from
    assert not adherence["classifier_cached"] and list(cache.glob("classifiers/phantom_classifier_32px_*.pt"))

    memorization = metrics["memorization"]
    assert memorization["n_train"] == 16 and memorization["generated_to_train"]["n"] == 8
    assert memorization["real_test_to_train"]["n"] == n_test

    # a second run on the written samples: same pixels -> same FID; real features come from the cache
    again = evaluate_cli(
        f"out_dir={tmp_path / 'again'}", "metrics=[fid]", f"fake_dir={out / 'samples'}",
        f"data_dir={phantom32}",
        "allow_random_xrv=true", f"cache_dir={cache}", *SMALL, cwd=tmp_path, home=home,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-4000:]
    second = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert second["fid"]["real_features_cache"] == "hit"
    assert second["fid"]["value"] == pytest.approx(metrics["fid"]["value"], rel=1e-6)
    assert second["samples"]["source"] == "fake_dir" and second["samples"]["seeds"]["first"] == 5


def test_random_weights_are_refused_before_any_sampling(tmp_path: Path, home: Path, trained_ldm_ckpt: Path,
                                                        phantom32: Path):  # fmt: skip
    out = tmp_path / "eval"
    result = evaluate_cli(f"out_dir={out}", "metrics=[fid]", f"model={trained_ldm_ckpt}",
                          f"data_dir={phantom32}",
                          cwd=tmp_path, home=home)  # fmt: skip
    assert result.returncode == 1
    expected = home / ".torchxrayvision" / "models_data"
    assert str(expected) in result.stderr and "allow_random_xrv" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "samples").exists() and not (out / "metrics.json").exists()

    missing = evaluate_cli("metrics=[fid]", cwd=tmp_path, home=home)
    assert missing.returncode == 2 and "out_dir=" in missing.stderr


def compose_evaluate(*overrides: str):
    return compose_config("evaluate", overrides, inference=True)


def test_option_errors_name_what_is_missing(tmp_path: Path, phantom32: Path):
    cases = [
        (["metrics=[fid]", f"data_dir={phantom32}"], "need generated images"),
        (["metrics=[diversity]", f"fake_dir={tmp_path}"], "need real images"),
        (["metrics=[recon]", f"data_dir={phantom32}"], "ae_ckpt="),
        (["metrics=[sharpness]"], "metrics= must list"),
        (["metrics=[fid]", f"data_dir={tmp_path}"], "prepare"),
        (["metrics=[fid]", f"data_dir={phantom32}", f"model={tmp_path / 'missing.ckpt'}"],
         "model not found: .*missing.ckpt"),
        (["metrics=[memorization]", f"data_dir={phantom32}", f"fake_dir={tmp_path}", "train_split=nope"],
         "nope.csv not found"),
        (["metrics=[adherence]", f"data_dir={phantom32}", f"fake_dir={tmp_path}"], "has no samples.json"),
        (["metrics=[adherence]", f"data_dir={phantom32}", "adherence.classifier=magic",
          f"fake_dir={tmp_path}"],
         "adherence.classifier"),
    ]  # fmt: skip
    for overrides, message in cases:
        cfg = compose_evaluate(f"out_dir={tmp_path / 'out'}", "allow_random_xrv=true", *overrides)
        with pytest.raises(EvaluationError, match=message):
            run_evaluation(cfg)


def test_fid_of_a_folder_against_itself_with_a_weights_file(tmp_path: Path, phantom32: Path, monkeypatch):
    """A plain state_dict given as xrv_weights is used (and named in the output); equal sets give FID 0."""
    monkeypatch.setenv("HOME", str(tmp_path))
    torch.manual_seed(3)
    model = xrv.models.DenseNet(weights=None)
    model.features.conv0.weight.data /= 1024.0  # keep random-init features O(1) for inputs in [-1024, 1024]
    weights = tmp_path / "xrv_state_dict.pt"
    torch.save(model.state_dict(), weights)
    folder = tmp_path / "images"
    folder.mkdir()
    test = pd.read_csv(phantom32 / "test.csv")
    for rel in test["image"]:
        shutil.copy(phantom32 / rel, folder / Path(rel).name)
    cfg = compose_evaluate(
        f"out_dir={tmp_path / 'out'}", "metrics=[fid,diversity]", f"real_dir={folder}", f"fake_dir={folder}",
        f"xrv_weights={weights}", "cache_dir=null", "image_size=32", "n_real=null",
        "diversity.n=4", "num_workers=0", "device=cpu", "progress=false",
    )  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = run_evaluation(cfg)
    finally:
        torch.set_num_threads(before)
    assert metrics["fid"]["xrv_weights"] == str(weights.resolve())
    assert abs(metrics["fid"]["value"]) < 1e-4  # float64 eigenvalues of 1024 x 1024 rank-7 covariances
    assert metrics["fid"]["real_features_cache"] == "cache disabled"
    assert metrics["diversity"]["generated"]["mean"] == pytest.approx(metrics["diversity"]["real"]["mean"])
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (
        saved["settings"]["xrv_weights"] == str(weights.resolve())
        and saved["samples"]["source"] == "fake_dir"
    )
