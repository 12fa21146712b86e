"""BioViL-T alignment, offline: a folder in the layout of ``microsoft/BiomedVLP-BioViL-T`` written by the libraries
that own it (transformers' ``save_pretrained`` for hi-ml's CXR-BERT text model and tokenizer, ``torch.save`` of
hi-ml's ``ImageModel`` state dict for the image model, as published), with random weights and a tiny text tower."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cxr_ldm.metrics.alignment import (
    IMAGE_WEIGHTS,
    AlignmentWeightsError,
    BioViLTAlignment,
    alignment_summary,
)
from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from health_multimodal.image import ImageInferenceEngine
    from health_multimodal.image.data.io import load_image
    from health_multimodal.image.data.transforms import create_chest_xray_transform_for_inference
    from health_multimodal.image.model.model import ImageModel
    from health_multimodal.image.model.types import ImageEncoderType
    from health_multimodal.text import TextInferenceEngine
    from health_multimodal.text.model import CXRBertConfig, CXRBertModel, CXRBertTokenizer
    from health_multimodal.vlp import ImageTextInferenceEngine

WORDS = ["no", "pleural", "effusion", "large", "right", "left", "heart", "size", "is", "normal", "mild",
         "cardiomegaly", "pneumothorax", "##s", "."]  # fmt: skip
PROMPTS = ["No pleural effusion.", "Large right pleural effusions", "Heart size is normal. Mild cardiomegaly!"]


@pytest.fixture(scope="module")
def biovil_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("biovil_t")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    CXRBertTokenizer(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = CXRBertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, projection_size=128)  # fmt: skip
    CXRBertModel(config).save_pretrained(folder)
    image = ImageModel(img_encoder_type=ImageEncoderType.RESNET50_MULTI_IMAGE, joint_feature_size=128)
    torch.save(image.state_dict(), folder / IMAGE_WEIGHTS)
    return folder


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    paths = []
    for k in range(len(PROMPTS)):
        p = root / f"{k}.png"
        Image.fromarray(rng.integers(20, 230, size=(64, 48), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def scorer(biovil_folder: Path) -> BioViLTAlignment:
    return BioViLTAlignment.load(biovil_folder)


def test_equals_hi_ml_inference_engine(biovil_folder: Path, image_files: list[Path], scorer: BioViLTAlignment):
    """CheXGenBench's call, one image and prompt at a time, through hi-ml's own engine."""
    ours = scorer.scores(image_files, PROMPTS)
    tokenizer = CXRBertTokenizer.from_pretrained(biovil_folder)
    # hi-ml 0.2.2 calls batch_encode_plus, which transformers 5 removed: give this instance the old method
    tokenizer.batch_encode_plus = lambda batch_text_or_text_pairs, **kw: tokenizer(batch_text_or_text_pairs, **kw)
    text = TextInferenceEngine(tokenizer, CXRBertModel.from_pretrained(biovil_folder).eval())
    image_model = ImageModel(img_encoder_type=ImageEncoderType.RESNET50_MULTI_IMAGE, joint_feature_size=128,
                             pretrained_model_path=biovil_folder / IMAGE_WEIGHTS)  # fmt: skip
    image = ImageInferenceEngine(image_model, create_chest_xray_transform_for_inference(512, 448))
    engine = ImageTextInferenceEngine(image, text)
    expected = [engine.get_similarity_score_from_raw_data(p, t) for p, t in zip(image_files, PROMPTS, strict=True)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    assert ours.shape == (3,) and np.all(np.abs(ours) <= 1 + 1e-6)


def test_equals_a_hand_computed_cosine(biovil_folder: Path, image_files: list[Path], scorer: BioViLTAlignment):
    tokenizer = CXRBertTokenizer.from_pretrained(biovil_folder)
    model = CXRBertModel.from_pretrained(biovil_folder).eval()
    with torch.no_grad():
        expected = []
        for path, prompt in zip(image_files, PROMPTS, strict=True):
            tokens = tokenizer(prompt.rstrip("!?."), return_tensors="pt")
            out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                        output_cls_projected_embedding=True)  # fmt: skip
            t = out.cls_projected_embedding[0]
            x = create_chest_xray_transform_for_inference(512, 448)(load_image(path))[None]
            v = scorer.image_model(x).projected_global_embedding[0]
            expected.append(float(F.cosine_similarity(v, t, dim=0)))
    np.testing.assert_allclose(scorer.scores(image_files, PROMPTS), expected, rtol=0, atol=1e-5)


def test_tensors_score_as_their_png_files(image_files: list[Path], scorer: BioViLTAlignment):
    tensors = torch.stack([torch.from_numpy(np.array(Image.open(p), dtype=np.float32) / 255.0)[None]
                           for p in image_files])  # fmt: skip
    np.testing.assert_allclose(scorer.scores(tensors, PROMPTS), scorer.scores(image_files, PROMPTS), atol=1e-6)


def test_protocol_and_summary(scorer: BioViLTAlignment, biovil_folder: Path):
    p = scorer.protocol()
    assert p["weights"] == str(biovil_folder.resolve()) and not scorer.is_random
    assert set(p["weights_sha256"]) == {"text", "image"} and len(p["weights_sha256"]["image"]) == 64
    s = alignment_summary([0.1, 0.3, 0.2, 0.6], protocol=p)
    assert s["mean"] == pytest.approx(0.3) and s["median"] == pytest.approx(0.25) and s["n"] == 4
    assert s["std"] == pytest.approx(np.std([0.1, 0.3, 0.2, 0.6])) and (s["min"], s["max"]) == (0.1, 0.6)
    assert s["protocol"] is p


def test_mismatched_and_special_tokens(scorer: BioViLTAlignment, image_files: list[Path]):
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        scorer.scores(image_files, PROMPTS[:2])
    with pytest.raises(ValueError, match="special token"):
        scorer.scores(image_files[:1], ["[SEP] no effusion"])


def test_missing_and_incomplete_folders(tmp_path: Path, biovil_folder: Path):
    with pytest.raises(AlignmentWeightsError, match=r"is not a folder.*hf download microsoft/BiomedVLP-BioViL-T --revision v1.0"):
        BioViLTAlignment.load(tmp_path / "nowhere")
    half = tmp_path / "half"
    half.mkdir()
    for name in ("config.json", "vocab.txt"):
        (half / name).write_bytes((biovil_folder / name).read_bytes())
    with pytest.raises(AlignmentWeightsError, match=f"lacks {IMAGE_WEIGHTS}, model.safetensors or pytorch_model.bin"):
        BioViLTAlignment.load(half)
    with pytest.raises(AlignmentWeightsError, match=r"BioViL-T weights not found.*allow_random_alignment=true"):
        BioViLTAlignment.load(cache_dir=tmp_path / "empty_hub")


def test_wrong_image_file_is_a_clear_error(tmp_path: Path, biovil_folder: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in biovil_folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    torch.save({"weight": torch.zeros(3)}, bad / IMAGE_WEIGHTS)
    with pytest.raises(AlignmentWeightsError, match="is not BioViL-T's image model state dict"):
        BioViLTAlignment.load(bad)


def test_random_weights_when_allowed_are_labelled(tmp_path: Path):
    scorer = BioViLTAlignment.load(cache_dir=tmp_path / "empty_hub", allow_random=True)
    assert scorer.is_random and scorer.protocol()["weights"] == RANDOM_WEIGHTS_LABEL
    s = scorer.scores(torch.rand(1, 1, 32, 32), ["Moderate left pleural effusion, 4.5 cm."])
    assert s.shape == (1,) and np.isfinite(s).all()
