"""``CXRDataModule`` batches for fit, validate and test."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cxr_ldm.data.datamodule import CXRDataModule
from cxr_ldm.data.tokenization import EOT_TOKEN, SOT_TOKEN, tokenize


def make_dm(prepared_dir, **kw) -> CXRDataModule:
    args = dict(data_dir=str(prepared_dir), image_size=32, batch_size=4, num_workers=0, pin_memory=False, seed=7)
    args.update(kw)
    return CXRDataModule(**args)


def test_fit_batches(prepared_dir):
    dm = make_dm(prepared_dir, p_uncond=0.0)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["tokens"].shape == (4, 77) and batch["tokens"].dtype == torch.long
    assert (batch["tokens"][:, 0] == SOT_TOKEN).all()
    assert torch.equal(batch["tokens"], tokenize(batch["text"]))
    train = pd.read_csv(prepared_dir / "train.csv", dtype={"dicom_id": str}).set_index("dicom_id")
    for dicom, text in zip(batch["dicom_id"], batch["text"], strict=True):
        assert text and text in " ".join(json.loads(train.loc[dicom, "sentences"]))
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[1:] == (1, 32, 32)


def test_validate_and_test_excerpts_are_deterministic(prepared_dir):
    dm = make_dm(prepared_dir)
    dm.setup("validate")
    dm.setup("test")
    for loader in (dm.val_dataloader, dm.test_dataloader):
        first = [t for b in loader() for t in b["text"]]
        second = [t for b in loader() for t in b["text"]]
        assert first == second and len(first) > 0
    val = pd.read_csv(prepared_dir / "validate.csv")
    assert len(dm.splits["validate"]) == len(val)


def test_empty_prompt_share_tokens(prepared_dir):
    dm = make_dm(prepared_dir, p_uncond=1.0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["text"] == [""] * 4
    expected = torch.zeros(77, dtype=torch.long)
    expected[:2] = torch.tensor([SOT_TOKEN, EOT_TOKEN])
    assert all(torch.equal(t, expected) for t in batch["tokens"])  # padded with 0, as SD 2.x


def test_image_is_center_cropped_not_squashed(prepared_dir):
    dm = make_dm(prepared_dir, image_size=48)
    dm.setup("fit")
    ds = dm.splits["train"]
    row = ds.frame.set_index("dicom_id").loc["aaaa0001"]
    image = ds[int(ds.frame.index[ds.frame["dicom_id"] == "aaaa0001"][0])]["image"][0]
    # prepared at shorter side 48 from 300x400 -> 48x64; the crop keeps rows 8..56, whose top-left 8 rows
    # belong to the bright block (rows < 21 of 64 in the prepared image)
    assert (row["width"], row["height"]) == (48, 64)
    assert image[:8, :10].mean() > 0.8 and image[-8:, -10:].mean() < 0.5


def test_augmentation_changes_train_images_only_when_enabled(prepared_dir):
    plain = make_dm(prepared_dir)
    plain.setup("fit")
    aug = make_dm(prepared_dir, augment={"enabled": True, "degrees": 10.0})
    aug.setup("fit")
    torch.manual_seed(0)
    a, b = plain.splits["train"][0]["image"], aug.splits["train"][0]["image"]
    assert a.shape == b.shape and not torch.equal(a, b)
    assert aug.splits.get("validate") is None or aug.splits["validate"].augment is None


def test_missing_prepared_folder_error(tmp_path):
    dm = make_dm(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="cxr_ldm.prepare"):
        dm.setup("fit")
