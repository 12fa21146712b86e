"""LPIPS perceptual loss (MONAI ``PerceptualLoss``) built from local backbone weights only.

MONAI's ``PerceptualLoss`` for ``alex``/``vgg``/``squeeze`` goes through the ``lpips`` package. Its linear
heads ship in the ``lpips`` wheel, but the torchvision backbone is built with ImageNet weights, which
torchvision loads from ``torch.hub.get_dir()/checkpoints/<file>`` and downloads when that file is absent.
Nothing can be downloaded in our setting, so we check for the file first and fail with instructions instead of
a network error half-way through setup.

Two ways to provide the file:

* the torch cache: put it at ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()`` is
  ``$TORCH_HOME/hub``);
* ``weights_path``: any local file. While the loss is built, torch's hub directory is pointed at a temporary
  folder holding a link to that file under torchvision's expected name, then restored exactly; the user's
  cache is never written to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from monai.losses import PerceptualLoss
from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

# torchvision weights that lpips loads for each MONAI network_type (lpips/pretrained_networks.py).
_BACKBONE_WEIGHTS = {
    "squeeze": SqueezeNet1_1_Weights.IMAGENET1K_V1,
    "alex": AlexNet_Weights.IMAGENET1K_V1,
    "vgg": VGG16_Weights.IMAGENET1K_V1,
}


class PerceptualWeightsNotFoundError(FileNotFoundError):
    """The torchvision backbone file of the LPIPS loss is not on disk (and cannot be downloaded)."""


def backbone_url(network_type: str) -> str:
    """Download URL of the torchvision backbone that LPIPS uses for ``network_type``."""
    try:
        return _BACKBONE_WEIGHTS[network_type.lower()].url
    except KeyError:
        raise ValueError(
            f"perceptual network_type must be one of {sorted(_BACKBONE_WEIGHTS)}, got {network_type!r}"
        ) from None


def backbone_filename(network_type: str) -> str:
    """File name torchvision expects in the hub cache, e.g. ``squeezenet1_1-b8a52dc0.pth``."""
    return backbone_url(network_type).rsplit("/", 1)[-1]


def cached_backbone_path(network_type: str) -> Path:
    """Where torchvision looks for the backbone (follows ``$TORCH_HOME`` and ``torch.hub.set_dir``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_filename(network_type)


def resolve_backbone_weights(
    network_type: str = "squeeze", weights_path: str | os.PathLike | None = None
) -> Path:
    """Return the backbone file that will be loaded, or raise :class:`PerceptualWeightsNotFoundError`."""
    filename = backbone_filename(network_type)
    cache_path = cached_backbone_path(network_type)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if path.is_file():
            return path
        where = f"the file given as model.perceptual_weights_path={str(weights_path)!r} does not exist"
    else:
        path = cache_path
        if path.is_file():
            return path
        where = f"{path} does not exist"
    raise PerceptualWeightsNotFoundError(
        f"LPIPS perceptual loss (network_type={network_type!r}) needs the torchvision backbone weights "
        f"'{filename}', but {where}, and nothing is downloaded. Either put the file into "
        f"{cache_path.parent} (download it elsewhere from {backbone_url(network_type)}; the directory is "
        f"$TORCH_HOME/hub/checkpoints) or pass its location as model.perceptual_weights_path=<file>, "
        "or train without the perceptual term: model.perceptual_weight=0 "
        "(then no perceptual network is built)."
    )


@contextlib.contextmanager
def _hub_dir(path: Path) -> Iterator[None]:
    """Point ``torch.hub.get_dir()`` at ``path`` and restore the previous behaviour exactly afterwards.

    When nobody called ``torch.hub.set_dir``, the hub dir follows ``$TORCH_HOME``; then only the environment
    variable is swapped, so that it keeps following ``$TORCH_HOME`` afterwards. Otherwise ``set_dir`` is
    swapped. Not thread-safe (both are process-global), which is fine for model construction.
    """
    torch_home = path.parent
    previous_env = os.environ.get("TORCH_HOME")
    previous_dir = torch.hub.get_dir()
    os.environ["TORCH_HOME"] = str(torch_home)
    follows_env = Path(torch.hub.get_dir()) == path
    if not follows_env:
        torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous_env
        if not follows_env:
            torch.hub.set_dir(previous_dir)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.symlink_to(source.resolve())
    except OSError:  # e.g. file systems or platforms without symlinks
        shutil.copyfile(source, target)


def _build(network_type: str) -> PerceptualLoss:
    with warnings.catch_warnings():
        # lpips calls torchvision with the deprecated `pretrained=True`: not actionable for our users
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        return PerceptualLoss(spatial_dims=2, network_type=network_type, is_fake_3d=False)


def build_perceptual_loss(
    network_type: str = "squeeze", weights_path: str | os.PathLike | None = None
) -> PerceptualLoss:
    """MONAI ``PerceptualLoss`` (LPIPS) with local backbone weights; frozen and in eval mode.

    Args:
        network_type: ``"squeeze"`` (reference), ``"alex"`` or ``"vgg"``.
        weights_path: a local torchvision state-dict file of that backbone; ``None`` uses the torch cache.

    Raises:
        PerceptualWeightsNotFoundError: before anything is built, when the backbone file is missing.
    """
    network_type = network_type.lower()
    source = resolve_backbone_weights(network_type, weights_path)
    if weights_path is None:
        loss = _build(network_type)
    else:
        with tempfile.TemporaryDirectory(prefix="cxr_ldm_lpips_") as tmp:
            hub = Path(tmp) / "hub"
            _link_or_copy(source, hub / "checkpoints" / backbone_filename(network_type))
            with _hub_dir(hub):
                loss = _build(network_type)
    loss.eval()
    loss.requires_grad_(False)
    return loss
