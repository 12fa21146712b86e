"""Image-text alignment: BioViL-T's cosine similarity between each generated image and its prompt.

This is CheXGenBench's alignment score (``metrics/img_text_alignment_scores.py``): Microsoft's BioViL-T
through its own package, ``hi-ml-multimodal``, scored as ``ImageTextInferenceEngine
.get_similarity_score_from_raw_data(image_path, prompt)`` does: the L2-normalised projected global image
embedding (128-d joint space) dotted with the L2-normalised projected ``[CLS]`` embedding of the prompt.
Scores lie in [-1, 1]; higher is better aligned.

Everything model-specific is hi-ml-multimodal's: the classes (``CXRBertModel``, ``CXRBertTokenizer``,
``ImageModel`` with the ``resnet50_multi_image`` encoder, joint size 128), the image reading
(``load_image``: min-max remap to 8 bits, grey) and transform (``Resize(512)``, ``CenterCrop(448)``, to
tensor, grey repeated to 3 channels, as ``get_image_inference`` builds it for BioViL-T), and the prompt
handling (special tokens refused, trailing ``.!?`` stripped). One line is ours: hi-ml-multimodal 0.2.2
tokenises with ``tokenizer.batch_encode_plus``, which transformers 5 removed; :class:`_TextEngine` calls the
tokenizer itself with the same arguments (``add_special_tokens=True, padding="longest"``).

Weights (none are downloaded unless asked): a folder holding a copy of the Hugging Face repo
``microsoft/BiomedVLP-BioViL-T`` (revision ``v1.0``): the text model (``config.json``, ``pytorch_model.bin``
or ``model.safetensors``), its tokenizer files (``vocab.txt``, ...) and the image model
``biovil_t_image_model_proj_size_128.pt`` (a state dict); or that repo in the Hugging Face cache. Random
weights only when explicitly allowed, labelled :data:`RANDOM_WEIGHTS_LABEL`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL, MeasurementNetwork, weights_fingerprint
from cxr_ldm.utils.hashing import file_sha256

log = logging.getLogger(__name__)

BIOVIL_T_REPO = "microsoft/BiomedVLP-BioViL-T"
BIOVIL_T_REVISIONS = ("v1.0", "main")  # hi-ml-multimodal pins v1.0 (BIOVIL_T_COMMIT_TAG)
IMAGE_WEIGHTS = "biovil_t_image_model_proj_size_128.pt"  # hi-ml's BIOVIL_T_IMAGE_WEIGHTS_NAME
TEXT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
JOINT_FEATURE_SIZE = 128  # hi-ml's JOINT_FEATURE_SIZE
RESIZE, CENTER_CROP = 512, 448  # hi-ml's get_image_inference(BIOVIL_T): TRANSFORM_RESIZE, crop 448
ALIGNMENT_PROTOCOL = "biovil-t-hi-ml-0.2.2-cosine-global-image-cls-text-v1"


class AlignmentWeightsError(FileNotFoundError):
    """The BioViL-T folder is missing or incomplete (or random weights were not explicitly allowed)."""


def _hi_ml():
    """hi-ml-multimodal's modules (imported late: timm warns on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from health_multimodal.image.data import io as image_io
        from health_multimodal.image.data.transforms import create_chest_xray_transform_for_inference
        from health_multimodal.image.model.model import ImageModel
        from health_multimodal.image.model.types import ImageEncoderType
        from health_multimodal.text import TextInferenceEngine
        from health_multimodal.text.model import CXRBertConfig, CXRBertModel, CXRBertTokenizer
    return {
        "load_image": image_io.load_image, "remap_to_uint8": image_io.remap_to_uint8,
        "transform": create_chest_xray_transform_for_inference, "ImageModel": ImageModel,
        "encoder": ImageEncoderType.RESNET50_MULTI_IMAGE, "TextInferenceEngine": TextInferenceEngine,
        "CXRBertConfig": CXRBertConfig, "CXRBertModel": CXRBertModel, "CXRBertTokenizer": CXRBertTokenizer,
    }  # fmt: skip


def _fix_text() -> str:
    return (
        f"Download it once where the hub is reachable (`hf download {BIOVIL_T_REPO} --revision v1.0`, into "
        "the Hugging Face cache, or with `--local-dir DIR`) and pass alignment_weights=DIR, or allow the "
        "download (alignment_download=true). Nothing is downloaded automatically. For plumbing tests only, "
        "allow_random_alignment=true uses random weights (the scores are then meaningless)."
    )


def _text_weights(folder: Path) -> Path | None:
    return next((folder / f for f in TEXT_WEIGHTS if (folder / f).is_file()), None)


