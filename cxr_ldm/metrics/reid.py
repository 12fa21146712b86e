"""Patient re-identification: could a generated image be linked to a training patient? (CheXGenBench's privacy score)

The judge is the Siamese network of Packhäuser et al. (2022, "Deep learning-based patient re-identification is
able to exploit the biometric nature of medical chest X-ray data"), as CheXGenBench uses it
(``metrics/privacy_metrics.py``, ``SiameseNetwork(network="ResNet-50", in_channels=3, n_features=128)``):
both images go through one torchvision ResNet-50 whose ``fc`` maps 2048 -> 128, a sigmoid, then
``fc_end`` (128 -> 1) of the absolute difference; the probability that both show the same patient is the
sigmoid of that logit. CheXGenBench's released weights, ``ResNet-50_epoch11_data_handling_RPN.pth``
(Hugging Face ``raman07/Patient_ReIdentification_MIMIC``), are a plain ``state_dict`` of that module
(``model.*`` = the ResNet, ``fc_end.*``), read here with ``weights_only=True``.

Input, as CheXGenBench's transform: RGB, ``Resize((224, 224))`` (no crop), ``ToTensor`` (0..1, no
normalisation). Our 0..1 grey images are rounded to 8 bits (what the PNG holds), resized bilinearly with
antialiasing and repeated to 3 channels.

Because the two branches share weights, each image is embedded once and every (generated, training) pair
costs one 128-d ``|a - b|`` and a dot product: the highest probability over thousands of training images is
searched in chunks. The score reported per generated image is that highest probability (the most similar
training patient); the summary gives mean, max and the share above 0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL, MeasurementNetwork, weights_fingerprint
from cxr_ldm.metrics.memorization import distribution
from cxr_ldm.utils.hashing import file_sha256

log = logging.getLogger(__name__)

REID_REPO = "raman07/Patient_ReIdentification_MIMIC"
REID_FILE = "ResNet-50_epoch11_data_handling_RPN.pth"
REID_RESOLUTION = 224
REID_FEATURES = 128
REID_PROTOCOL = "packhaeuser-siamese-resnet50-128-uint8-round-resize224-bilinear-aa-rgb-repeat-v1"


class ReIDWeightsError(FileNotFoundError):
    """The re-identification weights file is missing or wrong (or random weights were not allowed)."""


class SiameseResNet50(nn.Module):
    """Packhäuser et al.'s patient-verification network, with CheXGenBench's attribute names (state dict keys)."""

    def __init__(self, n_features: int = REID_FEATURES) -> None:
        super().__init__()
        from torchvision.models import resnet50

        self.model = resnet50(weights=None)
        self.model.fc = nn.Linear(2048, n_features)
        self.fc_end = nn.Linear(n_features, 1)

    def forward_once(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))

    def forward(self, input1: torch.Tensor, input2: torch.Tensor) -> torch.Tensor:
        """The logit that both images show the same patient (CheXGenBench applies the sigmoid after)."""
        return self.fc_end(torch.abs(self.forward_once(input1) - self.forward_once(input2)))


def _fix_text() -> str:
    return (
        f"Download {REID_FILE} from the Hugging Face repo {REID_REPO} (CheXGenBench's re-identification "
        f"model; `hf download {REID_REPO} {REID_FILE}` fills the Hugging Face cache) and pass "
        "reid_weights=/path/to/file. Nothing is downloaded automatically. For plumbing tests only, "
        "allow_random_reid=true uses random weights (the scores are then meaningless)."
    )


def reid_cache_file(cache_dir: str | Path | None = None) -> Path | None:
    """The weights file in the Hugging Face cache, if it is there (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(REID_REPO, REID_FILE, cache_dir=str(cache_dir) if cache_dir else None)
    return Path(found) if isinstance(found, str) else None


def read_reid_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict (also inside ``{"state_dict": ...}``, with or without DDP's ``module.``)."""
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled modules or foreign files: refuse rather than unpickle
        raise ReIDWeightsError(
            f"{path} is not a state dict file ({type(err).__name__}: {str(err)[:200]}); expected {REID_FILE}"
        ) from err
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ReIDWeightsError(f"{path} does not hold a state dict of tensors; expected {REID_FILE}")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


class SiameseReID(MeasurementNetwork):
    """Embeds 0..1 ``[B, 1, H, W]`` images once; scores pairs from the embeddings."""

    def __init__(self, network: SiameseResNet50, weights_label: str, weights_sha256: str) -> None:
        super().__init__()
        self.network = network.eval()
        self.weights_label = weights_label
        self.weights_sha256 = weights_sha256

    @classmethod
    def load(
        cls, weights_file: str | Path | None = None, allow_random: bool = False, cache_dir: str | Path | None = None
    ) -> SiameseReID:
        """``weights_file``, else the Hugging Face cache's copy of :data:`REID_FILE`; else random weights if
        ``allow_random`` (seeded, labelled), else :class:`ReIDWeightsError` naming the file and the fix."""
        if weights_file:
            path = Path(weights_file).expanduser()
            if not path.is_file():
                raise ReIDWeightsError(f"reid_weights={str(path)!r} does not exist. " + _fix_text())
        else:
            path = reid_cache_file(cache_dir)
            if path is None:
                if not allow_random:
                    raise ReIDWeightsError(
                        f"patient re-identification weights not found: no reid_weights=FILE given and {REID_FILE} "
                        f"is not in the Hugging Face cache. " + _fix_text()
                    )
                log.warning("re-identification network with RANDOM weights: scores are for plumbing tests only")
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    network = SiameseResNet50()
                return cls(network, RANDOM_WEIGHTS_LABEL, weights_fingerprint(network))
        network = SiameseResNet50()
        try:
            network.load_state_dict(read_reid_state_dict(path))
        except RuntimeError as err:
            raise ReIDWeightsError(
                f"{path} does not match the Siamese ResNet-50 (128 features) of CheXGenBench: {str(err)[:300]}"
            ) from err
        return cls(network, str(path.resolve()), file_sha256(path))

    @property
    def fingerprint(self) -> str:
        """Key part of cached embeddings (training images are embedded once per weights file)."""
        return f"sha256:{self.weights_sha256}"

    def protocol(self) -> dict[str, Any]:
        return {
            "model": "Siamese ResNet-50 patient verification (Packhäuser et al. 2022), CheXGenBench's weights "
            f"{REID_REPO}/{REID_FILE}",
            "score": "per generated image, the highest same-patient probability sigmoid(fc_end(|f(a) - f(b)|)) "
            "over the training images",
            "preprocessing": f"8-bit (round(x*255)), Resize(({REID_RESOLUTION}, {REID_RESOLUTION})) bilinear "
            "antialiased, grey repeated to RGB, 0..1 (no normalisation), as CheXGenBench",
            "weights": self.weights_label,
            "weights_sha256": self.weights_sha256,
            "protocol": REID_PROTOCOL,
        }

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected single-channel images [B, 1, H, W] in 0..1, got {tuple(images.shape)}")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(f"expected intensities in 0..1, got [{lo:.3g}, {hi:.3g}] (divide 8-bit images by 255)")
        x = (images.float().clamp(0, 1) * 255).round() / 255
        if tuple(x.shape[-2:]) != (REID_RESOLUTION, REID_RESOLUTION):
            x = F.interpolate(x, size=(REID_RESOLUTION, REID_RESOLUTION), mode="bilinear", align_corners=False,
                              antialias=True)  # fmt: skip
        return x.repeat(1, 3, 1, 1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 128]`` branch embeddings (after the sigmoid): what every pair score is computed from."""
        return self.network.forward_once(self.preprocess(images.to(self.device))).float()

    @torch.no_grad()
    def pair_probability(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Same-patient probability of embedding pairs ``a[i]``, ``b[i]`` (``[N]``)."""
        fc = self.network.fc_end
        return torch.sigmoid(fc(torch.abs(a.to(fc.weight) - b.to(fc.weight)))).squeeze(1)

    @torch.no_grad()
    def max_probability(
        self, queries: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray, chunk: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probability, index)``: for each query embedding, the highest same-patient probability over the
        reference embeddings and which reference gives it (``[Q]`` each). The sigmoid is monotone, so the
        maximum is searched on logits; pairs are formed ``chunk x chunk`` at a time."""
        fc = self.network.fc_end
        q_all = torch.as_tensor(np.asarray(queries) if isinstance(queries, np.ndarray) else queries).to(fc.weight)
        r_all = torch.as_tensor(np.asarray(reference) if isinstance(reference, np.ndarray) else reference).to(fc.weight)
        if r_all.shape[0] == 0:
            raise ValueError("no reference (training) embeddings to compare with")
        w, bias = fc.weight[0], fc.bias[0]
        best = torch.full((q_all.shape[0],), -torch.inf, device=w.device)
        arg = torch.zeros(q_all.shape[0], dtype=torch.long, device=w.device)
        for qs in range(0, q_all.shape[0], chunk):
            q = q_all[qs : qs + chunk]
            for rs in range(0, r_all.shape[0], chunk):
                logits = torch.abs(q[:, None, :] - r_all[None, rs : rs + chunk, :]) @ w + bias
                value, index = logits.max(dim=1)
                sl = slice(qs, qs + len(q))
                better = value > best[sl]
                best[sl] = torch.where(better, value, best[sl])
                arg[sl] = torch.where(better, index + rs, arg[sl])
        return torch.sigmoid(best).double().cpu().numpy(), arg.cpu().numpy()


def reid_report(
    generated_max: np.ndarray,
    generated_index: np.ndarray,
    real_test_max: np.ndarray | None = None,
    threshold: float = 0.5,
    max_listed: int = 20,
    generated_ids: Sequence[str] | None = None,
    train_ids: Sequence[str] | None = None,
    generated_prompts: Sequence[str] | None = None,
    n_train: int | None = None,
    protocol: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``metrics.json`` stores under ``reid``: mean, max and share above ``threshold`` of the per-image
    highest re-identification probabilities, their distribution, the same for real test images (a baseline:
    other patients, never seen in training) and the most re-identifiable generated images."""
    p = np.asarray(generated_max, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no re-identification scores to summarise")
    order = np.argsort(-p, kind="stable")
    listed = []
    for k in order[:max_listed]:
        item: dict[str, Any] = {"generated": int(k), "train": int(generated_index[k]), "probability": float(p[k])}
        if generated_ids is not None:
            item["generated_id"] = str(generated_ids[k])
        if generated_prompts is not None:
            item["prompt"] = str(generated_prompts[k])
        if train_ids is not None:
            item["train_id"] = str(train_ids[generated_index[k]])
        listed.append(item)
    out: dict[str, Any] = {
        "mean": float(p.mean()),
        "max": float(p.max()),
        "threshold": float(threshold),
        "fraction_above_threshold": float((p > threshold).mean()),
        "n_above_threshold": int((p > threshold).sum()),
        "n_generated": int(p.size),
        "n_train": None if n_train is None else int(n_train),
        "generated_to_train": distribution(p),
        "most_reidentifiable": listed,
    }
    if real_test_max is not None:
        r = np.asarray(real_test_max, dtype=np.float64)
        out["real_test_to_train"] = {
            **distribution(r), "max": float(r.max()), "fraction_above_threshold": float((r > threshold).mean()),
        }  # fmt: skip
    if protocol is not None:
        out["protocol"] = dict(protocol)
    return out
