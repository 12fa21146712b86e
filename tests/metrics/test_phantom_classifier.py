"""The phantom adherence classifier: trained on rendered images, it reads findings off real phantom images."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_ldm.metrics.adherence import PhantomJudge, score_against_labels
from cxr_ldm.metrics.phantom_classifier import (
    PhantomClassifierSettings,
    classifier_cache_file,
    load_or_train_phantom_classifier,
    render_phantom_image,
)
from cxr_ldm.metrics.sources import image_batches, split_set
from cxr_ldm.phantom.schema import FINDING_COLUMNS


def real_phantom_scores(classifier, prepared: Path):
    """Classifier scores and ground truth of every prepared phantom image (none was seen in training)."""
    scores, labels = [], []
    for split in ("train", "validate", "test"):
        images = split_set(prepared, split)
        assert images.truth is not None  # found through prepare_report.json -> the raw phantom tree
        scores += [
            PhantomJudge(classifier).scores(batch) for batch in image_batches(images, 64, batch_size=64)
        ]
        labels.append(PhantomJudge.labels_from_truth(images.truth))
    return torch.cat(scores).numpy(), np.concatenate(labels)


@pytest.mark.slow
def test_real_phantom_images_of_each_finding_are_recognised(phantom_classifier, phantom_dirs):
    _, prepared = phantom_dirs
    scores, labels = real_phantom_scores(phantom_classifier, prepared)
    result = score_against_labels(FINDING_COLUMNS, scores, labels)
    for column, r in result["per_finding"].items():
        assert r["n_present"] >= 10, column
        assert r["auroc"] >= 0.8, (column, r)  # chance is 0.5
        assert r["accuracy"] >= 0.85, (column, r)
    assert result["mean_auroc"] >= 0.93


@pytest.mark.slow
def test_the_trained_classifier_is_cached_by_its_settings(phantom_classifier, classifier_cache: Path):
    settings = phantom_classifier.settings
    path = classifier_cache_file(classifier_cache, settings)
    assert path.is_file() and phantom_classifier.info["cache_file"] == str(path)
    loaded, cached = load_or_train_phantom_classifier(settings, classifier_cache, progress=False)
    assert cached
    batch = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.predict(batch), phantom_classifier.predict(batch))
    assert loaded.info["settings"] == asdict(settings)
    assert loaded.info["validation"]["cardiomegaly"] == phantom_classifier.info["validation"]["cardiomegaly"]
    assert classifier_cache_file(classifier_cache, replace(settings, epochs=7)) != path
    with pytest.raises(ValueError, match="trained at 64 px"):
        loaded.predict(torch.rand(1, 1, 32, 32))


def test_rendered_images_match_the_prepared_dataset_pipeline(phantom_dirs):
    """Training images have the size, range and look of prepared phantom images (render -> JPEG -> resize)."""
    _, prepared = phantom_dirs
    settings = PhantomClassifierSettings(image_size=64)
    rendered = np.stack([render_phantom_image({}, np.random.default_rng(s), settings) for s in range(20)])
    train = split_set(prepared, "train")
    assert train.extra["raw_size"] == 128  # the phantom tree's JPEG size, which the classifier renders at
    real = next(iter(image_batches(train, 64, batch_size=20))).numpy()[:, 0] * 255
    assert rendered.shape == (20, 64, 64) and rendered.dtype == np.uint8
    assert abs(rendered.mean() - real.mean()) < 15 and abs(rendered.std() - real.std()) < 10
