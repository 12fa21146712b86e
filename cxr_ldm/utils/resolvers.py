"""OmegaConf resolvers shared by every entry point (registered on import, idempotently)."""

from __future__ import annotations

import ast
import importlib.util
import os
import secrets
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")


def slurm_gpus_per_node(accelerator: Any, devices: Any) -> int | None:
    """The GPUs a SLURM job asks for, per node, derived from the trainer: ``None`` (no ``--gpus-per-node``, so
    no gres request) unless the trainer runs on GPUs; then its ``devices`` (a count or a list of ids).

    ``trainer=cpu`` under ``hydra/launcher=slurm`` used to ask for GPUs anyway, and SLURM refused the job
    ("Invalid generic resource (gres) specification") on clusters without them.
    """
    if str(accelerator).lower() not in (*GPU_ACCELERATORS, "auto"):
        return None  # cpu (and mps, tpu, ...): no GPUs to request
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    text = str(devices).strip()
    if text.lstrip("-").isdigit() and int(text) > 0:
        return int(text)
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    raise ValueError(
        f"hydra/launcher=slurm: trainer.devices={devices} cannot be turned into a GPU request; set "
        f"trainer.devices=<GPUs per node> (or hydra.launcher.gpus_per_node=<n> yourself)"
    )


# the folder of the cxr_ldm.conf package (conf/ of a checkout, cxr_ldm/conf/ of an installed wheel), found
# without importing it: utils sits below conf in the layers
CONF_DIR = Path(importlib.util.find_spec("cxr_ldm.conf").submodule_search_locations[0])
_NOT_OPTIONS = ("defaults:", "hydra:")


def _config_file(config: str) -> Path:
    """``sample`` -> ``conf/inference/sample.yaml``, ``train`` -> ``conf/train.yaml`` (a command's config)."""
    for folder in (CONF_DIR, CONF_DIR / "inference"):
        if (folder / f"{config}.yaml").is_file():
            return folder / f"{config}.yaml"
    raise FileNotFoundError(f"no command config {config}.yaml in {CONF_DIR} or {CONF_DIR / 'inference'}")


def command_usage(config: str, job: str | None = None) -> str:
    """The comment lines a command's config starts with (its usage and what it writes), for ``--help``.

    A command that runs on another's config (``cache_latents`` on ``train``'s: the same overrides, so the same
    cache key) has its own usage in its module's docstring: that, then whose options follow.
    """
    if job and job != config and (CONF_DIR.parent / f"{job}.py").is_file():
        doc = ast.get_docstring(ast.parse((CONF_DIR.parent / f"{job}.py").read_text(encoding="utf-8"))) or ""
        usage = doc.split("\n\n")[0].replace("``", "").rstrip(".")
        return _for_help_template(f"{usage}\nIts options are those of python -m cxr_ldm.{config}:")
    lines = []
    for line in _config_file(config).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line[2:] if line.startswith("# ") else line[1:])
    return _for_help_template("\n".join(lines))


def _options_text(path: Path) -> list[str]:
    """A config file's lines without its ``defaults:`` and ``hydra:`` blocks (their comments dropped with them)."""
    lines: list[str] = []
    comments: list[str] = []  # comment lines above a key belong to it
    skipping = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            if not line.startswith("# @package"):
                comments.append(line)
            continue
        if line[:1] not in ("", " "):  # a top-level key
            skipping = line.startswith(_NOT_OPTIONS)
        if not skipping:
            lines += comments + [line]
        comments = []
    return lines + comments


def _single_option_groups(path: Path) -> list[Path]:
    """The groups of a config's defaults list that have one option only (``sampling: default``, ``paths:
    default``): their options are the command's own, so ``--help`` shows them."""
    found = []
    for group, option in _defaults_entries(path):
        files = [f for folder in _group_folders(group) for f in folder.glob("*.yaml")]
        if len(files) == 1 and files[0].stem == option:
            found.append(files[0])
    return found


def command_options(config: str) -> str:
    """A command's options with their comments, for ``--help``: the text of its config file without its
    ``defaults:`` and ``hydra:`` blocks, then each single-option group's (Hydra's own help prints values only, and
    the comments say what they mean).
    """
    path = _config_file(config)
    lines = _options_text(path)
    for group in _single_option_groups(path):
        lines += ["", f"{group.parent.name}:   # {group.parent.name}.<option>=value"]
        lines += [f"  {line}" if line else line for line in _options_text(group)]
    return _for_help_template("\n".join(lines).strip("\n"))


def command_groups(config: str) -> str:
    """The config groups a command's defaults list composes from, ``group: option, option``, for ``--help``
    (Hydra's own list names every folder on the search path, ``inference/`` and ``hydra/`` included)."""
    lines = []
    for group, _ in _defaults_entries(_config_file(config)):
        options = sorted(f.stem for folder in _group_folders(group) for f in folder.glob("*.yaml"))
        if options:
            lines.append(f"{group}: {', '.join(options)}")
    return _for_help_template("\n".join(lines) or "(none)")


def _defaults_entries(path: Path) -> list[tuple[str, str]]:
    """``(group, option)`` of a config's defaults list, as YAML reads it; ``_self_``, overrides and the ``hydra``
    group left out (``option`` is ``"None"`` for ``experiment: null``)."""
    entries = []
    for entry in OmegaConf.load(path).get("defaults") or []:
        if OmegaConf.is_dict(entry) and len(entry) == 1:
            ((group, option),) = entry.items()
            if group != "hydra" and not str(group).startswith("override "):
                entries.append((str(group), str(option)))
    return entries


def _group_folders(group: str) -> list[Path]:
    """Where a config group's options live: ``conf/<group>`` and/or ``conf/inference/<group>``."""
    return [folder for folder in (CONF_DIR / group, CONF_DIR / "inference" / group) if folder.is_dir()]


def _for_help_template(text: str) -> str:
    """Hydra fills its help template with ``string.Template``: a literal ``$`` (``${paths.root_dir}``) is ``$$``."""
    return text.replace("$", "$$")


def register_resolvers() -> None:
    # A short random id makes run folders unique even for two runs started in the same second.
    # use_cache=True: resolved once per config; Hydra copies the cache into every multirun job's config,
    # so a sweep and its jobs agree on the value, like ${now:}.
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
    # The launch folder, usable before Hydra sets ${hydra:runtime.cwd} (a multirun resolves its sweep folder
    # earlier than that); cached, so a sweep and its jobs agree.
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd, use_cache=True)
    # ${slurm_gpus:${trainer.accelerator},${trainer.devices}}: hydra/launcher=slurm's gpus_per_node
    if not OmegaConf.has_resolver("slurm_gpus"):
        OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus_per_node)
    # ${command_usage:sample} and ${command_options:sample}: a command's --help (conf/hydra/help/command.yaml)
    for name, function in (("command_usage", command_usage), ("command_options", command_options),
                           ("command_groups", command_groups)):  # fmt: skip
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register_resolvers()
