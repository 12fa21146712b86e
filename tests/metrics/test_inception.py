"""The optional Inception-v3 FID, offline: a random-weight file in torch-fidelity's download format.

torch-fidelity downloads a plain ``dict`` of float32 tensors (its ``util_convert_inception_weights.py``):
conv weights, BatchNorm weight/bias/running_mean/running_var (no ``num_batches_tracked``) and ``fc``. The
fixture writes such a file with random values under a temporary ``TORCH_HOME`` and every test loads it
through the real code; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config, run_module
from PIL import Image
from torch import nn

pytest.importorskip("torch_fidelity")

from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: E402
from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: E402

from cxr_ldm.evaluation.runner import Evaluation, EvaluationError  # noqa: E402
from cxr_ldm.metrics.fid import fid_from_features  # noqa: E402
from cxr_ldm.metrics.inception import (  # noqa: E402
    INCEPTION_FILE,
    INCEPTION_PROTOCOL,
    INCEPTION_URL,
    InceptionFeatureExtractor,
    InceptionWeightsError,
)

SIZE = 32  # image side; the network resizes to 299 px whatever comes in


class _LayersOnly(FeatureExtractorInceptionV3):
    """torch-fidelity's network with its weights load skipped: only for the parameter names and shapes."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


def random_inception_state_dict(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in the download format; He-scaled convs so the 2048-d features stay O(1)."""
    empty = folder / "empty.pth"
    torch.save({}, empty)
    layers = _LayersOnly("layers", ["2048"], feature_extractor_weights_path=str(empty))
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, like in layers.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue  # absent from torch-fidelity's file
        if name.endswith("conv.weight"):
            value = torch.randn(like.shape, generator=g) * (2.0 / like[0].numel()) ** 0.5
        elif name.endswith(("bn.weight", "bn.running_var")):
            value = torch.rand(like.shape, generator=g) + 0.5
        elif name.endswith(("bn.bias", "bn.running_mean")):
            value = torch.randn(like.shape, generator=g) * 0.1
        else:  # fc: unused by the 2048-d features, present in the file
            value = torch.randn(like.shape, generator=g) * 0.01
        state[name] = value.float().contiguous()
    return state


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(TORCH_HOME, state dict)``: the random file where torch-fidelity's download would land."""
    home = tmp_path_factory.mktemp("torch_home")
    state = random_inception_state_dict(home)
    assert len(state) == 94 * 5 + 2  # 94 conv+BatchNorm blocks (1 + 4 tensors each), fc weight and bias
    target = home / "hub" / "checkpoints" / INCEPTION_FILE
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    return home, state


@pytest.fixture()
def hub_cache(torch_home, monkeypatch) -> tuple[Path, dict[str, torch.Tensor]]:
    """TORCH_HOME pointing at the fixture's cache; returns ``(weights file, state dict)``."""
    home, state = torch_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()) == home / "hub"  # nobody called torch.hub.set_dir in this process
    return home / "hub" / "checkpoints" / INCEPTION_FILE, state


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """``[n, 1, SIZE, SIZE]`` in 0..1 on the 8-bit grid: blurred noise, distinct per image."""
    g = torch.Generator().manual_seed(seed)
    noise = F.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=(SIZE, SIZE), mode="bilinear")
    return (noise * 255).round() / 255


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for k, image in enumerate(images):
        pixels = (image[0] * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels, mode="L").save(folder / f"img_{k:02d}.png")
    return folder


def test_loads_the_hub_cache_file_and_feeds_the_network_uint8_rgb_at_299(hub_cache):
    path, state = hub_cache
    extractor = InceptionFeatureExtractor()  # no file given: torch-fidelity's download location
    loaded = extractor.net.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in state.items())
    assert torch.equal(
        extractor.net.Mixed_7c.branch_pool.bn.running_var, state["Mixed_7c.branch_pool.bn.running_var"]
    )
    assert extractor.weights_label == str(path.resolve())
    assert extractor.fingerprint == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert not extractor.is_published  # random values: not the published file, whatever its name

    seen: dict[str, torch.Tensor] = {}
    extractor.net.register_forward_pre_hook(lambda _m, args: seen.setdefault("net", args[0].clone()))
    first = extractor.net.Conv2d_1a_3x3
    first.register_forward_pre_hook(lambda _m, args: seen.setdefault("first", args[0].clone()))
    images = smooth_images(3, seed=1)
    images[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.6 / 255, 254.6 / 255])  # exact ends and rounding
    features = extractor(images)

    assert features.shape == (3, 2048) and features.dtype == torch.float32 and torch.isfinite(features).all()
    assert (features[0] - features[1]).abs().max() > 1e-3  # different images, different features
    fed = seen["net"]
    expected_u8 = (images * 255).round().to(torch.uint8)
    assert fed.dtype == torch.uint8 and fed.shape == (3, 3, SIZE, SIZE)
    assert all(torch.equal(fed[:, c : c + 1], expected_u8) for c in range(3))
    assert fed[0, 0, 0, :4].tolist() == [0, 255, 1, 255]
    first_input = seen["first"]
    resized = F.interpolate(
        fed.float(), size=(299, 299), mode="bilinear", align_corners=False, antialias=True
    )
    assert first_input.shape == (3, 3, 299, 299)
    assert torch.allclose(first_input, (resized - 128) / 128, atol=1e-5)

    # exactly the network torchmetrics' FID builds from the same file, fed the same uint8 RGB images
    reference = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path))
    assert torch.allclose(reference.inception(fed), features, rtol=1e-5, atol=1e-5)


