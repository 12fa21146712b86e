"""A small CNN that reads findings off phantom PA images: the judge of prompt adherence on phantom data.

It is trained on freshly rendered phantom images (``render_pa`` with known findings), never on the dataset a
generator was trained on, and the images go through the same steps as the phantom dataset's own (render at
``raw_size``, JPEG, shorter side resized with Lanczos, center crop), so what it learned transfers to real
phantom images and to generated ones. Findings are drawn independently (each present with
``positive_rate``) so every finding, and every side, has enough positives. The trained weights are cached in
a file keyed by the settings: the first evaluation trains it (about 1.5 minutes at 64 px on one CPU core),
later ones load it.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from cxr_ldm.data.preparation import resize_shorter_side
from cxr_ldm.metrics.auroc import auroc
from cxr_ldm.metrics.feature_cache import cache_key
from cxr_ldm.phantom.findings import sample_findings
from cxr_ldm.phantom.pa_view import render_pa
from cxr_ldm.phantom.schema import FINDING_COLUMNS
from cxr_ldm.utils.atomic import atomic_write

log = logging.getLogger(__name__)

CLASSIFIER_VERSION = 1


@dataclass(frozen=True)
class PhantomClassifierSettings:
    """Everything that determines the trained classifier (and so its cache file)."""

    image_size: int = 64
    raw_size: int | None = None  # side rendered at (the phantom tree's JPEG size); None = 2 x image_size
    n_train: int = 4000
    n_val: int = 500
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    positive_rate: float = 0.25
    jpeg_quality: int = 90
    seed: int = 0

    @property
    def render_size(self) -> int:
        return int(self.raw_size or 2 * self.image_size)


class PhantomFindingsCNN(nn.Module):
    """Conv blocks down to about a 4 x 4 map, flattened (left and right stay apart), one logit per finding."""

    def __init__(self, image_size: int, n_outputs: int = len(FINDING_COLUMNS)) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"the phantom classifier needs images of at least 8 px, got {image_size}")
        layers: list[nn.Module] = []
        channels = 1
        for k in range(int(math.log2(image_size // 4))):
            out = min(8 * 2**k, 64)
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True),
                nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True),
                nn.MaxPool2d(2),
            ]  # fmt: skip
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels * 16, n_outputs))
        self.image_size = image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images * 2.0 - 1.0))


def _balanced_findings(rng: np.random.Generator, positive_rate: float) -> dict[str, int]:
    return {c: int(rng.integers(1, 4)) if rng.random() < positive_rate else 0 for c in FINDING_COLUMNS}


def render_phantom_image(
    findings: dict[str, int], rng: np.random.Generator, settings: PhantomClassifierSettings
) -> np.ndarray:
    """One PA image (uint8 ``[S, S]``) as the phantom data look after ``prepare`` and the DataModule."""
    raw = render_pa(findings, rng, settings.render_size)
    buffer = io.BytesIO()
    Image.fromarray(raw, mode="L").save(buffer, format="JPEG", quality=settings.jpeg_quality)
    buffer.seek(0)
    with Image.open(buffer) as jpeg:
        resized = resize_shorter_side(jpeg, settings.image_size)
    tensor = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).unsqueeze(0)
    return TF.center_crop(tensor, [settings.image_size, settings.image_size])[0].numpy()


def render_labelled_set(
    n: int, seed: int, settings: PhantomClassifierSettings, balanced: bool, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 [n, 1, S, S], presence float [n, len(FINDING_COLUMNS)])``; ``balanced`` draws findings
    independently, otherwise with the phantom cohort's own frequencies (``sample_findings``)."""
    rng = np.random.default_rng([seed, 0xAD4E])
    images, labels = [], []
    for _ in tqdm(range(n), desc="rendering phantom images", unit="img", disable=not progress):
        findings = _balanced_findings(rng, settings.positive_rate) if balanced else sample_findings(rng)
        images.append(render_phantom_image(findings, rng, settings))
        labels.append([float(findings.get(c, 0) > 0) for c in FINDING_COLUMNS])
    return torch.from_numpy(np.stack(images)).unsqueeze(1), torch.tensor(labels, dtype=torch.float32)


