"""Command-line overrides of the wrong type are refused before anything runs, naming the option.

The configs are plain YAML (no schema), so Hydra takes ``trainer.max_epochs=abc`` or ``data.augment=true``
as given, and the run fails much later with a traceback far from the option. :func:`check_override_types`
compares every value override with the same key of the config composed without the value overrides (the
command's groups kept): a number, a boolean, a list or a mapping must stay one; ``null`` defaults accept
anything; keys added with ``+`` are not checked.
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

_MISSING = object()


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "a boolean (true or false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (list, tuple, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a mapping"
    return None


def _fits(default: Any, value: Any) -> bool:
    if isinstance(default, bool):  # a switch may also be turned on with a mapping of its arguments (model.compile)
        return isinstance(value, (bool, dict, DictConfig))
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple, ListConfig)):
        return isinstance(value, (list, tuple, ListConfig))
    if isinstance(default, (dict, DictConfig)):
        return isinstance(value, (dict, DictConfig))
    return True


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    except Exception:  # an interpolation that cannot resolve outside the run: not this check's business
        return _MISSING


def value_overrides(overrides: list[str], groups: set[str]) -> list[tuple[str, str]]:
    """``(key, value)`` of the overrides that set a value of an existing key (not a group, not ``+key``)."""
    out = []
    for override in overrides:
        if "=" not in override or override.startswith(("+", "~")):
            continue
        key, value = override.split("=", 1)
        if key.split("@")[0] in groups or key.startswith("hydra"):
            continue
        out.append((key, value))
    return out


def check_override_types(cfg: DictConfig) -> None:
    """Raise ``ValueError`` for the first override whose value has another type than the option's default.

    Call it inside a Hydra app (``@hydra.main``), with the composed ``cfg``.
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    groups = set(hydra_cfg.runtime.choices)
    overrides = list(hydra_cfg.overrides.task)
    values = value_overrides(overrides, groups)
    if not values:
        return
    keep = [o for o in overrides if (o.split("=", 1)[0].lstrip("+~").split("@")[0] in groups)]
    try:
        baseline = compose(config_name=hydra_cfg.job.config_name, overrides=keep)
    except Exception:  # composition itself is Hydra's to report; nothing to compare with
        return
    for key, text in values:
        default, value = _select(baseline, key), _select(cfg, key)
        if default is _MISSING or value is _MISSING or default is None or value is None:
            continue
        if not _fits(default, value):
            shown = json.dumps(OmegaConf.to_container(default)) if OmegaConf.is_config(default) else repr(default)
            raise ValueError(f"{key}={text}: expected {_kind(default)}, like its default {shown}")
