"""Hydra instantiation of callbacks and loggers from their config groups (lightning-hydra-template style)."""

from __future__ import annotations

import hydra
from hydra.errors import InstantiationException
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def _instantiate_group(cfg: DictConfig | None, kind: type, group: str) -> list:
    objects = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"the {kind.__name__} config must be a mapping of name -> config, got {type(cfg).__name__}")
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            try:
                obj = hydra.utils.instantiate(conf)
            except InstantiationException as err:  # a constructor refused its options: name them
                cause = err.__cause__
                if isinstance(cause, (ValueError, TypeError, FileNotFoundError)):
                    error = FileNotFoundError if isinstance(cause, FileNotFoundError) else ValueError
                    raise error(f"{group}.{name}: {cause}") from err
                raise
            if not isinstance(obj, kind):
                raise TypeError(f"{name}: {conf._target_} is not a {kind.__name__}")
            objects.append(obj)
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_group(cfg, Callback, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_group(cfg, Logger, "logger")
