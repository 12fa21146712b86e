"""RAD-DINO features, offline: a tiny random ``Dinov2Model`` and a ``BitImageProcessor`` written by transformers'
own ``save_pretrained`` (the layout of ``microsoft/rad-dino``), loaded through the real code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, BitImageProcessor, Dinov2Config, Dinov2Model

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL
from cxr_ldm.metrics.raddino import (
    RADDINO_REPO,
    RadDinoFeatureExtractor,
    RadDinoWeightsError,
    find_raddino_folder,
)


def write_tiny_raddino(folder: Path, seed: int = 0, mean: float = 0.5307, size: int = 28) -> Path:
    """A DINOv2 (patch 14, 2 layers, width 32) and its processor, saved as transformers saves them."""
    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=14, image_size=size)  # fmt: skip
    Dinov2Model(config).eval().save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=[mean] * 3, image_std=[0.2583] * 3,
    ).save_pretrained(folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_raddino(tmp_path_factory.mktemp("rad-dino"))


def _images(n: int = 3, h: int = 40, w: int = 34, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, h, w, generator=g)


def test_folder_has_the_hub_layout(tiny_folder: Path):
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in tiny_folder.iterdir()}


def test_features_equal_transformers_on_pil_images(tiny_folder: Path):
    images = _images()
    extractor = RadDinoFeatureExtractor.load(tiny_folder)
    ours = extractor(images)
    assert ours.shape == (3, 32) and ours.dtype == torch.float32
    assert extractor.num_features == 32 and not extractor.is_random
    assert extractor.weights_label == str(tiny_folder.resolve())

    # independent: what a person does with transformers, on the 8-bit RGB images a PNG would hold
    model = AutoModel.from_pretrained(tiny_folder).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_folder)
    pixels = np.round(images[:, 0].numpy() * 255).astype(np.uint8)
    pil = [Image.fromarray(p).convert("RGB") for p in pixels]
    with torch.no_grad():
        out = model(**processor(images=pil, return_tensors="pt"))
    torch.testing.assert_close(ours, out.pooler_output, rtol=1e-5, atol=1e-5)
    # the pooled output is the CLS token of last_hidden_state, which Dinov2Model returns after its final
    # LayerNorm (the docstring's claim)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0])


def test_preprocessing_comes_from_the_folder(tmp_path: Path, tiny_folder: Path):
    other = write_tiny_raddino(tmp_path / "other", mean=0.1)  # same weights (seed), other normalisation
    a, b = RadDinoFeatureExtractor.load(tiny_folder), RadDinoFeatureExtractor.load(other)
    assert a.weights_sha256 == b.weights_sha256
    assert a.fingerprint != b.fingerprint  # cached features are keyed by the processor settings too
    assert b.processor_config["image_mean"] == [0.1, 0.1, 0.1]
    images = _images(2)
    assert not torch.allclose(a(images), b(images))
    saved = json.loads((tiny_folder / "preprocessor_config.json").read_text())
    assert a.protocol()["processor_config"]["image_mean"] == saved["image_mean"]


def test_found_in_the_hugging_face_cache(tmp_path: Path, tiny_folder: Path):
    """The hub cache layout (models--org--name/refs/main -> snapshots/<commit>/...), read offline."""
    repo_dir = tmp_path / "hub" / ("models--" + RADDINO_REPO.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in tiny_folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    assert find_raddino_folder(cache_dir=tmp_path / "hub") == snapshot
    extractor = RadDinoFeatureExtractor.load(cache_dir=tmp_path / "hub")
    torch.testing.assert_close(extractor(_images(1)), RadDinoFeatureExtractor.load(tiny_folder)(_images(1)))


def test_missing_folder_names_the_option_and_the_fix(tmp_path: Path):
    with pytest.raises(RadDinoWeightsError, match=r"raddino_weights='.*nowhere'.* is not a folder.*hf download microsoft/rad-dino"):
        RadDinoFeatureExtractor.load(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(RadDinoWeightsError, match="lacks preprocessor_config.json, model.safetensors or pytorch_model.bin"):
        RadDinoFeatureExtractor.load(tmp_path / "half")


def test_not_cached_and_random_refused(tmp_path: Path):
    with pytest.raises(RadDinoWeightsError, match=r"RAD-DINO weights not found: no raddino_weights=DIR given and "
                       r"microsoft/rad-dino is not in .*allow_random_raddino=true"):  # fmt: skip
        RadDinoFeatureExtractor.load(cache_dir=tmp_path / "empty_hub")


def test_random_weights_when_allowed_are_labelled(tmp_path: Path):
    extractor = RadDinoFeatureExtractor.load(cache_dir=tmp_path / "empty_hub", allow_random=True)
    assert extractor.is_random and extractor.weights_label == RANDOM_WEIGHTS_LABEL
    assert extractor.protocol()["weights"] == RANDOM_WEIGHTS_LABEL
    assert extractor.num_features == 768  # RAD-DINO's ViT-B/14 width
    again = RadDinoFeatureExtractor.load(cache_dir=tmp_path / "empty_hub", allow_random=True)
    assert extractor.fingerprint == again.fingerprint  # seeded: cached features stay valid
    feats = extractor(_images(1, 24, 24))
    assert feats.shape == (1, 768) and torch.isfinite(feats).all()


def test_input_contract(tiny_folder: Path):
    extractor = RadDinoFeatureExtractor.load(tiny_folder)
    with pytest.raises(ValueError, match=r"single-channel images \[B, 1, H, W\]"):
        extractor(torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError, match="divide 8-bit images by 255"):
        extractor(torch.rand(1, 1, 28, 28) * 255)