def _check_folder(folder: Path, origin: str) -> Path:
    if not folder.is_dir():
        raise AlignmentWeightsError(f"{origin}: {folder} is not a folder. " + _fix_text())
    missing = [f for f in ("config.json", "vocab.txt", IMAGE_WEIGHTS) if not (folder / f).is_file()]
    if _text_weights(folder) is None:
        missing.append(" or ".join(TEXT_WEIGHTS))
    if missing:
        raise AlignmentWeightsError(
            f"{origin}: {folder} lacks {', '.join(missing)} (a copy of {BIOVIL_T_REPO} holds the text model, "
            f"its tokenizer files and {IMAGE_WEIGHTS}). " + _fix_text()
        )
    return folder


def find_biovil_t_folder(
    weights_dir: str | Path | None = None, cache_dir: str | Path | None = None, allow_download: bool = False
) -> Path | None:
    """``weights_dir`` (must be complete), else the Hugging Face cache's snapshot of BioViL-T (``v1.0``, else
    ``main``; downloaded first only with ``allow_download``); ``None`` when not cached."""
    if weights_dir:
        return _check_folder(Path(weights_dir).expanduser(), f"alignment_weights={str(weights_dir)!r}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for revision in BIOVIL_T_REVISIONS:
        try:
            folder = snapshot_download(
                BIOVIL_T_REPO, revision=revision, cache_dir=str(cache_dir) if cache_dir else None,
                local_files_only=not allow_download,
            )  # fmt: skip
        except LocalEntryNotFoundError:
            continue
        return _check_folder(Path(folder), f"the Hugging Face cache's copy of {BIOVIL_T_REPO}@{revision}")
    return None


def _plumbing_vocab() -> list[str]:
    """A character-level WordPiece vocabulary: lets the random text tower tokenise any prompt offline."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:-()/%'")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]


def _text_engine_class(base: type) -> type:
    class _TextEngine(base):
        """hi-ml's TextInferenceEngine with its tokenisation call rewritten for transformers 5 (which removed
        ``batch_encode_plus``); same checks, same arguments."""

        def tokenize_input_prompts(self, prompts, verbose: bool = False):
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            self.assert_special_tokens_not_present(" ".join(prompts))
            prompts = [p.rstrip("!?.") for p in prompts]  # as hi-ml: removes punctuation from the end
            out = self.tokenizer(prompts, add_special_tokens=True, padding="longest", return_tensors="pt")
            device = next(self.model.parameters()).device
            out["input_ids"] = out["input_ids"].to(device)
            out["attention_mask"] = out["attention_mask"].to(device)
            if out["input_ids"].shape[1] > self.max_allowed_input_length:
                raise ValueError(
                    f"a prompt has {out['input_ids'].shape[1]} tokens, more than BioViL-T's "
                    f"{self.max_allowed_input_length}; shorten the prompts"
                )
            return out

    return _TextEngine


class BioViLTAlignment(MeasurementNetwork):
    """BioViL-T image and text towers: ``scores(images, prompts)`` -> ``[N]`` cosine similarities."""

    def __init__(self, text_model: nn.Module, tokenizer: Any, image_model: nn.Module, weights_label: str,
                 weights_sha256: dict[str, str]) -> None:  # fmt: skip
        super().__init__()
        hi = _hi_ml()
        self.text_model = text_model.eval()
        self.image_model = image_model.eval()
        self.tokenizer = tokenizer
        self.text_engine = _text_engine_class(hi["TextInferenceEngine"])(tokenizer, self.text_model)
        self.transform = hi["transform"](resize=RESIZE, center_crop_size=CENTER_CROP)
        self._load_image = hi["load_image"]
        self._remap = hi["remap_to_uint8"]
        self.weights_label = weights_label
        self.weights_sha256 = weights_sha256

    @classmethod
    def load(
        cls,
        weights_dir: str | Path | None = None,
        allow_random: bool = False,
        allow_download: bool = False,
        cache_dir: str | Path | None = None,
    ) -> BioViLTAlignment:
        """From a BioViL-T folder or the HF cache (:func:`find_biovil_t_folder`); random only if allowed."""
        hi = _hi_ml()
        folder = find_biovil_t_folder(weights_dir, cache_dir, allow_download)
        if folder is None:
            if not allow_random:
                where = cache_dir or "the Hugging Face cache ($HF_HUB_CACHE, default ~/.cache/huggingface/hub)"
                raise AlignmentWeightsError(
                    f"BioViL-T weights not found: no alignment_weights=DIR given and {BIOVIL_T_REPO} is not "
                    f"in {where}. " + _fix_text()
                )
            log.warning("BioViL-T with RANDOM weights: alignment scores are for plumbing tests only")
            import tempfile

            with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
                torch.manual_seed(0)
                vocab = Path(tmp) / "vocab.txt"
                vocab.write_text("\n".join(_plumbing_vocab()) + "\n", encoding="utf-8")
                tokenizer = hi["CXRBertTokenizer"](vocab_file=str(vocab))
                text = hi["CXRBertModel"](hi["CXRBertConfig"](vocab_size=len(_plumbing_vocab()),
                                                              projection_size=JOINT_FEATURE_SIZE))  # fmt: skip
                image = hi["ImageModel"](img_encoder_type=hi["encoder"], joint_feature_size=JOINT_FEATURE_SIZE)
            sha = {"text": weights_fingerprint(text), "image": weights_fingerprint(image)}
            return cls(text, tokenizer, image, RANDOM_WEIGHTS_LABEL, sha)
        tokenizer = hi["CXRBertTokenizer"].from_pretrained(str(folder))
        text = hi["CXRBertModel"].from_pretrained(str(folder))
        try:
            image = hi["ImageModel"](img_encoder_type=hi["encoder"], joint_feature_size=JOINT_FEATURE_SIZE,
                                     pretrained_model_path=folder / IMAGE_WEIGHTS)  # fmt: skip
        except RuntimeError as err:  # load_state_dict: wrong keys or shapes
            raise AlignmentWeightsError(
                f"{folder / IMAGE_WEIGHTS} is not BioViL-T's image model state dict: {str(err)[:300]}"
            ) from err
        sha = {"text": file_sha256(_text_weights(folder)), "image": file_sha256(folder / IMAGE_WEIGHTS)}
        return cls(text, tokenizer, image, str(folder.resolve()), sha)

    @property
    def device(self) -> torch.device:  # the image tower's (images go there)
        return next(self.image_model.parameters()).device

    def protocol(self) -> dict[str, Any]:
        """What ``metrics.json`` states about the score."""
        return {
            "model": f"BioViL-T ({BIOVIL_T_REPO}) through hi-ml-multimodal {version('hi-ml-multimodal')}",
            "score": "cosine similarity of the L2-normalised projected global image embedding and projected "
            "[CLS] text embedding (128-d joint space), as CheXGenBench (get_similarity_score_from_raw_data)",
            "image_preprocessing": f"hi-ml load_image (min-max to 8 bits, grey) -> Resize({RESIZE}) -> "
            f"CenterCrop({CENTER_CROP}) -> ToTensor -> 3 channels",
            "text_preprocessing": "trailing .!? stripped, [CLS] prompt [SEP], no truncation (hi-ml)",
            "weights": self.weights_label,
            "weights_sha256": dict(self.weights_sha256),
            "protocol": ALIGNMENT_PROTOCOL,
        }

    # ------------------------------------------------------------------------------------------ embeddings
    def _pixels_from_tensor(self, image: torch.Tensor) -> Image.Image:
        """One ``[1, H, W]`` 0..1 image -> what hi-ml's ``load_image`` returns for its 8-bit PNG."""
        pixels = (image[0].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(self._remap(pixels)).convert("L")

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor | Sequence[str | Path]) -> torch.Tensor:
        """``[N, 128]`` L2-normalised global image embeddings of 0..1 ``[N, 1, H, W]`` images or image files."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 1:
                raise ValueError(f"expected single-channel images [B, 1, H, W] in 0..1, got {tuple(images.shape)}")
            pil = [self._pixels_from_tensor(im) for im in images]
        else:
            pil = [self._load_image(Path(p)) for p in images]
        batch = torch.stack([self.transform(p) for p in pil]).to(self.device)
        return F.normalize(self.image_model(batch).projected_global_embedding, dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """``[N, 128]`` L2-normalised projected ``[CLS]`` embeddings (each prompt encoded in one padded batch)."""
        emb = self.text_engine.get_embeddings_from_prompt(list(prompts), normalize=False, verbose=False)
        return F.normalize(emb, dim=-1)

    @torch.no_grad()
    def scores(self, images: torch.Tensor | Sequence[str | Path], prompts: Sequence[str]) -> np.ndarray:
        """``[N]`` float64 cosine similarity of image ``i`` with prompt ``i``."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if len(prompts) == 0:
            return np.zeros(0)
        img = self.image_embeddings(images)
        txt = self.text_embeddings(prompts).to(img.device)
        return (img * txt).sum(dim=1).double().cpu().numpy()


def alignment_summary(scores: np.ndarray | Sequence[float], protocol: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``metrics.json`` stores under ``alignment``: mean (CheXGenBench's number), std, median, n."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no alignment scores to summarise")
    out: dict[str, Any] = {
        "mean": float(s.mean()), "std": float(s.std()), "median": float(np.median(s)),
        "min": float(s.min()), "max": float(s.max()), "n": int(s.size),
    }  # fmt: skip
    if protocol is not None:
        out["protocol"] = protocol
    return out
