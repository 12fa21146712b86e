"""Logger construction that never blocks a run on a login prompt."""

from __future__ import annotations

import logging
import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_api_key_available() -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc entry that ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_offline(offline: bool | None) -> bool:
    """``WANDB_MODE`` wins; else an explicit ``offline``; else offline exactly when no key is configured."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    if offline is not None:
        return bool(offline)
    if not wandb_api_key_available():
        log.warning("wandb: no API key found (WANDB_API_KEY or `wandb login`); logging offline. "
                    "Upload later with `wandb sync <run dir>/wandb`.")
        return True
    return False


def build_wandb_logger(offline: bool | None = None, **kwargs) -> WandbLogger:
    return WandbLogger(offline=resolve_wandb_offline(offline), **kwargs)


