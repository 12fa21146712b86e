"""Print the composed config as a tree and keep a copy with the run."""

from __future__ import annotations

from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths")


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None, show: bool = True) -> None:
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    if show:
        rich.print(tree)
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        Path(save_to).write_text(OmegaConf.to_yaml(cfg, resolve=True))
