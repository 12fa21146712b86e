"""LPIPS weights come from the torch cache or a local file, never the network; missing ones fail early."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import lpips
import pytest
import torch

from cxr_ldm.models.autoencoder import AutoencoderKLModule
from cxr_ldm.models.perceptual import (
    PerceptualWeightsNotFoundError,
    backbone_filename,
    build_perceptual_loss,
    cached_backbone_path,
)

pytestmark = pytest.mark.usefixtures("offline_torch_home")


def _assert_backbone_equals(loss: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """lpips splits torchvision's ``features.<i>`` into ``slice<k>.<i>``: compare every backbone tensor."""
    backbone = loss.perceptual_function.net
    compared = 0
    for name, tensor in backbone.state_dict().items():
        _, index, leaf = name.split(".", 2)  # slice1.0.weight -> features.0.weight
        torch.testing.assert_close(tensor, state_dict[f"features.{index}.{leaf}"], rtol=0, atol=0)
        compared += 1
    assert compared == len(state_dict) - 2  # all but the classifier's conv weight and bias


def test_hub_dir_follows_torch_home(offline_torch_home: Path) -> None:
    assert Path(torch.hub.get_dir()) == offline_torch_home / "hub"
    assert (
        cached_backbone_path("squeeze")
        == offline_torch_home / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    )


def test_backbone_file_names() -> None:
    assert backbone_filename("squeeze") == "squeezenet1_1-b8a52dc0.pth"
    assert backbone_filename("alex") == "alexnet-owt-7be5be79.pth"
    assert backbone_filename("vgg") == "vgg16-397923af.pth"
    with pytest.raises(ValueError, match="squeeze"):
        backbone_filename("resnet")


def test_missing_weights_error_names_file_directory_and_ways_out(offline_torch_home: Path) -> None:
    with pytest.raises(PerceptualWeightsNotFoundError) as info:
        build_perceptual_loss("squeeze")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "squeezenet1_1-b8a52dc0.pth" in message
    assert str(offline_torch_home / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth" in message
    assert "model.perceptual_weight=0" in message
    assert "model.perceptual_weights_path" in message


def test_missing_explicit_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "squeeze.pth"
    with pytest.raises(PerceptualWeightsNotFoundError, match="nowhere/squeeze.pth"):
        build_perceptual_loss("squeeze", weights_path=missing)


def test_loads_backbone_from_torch_cache_and_heads_from_lpips_wheel(
    cached_squeezenet: Path, squeezenet_weights: dict[str, torch.Tensor]
) -> None:
    loss = build_perceptual_loss("squeeze")
    _assert_backbone_equals(loss, squeezenet_weights)
    heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "squeeze.pth"
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    assert len(heads) == 7  # seven linear heads for squeezenet's seven stages
    for name, tensor in heads.items():
        torch.testing.assert_close(loss.perceptual_function.state_dict()[name], tensor, rtol=0, atol=0)
    assert not any(p.requires_grad for p in loss.parameters())
    assert not loss.training


def test_loads_an_explicit_file_without_touching_the_cache(
    tmp_path: Path, offline_torch_home: Path, squeezenet_weights: dict[str, torch.Tensor]
) -> None:
    weights_file = tmp_path / "my_weights" / "any-name.pth"
    weights_file.parent.mkdir()
    torch.save(squeezenet_weights, weights_file)
    loss = build_perceptual_loss("squeeze", weights_path=str(weights_file))
    _assert_backbone_equals(loss, squeezenet_weights)
    # the hub dir is restored and still follows $TORCH_HOME; nothing was written into the cache
    assert os.environ["TORCH_HOME"] == str(offline_torch_home)
    assert Path(torch.hub.get_dir()) == offline_torch_home / "hub"
    assert list(offline_torch_home.iterdir()) == []


def test_explicit_file_restores_a_hub_dir_set_by_the_user(
    tmp_path: Path, squeezenet_weights: dict[str, torch.Tensor]
) -> None:
    weights_file = tmp_path / "backbone.pth"
    torch.save(squeezenet_weights, weights_file)
    user_hub = tmp_path / "user_hub"
    torch.hub.set_dir(str(user_hub))  # undone by the offline_torch_home fixture
    loss = build_perceptual_loss("squeeze", weights_path=weights_file)
    _assert_backbone_equals(loss, squeezenet_weights)
    assert torch.hub.get_dir() == str(user_hub)


def test_loss_is_zero_for_identical_images_and_positive_otherwise(cached_squeezenet: Path) -> None:
    loss = build_perceptual_loss("squeeze")
    torch.manual_seed(0)
    images = torch.rand(2, 1, 32, 32)
    assert loss(images, images).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(images, torch.rand(2, 1, 32, 32)).item() > 0


def test_fit_fails_before_the_first_step_when_weights_are_missing(
    module_kwargs: dict, make_trainer, blob_loader
) -> None:
    module = AutoencoderKLModule(**{**module_kwargs, "perceptual_weight": 0.002})
    steps: list[int] = []

    class CountBatches(L.Callback):
        def on_train_batch_start(self, *args: object) -> None:
            steps.append(1)

    trainer = make_trainer(max_steps=2, callbacks=[CountBatches()])
    with pytest.raises(PerceptualWeightsNotFoundError, match="squeezenet1_1-b8a52dc0.pth"):
        trainer.fit(module, blob_loader(n=4))
    assert steps == []


def test_zero_perceptual_weight_builds_no_network_and_needs_no_file(
    module_kwargs: dict, make_trainer, blob_loader, offline_torch_home: Path
) -> None:
    module = AutoencoderKLModule(**module_kwargs)  # perceptual_weight=0
    trainer = make_trainer(max_steps=1)
    trainer.fit(module, blob_loader(n=2))
    assert module._perceptual is None
    assert trainer.global_step == 1
    assert list(offline_torch_home.iterdir()) == []