class PhantomClassifier:
    """Trained :class:`PhantomFindingsCNN` plus its settings: ``predict(images) -> [B, 9]`` probabilities."""

    columns = tuple(FINDING_COLUMNS)

    def __init__(
        self, model: PhantomFindingsCNN, settings: PhantomClassifierSettings, info: dict[str, Any]
    ) -> None:
        self.model = model.eval()
        self.settings = settings
        self.info = info

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> PhantomClassifier:
        self.model.to(device)
        return self

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Probability of each finding for 0..1 (or uint8) images ``[B, 1, S, S]`` at the trained size."""
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        if images.shape[-1] != self.settings.image_size or images.shape[-2] != self.settings.image_size:
            raise ValueError(
                f"the phantom classifier was trained at {self.settings.image_size} px, got images of "
                f"{tuple(images.shape[-2:])}"
            )
        return torch.sigmoid(self.model(images.float().to(self.device))).cpu()


def train_phantom_classifier(settings: PhantomClassifierSettings, progress: bool = True) -> PhantomClassifier:
    """Render, train (AdamW, one-cycle) and validate on images with the cohort's own finding frequencies.

    Gradients are switched on explicitly: a training callback calls this from a validation hook, which
    Lightning runs under ``torch.inference_mode``.
    """
    with torch.inference_mode(False), torch.enable_grad():
        return _train(settings, progress)


def _train(settings: PhantomClassifierSettings, progress: bool) -> PhantomClassifier:
    images, labels = render_labelled_set(
        settings.n_train, settings.seed, settings, balanced=True, progress=progress
    )
    val_images, val_labels = render_labelled_set(settings.n_val, settings.seed + 1, settings, balanced=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = PhantomFindingsCNN(settings.image_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
        steps_per_epoch = max(1, settings.n_train // settings.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.lr, total_steps=settings.epochs * steps_per_epoch
        )
        generator = torch.Generator().manual_seed(settings.seed)
        model.train()
        bar = tqdm(total=settings.epochs * steps_per_epoch, desc="training phantom classifier", unit="step",
                   disable=not progress)  # fmt: skip
        for _ in range(settings.epochs):
            order = torch.randperm(settings.n_train, generator=generator)
            for step in range(steps_per_epoch):
                idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
                x = images[idx].float() / 255.0
                loss = F.binary_cross_entropy_with_logits(model(x), labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(val_images.float() / 255.0)).numpy()
    truth = val_labels.numpy()
    validation = {
        c: {
            "auroc": auroc(probs[:, j], truth[:, j], degenerate=float("nan")),  # NaN: as cached
            "accuracy": float(((probs[:, j] > 0.5) == (truth[:, j] > 0.5)).mean()),
            "n_positive": int(truth[:, j].sum()),
        }
        for j, c in enumerate(FINDING_COLUMNS)
    }
    info = {"settings": asdict(settings), "validation": validation, "final_loss": float(loss.item())}
    return PhantomClassifier(model, settings, info)


def classifier_cache_file(cache_dir: str | Path, settings: PhantomClassifierSettings) -> Path:
    key = cache_key({**asdict(settings), "version": CLASSIFIER_VERSION, "columns": list(FINDING_COLUMNS)})
    return Path(cache_dir).expanduser() / f"phantom_classifier_{settings.image_size}px_{key}.pt"


def load_or_train_phantom_classifier(
    settings: PhantomClassifierSettings, cache_dir: str | Path | None, progress: bool = True
) -> tuple[PhantomClassifier, bool]:
    """``(classifier, loaded_from_cache)``; trains and stores it on first use (``cache_dir=None``: none)."""
    path = classifier_cache_file(cache_dir, settings) if cache_dir else None
    if path is not None and path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = PhantomFindingsCNN(settings.image_size)
        model.load_state_dict(payload["state_dict"])
        log.info("loaded the phantom adherence classifier from %s", path)
        return PhantomClassifier(model, settings, payload["info"]), True
    log.info(
        "training the phantom adherence classifier (%d images at %d px)",
        settings.n_train,
        settings.image_size,
    )
    classifier = train_phantom_classifier(settings, progress=progress)
    if path is not None:
        payload = {"state_dict": classifier.model.state_dict(), "info": classifier.info}
        atomic_write(path, lambda f: torch.save(payload, f), "phantom classifier cache file", durable=False)
        classifier.info["cache_file"] = str(path)
    return classifier, False
