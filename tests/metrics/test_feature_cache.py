"""The on-disk cache of real-image features: computed once per key, again when anything in the key changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxr_ldm.metrics.feature_cache import FeatureCache, cache_key


def test_hit_miss_and_key_change(tmp_path: Path):
    cache = FeatureCache(tmp_path / "cache")
    calls = []

    def compute(value: float):
        def run():
            calls.append(value)
            return {"features": np.full((3, 4), value, dtype=np.float32)}

        return run

    parts = {"images": {"kind": "split", "files": "abc"}, "image_size": 64, "weights": "w1"}
    first, hit = cache.get_or_compute("real_features", parts, compute(1.0))
    again, hit_again = cache.get_or_compute("real_features", dict(parts), compute(2.0))
    assert (hit, hit_again) == (False, True) and calls == [1.0]
    np.testing.assert_array_equal(again["features"], first["features"])
    assert again["features"].dtype == np.float32

    other, hit_other = cache.get_or_compute("real_features", {**parts, "weights": "w2"}, compute(3.0))
    assert not hit_other and calls == [1.0, 3.0] and float(other["features"][0, 0]) == 3.0
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len([f for f in files if f.endswith(".npz")]) == 2 and not [f for f in files if f.endswith(".tmp")]
    assert cache_key(parts) == cache_key(dict(reversed(list(parts.items()))))  # key order does not matter


def test_disabled_and_unreadable_cache(tmp_path: Path):
    calls = []

    def compute():
        calls.append(1)
        return {"features": np.zeros((2, 2))}

    off = FeatureCache(None)
    off.get_or_compute("x", {"a": 1}, compute)
    off.get_or_compute("x", {"a": 1}, compute)
    assert len(calls) == 2 and off.path("x", {"a": 1}) is None

    cache = FeatureCache(tmp_path)
    path = cache.path("x", {"a": 1})
    path.write_bytes(b"not an npz file")
    _, hit = cache.get_or_compute("x", {"a": 1}, compute)
    assert not hit and len(calls) == 3
    assert cache.get_or_compute("x", {"a": 1}, compute)[1]  # rewritten: now a hit
