"""OmegaConf resolvers shared by every entry point (registered on import, idempotently)."""

from __future__ import annotations

import os
import secrets

from omegaconf import OmegaConf


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


register_resolvers()
