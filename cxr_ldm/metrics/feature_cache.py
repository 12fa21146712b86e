"""Arrays computed once and reused across evaluation runs: real-image features, keyed by what made them.

A sweep of checkpoints evaluated against one test set extracts the real-image features on the first run
only. The key is a hash of everything that determines the arrays (image list, image size, feature network
weights fingerprint, preprocessing protocol), so a changed input never returns stale features. Files are
written atomically (a temporary file, then a rename), so concurrent jobs of a sweep at worst compute twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cxr_ldm.utils.atomic import atomic_write, atomic_write_text
from cxr_ldm.utils.hashing import json_digest

log = logging.getLogger(__name__)


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable hex key of JSON-able ``parts`` (sorted keys; non-JSON values by their ``str``)."""
    return json_digest(parts, 24, sort_keys=True, separators=(",", ":"))


class FeatureCache:
    """``<root>/<kind>_<key>.npz`` plus a ``.json`` with the key's parts; ``root=None`` disables caching."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root).expanduser() if root else None

    def path(self, kind: str, parts: Mapping[str, Any]) -> Path | None:
        if self.root is None:
            return None
        return self.root / f"{kind}_{cache_key(parts)}.npz"

    def load(self, kind: str, parts: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        path = self.path(kind, parts)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:  # a truncated or foreign file: recompute
            log.warning("ignoring unreadable cache file %s (%s)", path, err)
            return None

    def save(self, kind: str, parts: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path | None:
        path = self.path(kind, parts)
        if path is None:
            return None
        atomic_write(path, lambda f: np.savez(f, **arrays), "feature cache file", durable=False)
        meta = json.dumps(dict(parts), indent=2, sort_keys=True, default=str)
        atomic_write_text(path.with_suffix(".json"), meta, "feature cache file", durable=False)
        return path

    def get_or_compute(
        self, kind: str, parts: Mapping[str, Any], compute: Callable[[], Mapping[str, np.ndarray]]
    ) -> tuple[dict[str, np.ndarray], bool]:
        """``(arrays, hit)``: the cached arrays, or ``compute()``'s result (then stored)."""
        cached = self.load(kind, parts)
        if cached is not None:
            log.info("using cached %s (%s)", kind, self.path(kind, parts))
            return cached, True
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        self.save(kind, parts, arrays)
        return arrays, False
