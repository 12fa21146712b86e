"""torchxrayvision DenseNet: weights files in both formats, the cache lookup, errors, and the input contract.

The weight files are written here with random weights in the real formats: the whole pickled model that
torchxrayvision downloads (checked by loading it through torchxrayvision's own code) and a plain state_dict.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchxrayvision as xrv

from cxr_ldm.metrics.features import (
    RANDOM_WEIGHTS_LABEL,
    XRVFeatureExtractor,
    XRVWeightsError,
    extract_features,
    load_xrv_densenet,
    xrv_cache_file,
    xrv_weights_url,
)

FILENAME = os.path.basename(xrv_weights_url("densenet121-res224-all"))


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xrv")
    torch.manual_seed(7)
    model = xrv.models.DenseNet(weights=None)
    for m in model.modules():  # non-trivial batch-norm statistics, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    downloaded = root / "xrv_cache" / FILENAME  # torchxrayvision's format: torch.save(whole model)
    downloaded.parent.mkdir()
    torch.save(model, downloaded)
    plain = root / "plain_state_dict.pt"
    torch.save(model.state_dict(), plain)
    wrapped = root / "wrapped.pt"  # a training checkpoint style: {"state_dict": {"module.<key>": ...}}
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, wrapped)
    return {"downloaded": downloaded, "plain": plain, "wrapped": wrapped}


def images(n: int = 2, h: int = 40, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed))


def test_the_downloaded_format_is_read_as_torchxrayvision_reads_it(weight_files):
    reference = xrv.models.DenseNet(
        weights="densenet121-res224-all", cache_dir=str(weight_files["downloaded"].parent)
    )
    model, label = load_xrv_densenet(weight_files["downloaded"])
    assert label == str(weight_files["downloaded"].resolve())
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # incl. op_threshs from torchxrayvision's table
    assert model.targets == reference.targets and not model.training
    x = XRVFeatureExtractor(model, label).preprocess(images())
    with torch.no_grad():
        torch.testing.assert_close(model.features2(x), reference.features2(x))
        torch.testing.assert_close(model(x), reference(x))  # calibrated pathology outputs


def test_plain_and_wrapped_state_dicts_give_the_same_features(weight_files):
    extractors = [XRVFeatureExtractor.load(weight_files[k]) for k in ("downloaded", "plain", "wrapped")]
    batch = images(3)
    feats = [e(batch) for e in extractors]
    assert feats[0].shape == (3, 1024)
    for f in feats[1:]:
        torch.testing.assert_close(f, feats[0])
    assert len({e.fingerprint for e in extractors}) == 1


def test_cache_lookup_missing_file_and_random_weights(weight_files, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".torchxrayvision" / "models_data" / FILENAME
    assert xrv_cache_file() == expected
    with pytest.raises(XRVWeightsError) as err:
        load_xrv_densenet()
    message = str(err.value)
    assert str(expected) in message and xrv_weights_url() in message and "allow_random_xrv" in message
    with pytest.raises(XRVWeightsError, match="does not exist"):
        load_xrv_densenet(tmp_path / "nope.pt")

    model, label = load_xrv_densenet(allow_random=True)
    assert label == RANDOM_WEIGHTS_LABEL
    again, _ = load_xrv_densenet(allow_random=True)
    assert (
        XRVFeatureExtractor(model, label).fingerprint == XRVFeatureExtractor(again, label).fingerprint
    )  # seeded

    expected.parent.mkdir(parents=True)
    shutil.copy(weight_files["downloaded"], expected)
    model, label = load_xrv_densenet()  # torchxrayvision's cache is used when it holds the file
    assert label == str(expected.resolve())
    with pytest.raises(ValueError, match="does not match|classifier.weight"):
        torch.save({"features.conv0.weight": torch.zeros(1)}, tmp_path / "bad.pt")
        load_xrv_densenet(tmp_path / "bad.pt")


@pytest.fixture(scope="module")
def extractor(weight_files) -> XRVFeatureExtractor:
    return XRVFeatureExtractor.load(weight_files["plain"])


def test_what_reaches_the_network_follows_the_torchxrayvision_contract(extractor: XRVFeatureExtractor):
    seen = []
    hook = extractor.model.features.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].clone())
    )
    try:
        batch = images(3, h=40, w=56)
        batch[0] = 0.0
        batch[1] = 1.0
        batch[2, :, :, :8] = 1.0  # outside the central 40 x 40 crop
        batch[2, :, :, 8:48] = 0.5
        batch[2, :, :, 48:] = 0.0
        extractor(batch)
        extractor.classify(batch)
    finally:
        hook.remove()
    assert len(seen) == 2
    x = seen[0]
    assert x.shape == (3, 1, 224, 224) and x.dtype == torch.float32
    assert float(x.min()) >= -1024.0 and float(x.max()) <= 1024.0
    assert torch.all(x[0] == -1024.0) and torch.all(x[1] == 1024.0)
    torch.testing.assert_close(
        x[2], torch.zeros_like(x[2]), atol=1e-3, rtol=0
    )  # 0.5 -> 0, border cropped away
    torch.testing.assert_close(seen[1], x)


def test_preprocessing_equals_torchxrayvision_normalize_and_resize(extractor: XRVFeatureExtractor):
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64)).astype(np.uint8)
    normalized = torch.from_numpy(xrv.datasets.normalize(pixels, 255))[None, None]
    resized = xrv.utils.fix_resolution(normalized, 224, extractor.model)
    ours = extractor.preprocess(torch.from_numpy(pixels)[None, None].float() / 255.0)
    torch.testing.assert_close(ours, resized, atol=1e-3, rtol=0)


def test_wrong_channels_or_range_are_refused(extractor: XRVFeatureExtractor):
    with pytest.raises(ValueError, match="single-channel"):
        extractor(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="0..1"):
        extractor(torch.rand(1, 1, 32, 32) * 255)


def test_extract_features_batches(extractor: XRVFeatureExtractor):
    batch = images(5, 32, 32)
    feats = extract_features(extractor, [batch[:2], batch[2:]], total=5, progress=False)
    assert feats.shape == (5, 1024) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, extractor(batch).numpy(), rtol=1e-4, atol=1e-5)
    assert (feats >= 0).all()  # features2 = ReLU then average pooling