def test_fid_of_a_set_against_itself_is_zero_and_positive_against_another(hub_cache):
    path, _ = hub_cache
    extractor = InceptionFeatureExtractor(path)  # the same file given explicitly
    a = extractor(smooth_images(4, seed=2)).numpy()
    b = extractor(smooth_images(4, seed=3)).numpy()
    scale = float(np.trace(np.cov(a, rowvar=False)))
    assert scale > 1e-3  # the random network does not collapse the images to one point
    assert abs(fid_from_features(a, a)) < 1e-4 * scale + 1e-6
    assert fid_from_features(a, b) > 0.1 * scale


def test_missing_or_foreign_weights_name_the_file_and_the_url(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    expected = tmp_path / "empty_home" / "hub" / "checkpoints" / INCEPTION_FILE
    with pytest.raises(InceptionWeightsError) as missing:
        InceptionFeatureExtractor()
    assert str(expected) in str(missing.value) and INCEPTION_URL in str(missing.value)
    assert isinstance(missing.value, FileNotFoundError)

    given = tmp_path / "elsewhere.pth"
    with pytest.raises(InceptionWeightsError, match="elsewhere.pth") as not_there:
        InceptionFeatureExtractor(given)
    assert INCEPTION_URL in str(not_there.value) and "fid.inception_weights=FILE" in str(not_there.value)

    pickled_module = tmp_path / "module.pth"  # refused before torch-fidelity unpickles it
    torch.save(nn.Linear(2, 2), pickled_module)
    with pytest.raises(InceptionWeightsError, match="module.pth is not a torch-fidelity Inception weights"):
        InceptionFeatureExtractor(pickled_module)
    wrong_keys = tmp_path / "wrong_keys.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, wrong_keys)
    with pytest.raises(InceptionWeightsError, match="wrong_keys.pth is not torch-fidelity's Inception-v3"):
        InceptionFeatureExtractor(wrong_keys)


def test_evaluation_refuses_a_missing_inception_file_before_any_work(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    images = write_pngs(smooth_images(3, seed=4), tmp_path / "images")
    out = tmp_path / "out"
    cfg = compose_config("evaluate", [f"out_dir={out}", "metrics=[fid]", f"real_dir={images}", f"fake_dir={images}",
                                      "allow_random_xrv=true", "fid.inception=true", "device=cpu", "progress=false"],
                         inference=True)  # fmt: skip
    with pytest.raises(EvaluationError, match=INCEPTION_FILE) as err:
        Evaluation(cfg)
    assert INCEPTION_URL in str(err.value) and not out.exists()


def test_evaluate_cli_writes_the_inception_fid(tmp_path: Path, torch_home):
    home, state = torch_home
    weights = home / "hub" / "checkpoints" / INCEPTION_FILE
    real = smooth_images(4, seed=5)
    folder = write_pngs(real, tmp_path / "images")
    out, cache = tmp_path / "eval", tmp_path / "cache"
    result = run_module(
        "cxr_ldm.evaluate", f"out_dir={out}", "metrics=[fid]", "fid.inception=true",
        f"fid.inception_weights={weights}", "allow_random_xrv=true", f"fake_dir={folder}", f"real_dir={folder}",
        f"cache_dir={cache}", "n_real=null", "batch_size=4", "num_workers=0", "device=cpu", "progress=false",
        cwd=tmp_path, timeout=300,
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(tmp_path),
             "TORCH_HOME": str(tmp_path / "no_torch_home")},  # the file comes from the option, not the cache
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    inception = json.loads((out / "metrics.json").read_text())["fid"]["inception"]
    assert inception["weights"] == str(weights.resolve()) and inception["published_weights"] is False
    assert inception["real_features_cache"] == "miss (stored)"
    assert abs(inception["value"]) < 1e-3  # the same four images on both sides
    assert "Inception FID" in result.stdout

    # the cached real features are this file's Inception features of these images, under this protocol
    entries = [json.loads(p.read_text()) for p in (cache / "features").glob("real_features_*.json")]
    (parts,) = [e for e in entries if e["protocol"] == INCEPTION_PROTOCOL]
    assert parts["weights"] == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    (npz,) = [
        p for p in (cache / "features").glob("real_features_*.npz")
        if json.loads(p.with_suffix(".json").read_text())["protocol"] == INCEPTION_PROTOCOL
    ]  # fmt: skip
    with np.load(npz) as data:
        cached = data["features"]
    assert cached.shape == (4, 2048)
    extractor = InceptionFeatureExtractor(weights)
    assert np.allclose(cached, extractor(real).numpy(), rtol=1e-4, atol=1e-5)
