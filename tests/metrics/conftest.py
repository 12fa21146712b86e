"""Fixtures of the metric tests: a small phantom dataset (64 px, as conf/data/phantom.yaml) and a classifier.

Torch runs single-threaded here: on a shared 2-core machine small convolutions are many times slower with
two threads competing with other processes than with one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def phantom_dirs(phantom_prepared) -> tuple[Path, Path]:
    """``(raw_dir, prepared_dir)``: 300 phantom studies rendered at 128 px, prepared at 64 px (about 3 s)."""
    prepared = phantom_prepared(n_studies=300, raw_size=128, size=64)
    return prepared.parent / "raw", prepared


@pytest.fixture(scope="session")
def classifier_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("classifiers")


@pytest.fixture(scope="session")
def phantom_classifier(classifier_cache: Path):
    """The adherence classifier at 64 px with a test-sized training budget (about 20 s on one core)."""
    from cxr_ldm.metrics.phantom_classifier import PhantomClassifierSettings, load_or_train_phantom_classifier

    settings = PhantomClassifierSettings(image_size=64, n_train=1200, n_val=200, epochs=6)
    classifier, cached = load_or_train_phantom_classifier(settings, classifier_cache, progress=False)
    assert not cached
    return classifier
