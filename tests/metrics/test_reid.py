"""Patient re-identification, offline: a random-weight file in the format of CheXGenBench's released weights
(``torch.save`` of the Siamese network's ``state_dict``), loaded through the real code; every (generated,
training) pair is then scored independently the way CheXGenBench does, one full forward per pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as models
from PIL import Image
from torch import nn
from torchvision import transforms

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL
from cxr_ldm.metrics.reid import REID_FILE, ReIDWeightsError, SiameseReID, reid_report


class CheXGenBenchSiamese(nn.Module):
    """CheXGenBench's SiameseNetwork(network="ResNet-50", in_channels=3, n_features=128), re-typed for the test."""

    def __init__(self):
        super().__init__()
        self.model = models.resnet50(weights=None)
        self.model.fc = nn.Linear(in_features=2048, out_features=128, bias=True)
        self.fc_end = nn.Linear(128, 1)

    def forward(self, a, b):
        return self.fc_end(torch.abs(torch.sigmoid(self.model(a)) - torch.sigmoid(self.model(b))))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    net = CheXGenBenchSiamese()
    with torch.no_grad():  # as a trained head: a larger difference means less likely the same patient;
        net.fc_end.weight.copy_(-40.0 * net.fc_end.weight.abs())  # spread so probabilities differ visibly
        net.fc_end.bias.fill_(2.0)
    path = tmp_path_factory.mktemp("reid") / REID_FILE
    torch.save(net.state_dict(), path)
    return path


def _images(n: int, seed: int) -> torch.Tensor:
    """8-bit-exact 224 px images (x/255), so no resize stands between the two computations."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 224, 224), generator=g).float() / 255


def test_max_over_pairs_equals_chexgenbench_pair_scores(weights_file: Path):
    generated, train = _images(2, 0), _images(3, 1)
    generated[1] = train[2]  # a copy of a training image: its best match is that image, probability ~ max
    reid = SiameseReID.load(weights_file)
    prob, index = reid.max_probability(reid(generated), reid(train), chunk=2)  # chunks smaller than the sets

    net = CheXGenBenchSiamese()
    net.load_state_dict(torch.load(weights_file))
    net.eval()
    transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])

    def pil(x):
        return Image.fromarray((x[0].numpy() * 255).round().astype(np.uint8)).convert("RGB")

    with torch.no_grad():
        pairs = np.array([[torch.sigmoid(net(transform(pil(g))[None], transform(pil(t))[None])).item()
                           for t in train] for g in generated])  # fmt: skip
    np.testing.assert_allclose(prob, pairs.max(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(index, pairs.argmax(axis=1))
    assert index[1] == 2
    assert pairs.std() > 1e-3  # the check is not vacuous


def test_resize_follows_torchvision_on_other_sizes(weights_file: Path):
    reid = SiameseReID.load(weights_file)
    x = torch.rand(2, 1, 64, 80)
    expected = transforms.Resize((224, 224), antialias=True)((x * 255).round() / 255).repeat(1, 3, 1, 1)
    torch.testing.assert_close(reid.preprocess(x), expected)


def test_report_numbers():
    prob = np.array([0.2, 0.9, 0.55, 0.1])
    index = np.array([3, 0, 1, 2])
    out = reid_report(prob, index, real_test_max=np.array([0.1, 0.6]), max_listed=2, train_ids=["a", "b", "c", "d"],
                      generated_ids=["g0", "g1", "g2", "g3"], n_train=4, protocol={"weights": "x"})  # fmt: skip
    assert out["mean"] == pytest.approx(0.4375) and out["max"] == 0.9
    assert out["fraction_above_threshold"] == 0.5 and out["n_above_threshold"] == 2
    assert (out["n_generated"], out["n_train"]) == (4, 4)
    assert [(m["generated_id"], m["train_id"]) for m in out["most_reidentifiable"]] == [("g1", "a"), ("g2", "b")]
    assert out["real_test_to_train"]["fraction_above_threshold"] == 0.5
    assert out["real_test_to_train"]["max"] == 0.6
    assert out["generated_to_train"]["quantiles"]["0.5"] == pytest.approx(0.375)
    assert out["protocol"] == {"weights": "x"}


def test_missing_file_and_random_refused(tmp_path: Path):
    with pytest.raises(ReIDWeightsError, match=r"reid_weights='.*nope.pth' does not exist.*raman07/Patient_ReIdentification_MIMIC"):
        SiameseReID.load(tmp_path / "nope.pth")
    with pytest.raises(ReIDWeightsError, match=rf"no reid_weights=FILE given and {REID_FILE} is not in the Hugging Face cache.*allow_random_reid=true"):
        SiameseReID.load(cache_dir=tmp_path / "empty_hub")


def test_wrong_files_are_refused(tmp_path: Path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(1, 2)}, wrong)
    with pytest.raises(ReIDWeightsError, match="does not match the Siamese ResNet-50"):
        SiameseReID.load(wrong)
    pickled = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 1), pickled)
    with pytest.raises(ReIDWeightsError, match="is not a state dict file"):
        SiameseReID.load(pickled)


def test_found_in_the_hugging_face_cache(tmp_path: Path, weights_file: Path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--raman07--Patient_ReIdentification_MIMIC"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / REID_FILE).write_bytes(weights_file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    reid = SiameseReID.load(cache_dir=tmp_path / "hub")
    assert reid.weights_label.endswith(REID_FILE) and reid.fingerprint == SiameseReID.load(weights_file).fingerprint


def test_random_weights_when_allowed_are_labelled(tmp_path: Path):
    reid = SiameseReID.load(cache_dir=tmp_path / "empty_hub", allow_random=True)
    assert reid.is_random and reid.protocol()["weights"] == RANDOM_WEIGHTS_LABEL
    emb = reid(torch.rand(1, 1, 32, 32))
    assert emb.shape == (1, 128)
