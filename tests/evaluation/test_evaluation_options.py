"""The evaluation's options live in evaluate.yaml only: every key the code reads is there, and a key the config
lacks is an error naming it, never a default supplied by the code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import INFERENCE_CONF_DIR, compose_config
from omegaconf import OmegaConf, open_dict

from cxr_ldm.evaluation.inputs import EvaluationError, option
from cxr_ldm.evaluation.registry import MEASURES

PACKAGE = Path(__file__).resolve().parents[2] / "cxr_ldm" / "evaluation"


def _compose(*overrides: str):
    return compose_config("evaluate", ["out_dir=/tmp/unused", *overrides], inference=True)


def _keys_read_by_the_code() -> set[str]:
    """String literals passed as the key of option(cfg, KEY) / path_option(cfg, KEY) in cxr_ldm/evaluation/."""
    keys = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("option", "path_option")
                    and len(node.args) == 2 and isinstance(node.args[1], ast.Constant)):  # fmt: skip
                keys.add(node.args[1].value)
    return keys


def test_every_option_the_code_reads_is_in_evaluate_yaml():
    cfg = _compose()
    keys = _keys_read_by_the_code()
    assert {"seed", "n_real", "raddino_weights", "prdc.features", "reid.n_train", "report.prompts"} <= keys
    missing = [k for k in sorted(keys) if OmegaConf.select(cfg, k, default="<absent>") == "<absent>"]
    assert not missing, f"read by the code but not in evaluate.yaml: {missing}"


def test_a_key_the_config_lacks_is_an_error_not_a_default():
    cfg = _compose()
    with open_dict(cfg):
        del cfg.kid_raddino["subsets"]
    with pytest.raises(EvaluationError, match="option kid_raddino.subsets is missing from the configuration"):
        option(cfg, "kid_raddino.subsets")
    assert option(cfg, "memorization.threshold") is None  # a null in the yaml is a value


def test_the_yaml_lists_every_registered_measure():
    text = (INFERENCE_CONF_DIR / "evaluate.yaml").read_text()
    listed = text.split("metrics:", 1)[1].split("\n\n", 1)[0]
    for name in MEASURES:
        assert name in listed, name
