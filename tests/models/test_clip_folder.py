"""transformers ``CLIPTextModel`` folders read into the open_clip text tower: equal ``last_hidden_state``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cxr_ldm.data.tokenization import tokenize
from cxr_ldm.models.text_encoder import FrozenOpenCLIPTextEncoder, sd21_text_encoder_config

transformers = pytest.importorskip("transformers")


def write_clip_text(folder: Path, act: str, safe: bool = True) -> torch.nn.Module:
    config = transformers.CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                                         num_attention_heads=2, max_position_embeddings=77, hidden_act=act,
                                         bos_token_id=49406, eos_token_id=49407, pad_token_id=0)  # fmt: skip
    torch.manual_seed(4)
    model = transformers.CLIPTextModel(config).eval()
    model.save_pretrained(folder)
    if not safe:  # the older layout: a torch.save'd state dict (transformers 5 writes safetensors only)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return model


@pytest.mark.parametrize(("act", "safe"), [("gelu", True), ("quick_gelu", False)], ids=["gelu-safetensors", "quick_gelu-bin"])
def test_context_equals_last_hidden_state(tmp_path: Path, act: str, safe: bool):
    model = write_clip_text(tmp_path / "text_encoder", act, safe)
    assert (tmp_path / "text_encoder" / ("model.safetensors" if safe else "pytorch_model.bin")).is_file()
    encoder = FrozenOpenCLIPTextEncoder(weights_path=str(tmp_path / "text_encoder"))
    assert encoder.width == 32 and encoder.layer == "last"  # mlp ratio 80/32 and the folder's last layer
    tokens = tokenize(["", "Moderate cardiomegaly with small bilateral effusions."])
    with torch.no_grad():
        reference = model(input_ids=tokens).last_hidden_state
    assert ((encoder(tokens) - reference).norm() / reference.norm()).item() < 1e-4


def test_wrong_folders_are_clear(tmp_path: Path):
    folder = tmp_path / "vit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="describes a 'vit' model, not a CLIP text encoder"):
        FrozenOpenCLIPTextEncoder(weights_path=str(folder))
    write_clip_text(tmp_path / "sd" / "text_encoder", "gelu")
    (tmp_path / "sd" / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no text-encoder weights in .*expected model.safetensors or pytorch_model.bin"):
        FrozenOpenCLIPTextEncoder(weights_path=str(tmp_path / "sd"))
    assert sd21_text_encoder_config(tmp_path / "sd")["weights_path"].endswith("text_encoder")
    weights = tmp_path / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"")
    assert sd21_text_encoder_config(weights) == {"name": "sd21", "model_name": "ViT-H-14",
                                                  "weights_path": str(weights.resolve()), "layer": "penultimate"}  # fmt: skip
