"""The frozen OpenCLIP text encoder: shapes, freezing, penultimate-layer maths and loading real-format files."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import CONF_DIR
from ldm_fixtures import TINY_TEXT_CFG as TINY
from ldm_fixtures import full_clip_state_dict
from omegaconf import OmegaConf

from cxr_ldm.data.tokenization import EOT_TOKEN, SOT_TOKEN, tokenize
from cxr_ldm.models.text_encoder import (
    FrozenOpenCLIPTextEncoder,
    TextEncoderWeightsNotFound,
    build_text_encoder,
    find_weights,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONF = CONF_DIR / "text_encoder"
PROMPTS = ["Large right pleural effusion.", "", "No acute cardiopulmonary process. Heart size normal."]


def tiny(seed: int = 0) -> FrozenOpenCLIPTextEncoder:
    return FrozenOpenCLIPTextEncoder(text_cfg=TINY, seed=seed)


def manual_penultimate(
    state: dict[str, torch.Tensor], tokens: torch.Tensor, layers: int, heads: int
) -> torch.Tensor:
    """SD 2.x conditioning from raw weights: embeddings, causal pre-LN blocks except the last, then ln_final."""
    width = state["token_embedding.weight"].shape[1]
    x = state["token_embedding.weight"][tokens] + state["positional_embedding"]
    length, head_dim = tokens.shape[1], width // heads
    causal = torch.full((length, length), float("-inf")).triu(1)

    def ln(v: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(v, (width,), state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-5)

    for i in range(layers - 1):
        p = f"transformer.resblocks.{i}."
        h = ln(x, p + "ln_1") @ state[p + "attn.in_proj_weight"].T + state[p + "attn.in_proj_bias"]
        q, k, v = (t.reshape(*t.shape[:2], heads, head_dim).transpose(1, 2) for t in h.chunk(3, dim=-1))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(x.shape)
        x = x + attended @ state[p + "attn.out_proj.weight"].T + state[p + "attn.out_proj.bias"]
        h = F.gelu(ln(x, p + "ln_2") @ state[p + "mlp.c_fc.weight"].T + state[p + "mlp.c_fc.bias"])
        x = x + h @ state[p + "mlp.c_proj.weight"].T + state[p + "mlp.c_proj.bias"]
    return ln(x, "ln_final")


def test_shapes_freezing_eval_and_no_grad():
    encoder = tiny()
    tokens = tokenize(PROMPTS)
    out = encoder(tokens)
    assert out.shape == (3, 77, 64) and out.dtype == torch.float32
    assert all(not p.requires_grad for p in encoder.parameters())
    assert encoder.train().training is False and not any(m.training for m in encoder.modules())
    encoder.requires_grad_(True)  # even if someone unfreezes it, the forward pass builds no graph
    assert encoder(tokens).requires_grad is False
    assert encoder.persist_weights is True and encoder.width == 64 and encoder.context_length == 77
    with pytest.raises(ValueError, match="77"):
        encoder(tokens[:, :10])


def test_seed_fixes_the_tiny_weights():
    a, b, c = tiny(0).state_dict(), tiny(0).state_dict(), tiny(1).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["tower.token_embedding.weight"], c["tower.token_embedding.weight"])
    # building a seeded tower leaves the global random stream alone
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    tiny(0)
    assert torch.equal(torch.rand(3), expected)


def test_penultimate_layer_equals_independent_computation():
    encoder = tiny(3)
    tokens = tokenize(PROMPTS)
    state = {k.removeprefix("tower."): v for k, v in encoder.state_dict().items()}
    expected = manual_penultimate(state, tokens, layers=3, heads=4)
    torch.testing.assert_close(encoder(tokens), expected, rtol=1e-5, atol=1e-5)
    last = FrozenOpenCLIPTextEncoder(text_cfg=TINY, seed=3, layer="last")(tokens)
    assert not torch.allclose(last, expected, atol=1e-3)  # the penultimate block really is a different output


def test_empty_prompt_tokens():
    tokens = tokenize([""])
    assert tokens[0, :2].tolist() == [SOT_TOKEN, EOT_TOKEN] and tokens[0, 2:].abs().sum() == 0


@pytest.mark.parametrize("fmt", ["bin", "safetensors", "wrapped"])
def test_loads_text_tower_from_full_clip_checkpoint(tmp_path: Path, fmt: str):
    state = full_clip_state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "open_clip_model.safetensors"
        save_file(state, str(path))
    elif fmt == "bin":
        path = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    else:  # open_clip training checkpoint: {"state_dict": {"module.<key>": ...}}
        path = tmp_path / "epoch_1.pt"
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)

    encoder = FrozenOpenCLIPTextEncoder(text_cfg=TINY, weights_path=str(path))
    loaded = encoder.tower.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("visual.")} - {
        "logit_scale",
        "text_projection",
    }
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert encoder.persist_weights is False and encoder.weights_source == str(path)
    tokens = tokenize(PROMPTS)
    torch.testing.assert_close(encoder(tokens), manual_penultimate(state, tokens, 3, 4), rtol=1e-5, atol=1e-5)


def test_mismatched_checkpoint_is_an_error(tmp_path: Path):
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(full_clip_state_dict(), path)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        FrozenOpenCLIPTextEncoder(text_cfg={**TINY, "layers": 2}, weights_path=str(path))
    with pytest.raises(ValueError, match="either"):
        FrozenOpenCLIPTextEncoder(text_cfg=TINY, weights_path=str(path), seed=0)


def test_finds_weights_in_the_hugging_face_cache(tmp_path: Path):
    repo = "someone/tiny-clip"
    snapshot = tmp_path / "models--someone--tiny-clip" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (tmp_path / "models--someone--tiny-clip" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-clip" / "refs" / "main").write_text("0123abcd")
    state = full_clip_state_dict(7)
    torch.save(state, snapshot / "open_clip_pytorch_model.bin")

    assert find_weights(None, repo, cache_dir=tmp_path) == snapshot / "open_clip_pytorch_model.bin"
    encoder = FrozenOpenCLIPTextEncoder(text_cfg=TINY, hf_hub_id=repo, cache_dir=str(tmp_path))
    assert torch.equal(encoder.tower.token_embedding.weight, state["token_embedding.weight"])


def test_sd21_without_weights_fails_fast_with_instructions(tmp_path: Path):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "sd21.yaml"))
    assert cfg["model_name"] == "ViT-H-14" and cfg["seed"] is None
    start = time.perf_counter()
    with pytest.raises(TextEncoderWeightsNotFound) as err:
        build_text_encoder({**cfg, "cache_dir": str(tmp_path)})
    message = str(err.value)
    assert "open_clip_pytorch_model.bin" in message and "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in message
    assert "text_encoder.weights_path" in message and str(tmp_path) in message
    missing = tmp_path / "nowhere" / "open_clip_pytorch_model.bin"
    with pytest.raises(TextEncoderWeightsNotFound, match="nowhere"):
        build_text_encoder({**cfg, "weights_path": str(missing)})
    # the file is looked for before the 354M-parameter tower is allocated (building it takes far longer)
    assert time.perf_counter() - start < 3.0


def test_tiny_yaml_builds_the_seeded_tower():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "tiny.yaml"))
    encoder = build_text_encoder(cfg)
    reference = tiny(cfg["seed"])
    assert encoder.width == 64 and len(encoder.tower.transformer.resblocks) == 3
    assert torch.equal(encoder(tokenize(PROMPTS)), reference(tokenize(PROMPTS)))


def test_sd21_tower_matches_the_vit_h_14_checkpoint_layout():
    """Built on the meta device (no memory): same text keys and shapes as a full ViT-H-14 CLIP state dict."""
    import open_clip
    from open_clip.model import CLIP

    from cxr_ldm.models.text_encoder import _build_text_tower

    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "sd21.yaml"))
    with torch.device("meta"):
        tower = _build_text_tower(cfg["model_name"], cfg["text_cfg"])
        clip = CLIP(**open_clip.get_model_config("ViT-H-14"))
    text_keys = {
        k: v.shape for k, v in clip.state_dict().items() if not k.startswith("visual.") and k != "logit_scale"
    }
    text_keys.pop("text_projection")  # not needed for per-token states; skipped when loading
    assert {k: v.shape for k, v in tower.state_dict().items()} == text_keys
    assert tower.width == 1024 and len(tower.transformer.resblocks) == 24
    assert sum(p.numel() for p in tower.parameters()) == 352_984_064  # 354M with the 1024x1024 projection
