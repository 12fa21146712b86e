"""FID (and KID, and prompt adherence on phantom data) of a small fixed sample during stage-2 training.

Logged as ``val/fid``, ``val/kid`` and ``val/adherence`` at the end of the first validation epoch and of every
``every_n_epochs``-th after it, so ``optimized_metric=val/fid optimized_mode=min`` can pick the checkpoint
(the values persist between computations, so a monitor always finds them). The sample is fixed: the first
``n_samples`` validation images and their report excerpts (the validation split's excerpts are
deterministic), generated with seeds ``seed + k``. Only the global-zero rank computes; the values are
broadcast so every rank logs the same numbers. A small sample gives a biased FID (larger than a 1,000-image
FID) but a consistent one, which is what choosing between epochs needs; report final figures with
``python -m cxr_ldm.evaluate``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from cxr_ldm.callbacks.schedule import validation_epoch_due
from cxr_ldm.metrics.adherence import PhantomJudge, expected_matrix, load_phantom_judge, score_against_labels
from cxr_ldm.metrics.features import XRVFeatureExtractor, extract_features
from cxr_ldm.metrics.fid import fid_from_features, kid_from_features
from cxr_ldm.metrics.sources import phantom_raw_dir, phantom_raw_size
from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.pipelines.settings import SamplingSettings

log = logging.getLogger(__name__)


class FIDCallback(Callback):
    """Every ``every_n_epochs`` validation epochs (from the first on): FID/KID of ``n_samples`` generated
    images against as many validation images, on torchxrayvision DenseNet features; on phantom data (or with
    ``adherence=True``) also the phantom classifier's mean accuracy on the findings the prompts name."""

    def __init__(
        self,
        every_n_epochs: int = 5,
        n_samples: int = 64,
        sampling: Mapping[str, Any] | None = None,
        batch_size: int = 16,
        xrv_weights: str | None = None,
        allow_random_xrv: bool = False,
        adherence: bool | str = "auto",
        cache_dir: str | None = None,
        phantom_classifier: dict[str, Any] | None = None,
        prefix: str = "val",
    ) -> None:
        if every_n_epochs < 1 or n_samples < 2:
            raise ValueError("every_n_epochs must be >= 1 and n_samples >= 2")
        if adherence not in ("auto", True, False):
            raise ValueError(f"adherence must be 'auto', true or false, got {adherence!r}")
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples
        self.sampling = SamplingSettings.from_config(sampling, prefix="fid.sampling")
        self.batch_size = batch_size
        self.xrv_weights = xrv_weights
        self.allow_random_xrv = allow_random_xrv
        self.adherence = adherence
        self.cache_dir = cache_dir
        self.phantom_classifier = dict(phantom_classifier or {})
        self.prefix = prefix
        self.extractor: XRVFeatureExtractor | None = None
        self._real: dict[str, Any] | None = None
        self._judge: PhantomJudge | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Load the feature network before fitting: missing weights fail before the first training step."""
        if stage == "fit" and self.extractor is None:
            self.extractor = XRVFeatureExtractor.load(self.xrv_weights, self.allow_random_xrv)
            if self.extractor.is_random:
                log.warning(
                    "%s/fid uses RANDOM torchxrayvision weights: plumbing only, not a quality measure",
                    self.prefix,
                )

    def _due(self, trainer: Trainer) -> bool:
        # the first validation epoch and every n epochs after it, on the epochs Lightning validates
        return validation_epoch_due(trainer, self.every_n_epochs, from_first=True)

    # ------------------------------------------------------------------ the fixed sample
    def _reference(self, trainer: Trainer, device: torch.device) -> dict[str, Any]:
        """First ``n_samples`` validation images (their features) and texts; computed once per fit."""
        if self._real is None:
            loader = trainer.val_dataloaders
            if isinstance(loader, (list, tuple)):
                loader = loader[0]
            if loader is None:
                raise RuntimeError("FIDCallback needs a validation dataloader")
            images, texts = [], []
            for batch in loader:
                images.append(batch["image"][:, :1].float().cpu())
                texts += list(batch["text"])
                if len(texts) >= self.n_samples:
                    break
            images_t = torch.cat(images)[: self.n_samples]
            if len(images_t) < 2:
                raise RuntimeError(f"FIDCallback needs at least 2 validation images, got {len(images_t)}")
            self._real = {
                "features": self._extract(images_t, device),
                "texts": texts[: len(images_t)],
                "size": int(images_t.shape[-1]),
            }
        return self._real

    def _extract(self, images: torch.Tensor, device: torch.device) -> np.ndarray:
        assert self.extractor is not None
        self.extractor.to(device)
        batches = (images[i : i + self.batch_size] for i in range(0, len(images), self.batch_size))
        return extract_features(self.extractor, batches, total=len(images), progress=False)

    def _phantom_judge(self, trainer: Trainer, image_size: int) -> PhantomJudge | None:
        if self.adherence is False:
            return None
        if self._judge is None:
            data_dir = (
                getattr(trainer.datamodule, "data_dir", None) if trainer.datamodule is not None else None
            )
            if self.adherence == "auto" and (data_dir is None or phantom_raw_dir(data_dir) is None):
                self.adherence = False  # not phantom data: nothing to check prompts against
                return None
            raw_dir = phantom_raw_dir(data_dir) if data_dir is not None else None
            raw_size = phantom_raw_size(raw_dir) if raw_dir is not None else None  # render as the data were
            self._judge, _ = load_phantom_judge(image_size, self.phantom_classifier, raw_size, self.cache_dir,
                                                progress=False)  # fmt: skip
        return self._judge

    # ------------------------------------------------------------------ the measurement
    def compute(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """The metrics of the current weights (called on the global-zero rank)."""
        device = pl_module.device
        real = self._reference(trainer, device)
        seeds = [self.sampling.seed + k for k in range(len(real["texts"]))]
        pipe = CXRLDMPipeline.from_module(pl_module)
        images = pipe(real["texts"], seeds=seeds, progress=False, **self.sampling.call_kwargs())
        fake = self._extract(images, device)
        values = {
            "fid": fid_from_features(real["features"], fake),
            "kid": kid_from_features(real["features"], fake, subsets=1, subset_size=len(fake)).mean,
        }
        judge = self._phantom_judge(trainer, real["size"])
        if judge is not None:
            expected = expected_matrix(judge, real["texts"])
            rows = np.flatnonzero(~np.isnan(expected).all(axis=1))
            if len(rows):
                scores = judge.scores(images[torch.as_tensor(rows)]).numpy()
                accuracy = score_against_labels(judge.concepts, scores, expected[rows])["mean_accuracy"]
                if accuracy is not None:
                    values["adherence"] = float(accuracy)
        return values

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._due(trainer):
            return
        values: dict[str, float] | None = None
        if trainer.is_global_zero and torch.isfinite(getattr(pl_module, "scale_factor", torch.tensor(1.0))):
            values = self.compute(trainer, pl_module)
        values = trainer.strategy.broadcast(values, src=0)  # a collective: every rank gets here
        for name, value in (values or {}).items():
            pl_module.log(f"{self.prefix}/{name}", float(value), on_epoch=True, prog_bar=name == "fid")
