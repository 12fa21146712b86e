"""No dataset content leaves the machine: what the wandb (offline) and TensorBoard loggers write holds no image
and no report text of the dataset, unless ``log_dataset_images=true``.

Phantom studies prepared as MIMIC is (``data=mimic data.data_dir=<prepared folder>``), so the runs treat them
as credentialed data. Stage 1 (reconstruction grids are close copies of dataset images) and stage 2 (report
text is the conditioning, and the FID callback samples the validation reports) train with
``logger=many_loggers``; every file under ``wandb/`` and ``tensorboard/`` is scanned: every PNG in it (also the
ones inside TensorBoard's event files and wandb's run file) is searched for any dataset image, and its bytes
for any report text of the dataset. An offline wandb run counts as leaving: ``wandb sync`` uploads it later.
A run with ``log_dataset_images=true`` shows that the scan finds the images when they are there.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import run_module
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from cxr_ldm.data.datamodule import CXRDataModule

pytestmark = pytest.mark.slow

SIZE = 32
# debug=tiny (32 px, batches of 8, one epoch) on data=mimic, whose data have no phantom to build (data.phantom=null)
COMMON = ["data=mimic", "debug=tiny", "data.phantom=null", "trainer.limit_train_batches=2", "logger=many_loggers"]
PNG, IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


# ------------------------------------------------------------------------------------------------- scanners
def embedded_pngs(data: bytes) -> list[np.ndarray]:
    """Every PNG stream inside ``data`` (a PNG file, a TensorBoard event file, a wandb run file), decoded."""
    out, start = [], 0
    while (i := data.find(PNG, start)) >= 0:
        j = data.find(IEND, i)
        if j < 0:
            break
        try:
            out.append(np.asarray(Image.open(io.BytesIO(data[i : j + len(IEND)])).convert("L")))
        except OSError:
            pass
        start = j + len(IEND)
    return out


def contains_image(picture: np.ndarray, image: np.ndarray, tolerance: int = 2) -> bool:
    """``image`` appears in ``picture`` (anywhere, e.g. as a tile of a grid), up to ``tolerance`` per pixel."""
    h, w = image.shape
    if picture.shape[0] < h or picture.shape[1] < w:
        return False
    windows = sliding_window_view(picture.astype(np.int16), (h, w))
    candidates = np.argwhere(np.abs(windows[:, :, 0, 0] - int(image[0, 0])) <= tolerance)
    target = image.astype(np.int16)
    return any(np.abs(windows[y, x] - target).max() <= tolerance for y, x in candidates)


def logger_files(run: Path) -> list[Path]:
    return sorted(p for folder in ("wandb", "tensorboard") for p in (run / folder).rglob("*") if p.is_file())


def dataset_leaks(run: Path, images: list[np.ndarray], texts: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"images": [], "texts": []}
    for path in logger_files(run):
        data = path.read_bytes()
        for picture in embedded_pngs(data):
            if any(contains_image(picture, image) for image in images):
                found["images"].append(str(path.relative_to(run)))
                break
        decoded = data.decode("utf-8", errors="ignore")
        hits = [t for t in texts if t in decoded]
        if hits:
            found["texts"].append(f"{path.relative_to(run)}: {hits[0][:60]!r}")
    return found


# ------------------------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def mimic_like(tmp_path_factory, phantom_prepared) -> dict:
    root = tmp_path_factory.mktemp("privacy")
    prepared = phantom_prepared(n_studies=120, raw_size=64, size=SIZE)  # read only: shared with other tests
    dm = CXRDataModule(str(prepared), image_size=SIZE, batch_size=8, num_workers=0, pin_memory=False,
                       persistent_workers=False, p_uncond=0.0)  # fmt: skip
    dm.setup("fit")
    images = [  # every training and validation image as the runs see it, in 0..255
        (np.clip(image[0].numpy(), 0, 1) * 255).round().astype(np.uint8)
        for loader in (dm.train_dataloader(), dm.val_dataloader()) for batch in loader for image in batch["image"]
    ]  # fmt: skip
    rows = pd.concat([pd.read_csv(prepared / f"{s}.csv") for s in ("train", "validate", "test")])
    texts = sorted({t for col in ("findings", "impression") for t in rows[col].dropna() if len(t) > 40})
    return {"root": root, "prepared": prepared, "images": images, "texts": texts}


def _train(mimic_like: dict, name: str, *extra: str) -> Path:
    run = mimic_like["root"] / name
    proc = run_module("cxr_ldm.train", *COMMON, f"data.data_dir={mimic_like['prepared']}", f"hydra.run.dir={run}",
                      *extra, cwd=mimic_like["root"], env={"WANDB_MODE": "offline"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def stage1(mimic_like) -> Path:
    return _train(mimic_like, "stage1", "experiment=aekl_phantom")


def test_the_scanners_find_what_is_there(mimic_like, tmp_path):
    image = mimic_like["images"][0]
    grid = np.full((SIZE + 4, 3 * SIZE + 8), 255, np.uint8)
    grid[2 : 2 + SIZE, SIZE + 4 : 2 * SIZE + 4] = image
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    blob = b"header" + buffer.getvalue() + b"trailer" + mimic_like["texts"][0].encode()
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "run.bin").write_bytes(blob)
    found = dataset_leaks(tmp_path, mimic_like["images"], mimic_like["texts"])
    assert found["images"] == ["wandb/run.bin"] and len(found["texts"]) == 1


def test_stage1_loggers_hold_no_dataset_image_or_text(stage1, mimic_like):
    assert list((stage1 / "wandb").glob("offline-run-*")) and list((stage1 / "tensorboard").glob("events.*"))
    assert list(stage1.rglob("reconstructions/epoch_0000.png"))  # the grid is still written, on local disk
    assert dataset_leaks(stage1, mimic_like["images"], mimic_like["texts"]) == {"images": [], "texts": []}


def test_stage2_loggers_hold_no_dataset_image_or_text(stage1, mimic_like):
    run = _train(
        mimic_like, "stage2", "experiment=ldm_phantom", f"model.autoencoder_ckpt={stage1 / 'checkpoints' / 'last.ckpt'}",
        "callbacks=[ldm,fid]", "callbacks.fid.allow_random_xrv=true", "callbacks.fid.adherence=false",
        "callbacks.fid.every_n_epochs=1", "callbacks.fid.n_samples=4", "callbacks.fid.batch_size=4",
        "callbacks.sample_grid.every_n_epochs=1",
        "sampling.steps=2", "callbacks.sample_grid.n_per_prompt=1", "data.p_uncond=0.1",
    )  # fmt: skip
    assert list((run / "wandb").glob("offline-run-*/files/media/images/samples_*.png"))  # generated: may go
    assert dataset_leaks(run, mimic_like["images"], mimic_like["texts"]) == {"images": [], "texts": []}


def test_log_dataset_images_true_sends_them(mimic_like):
    run = _train(mimic_like, "allowed", "experiment=aekl_phantom", "log_dataset_images=true")
    leaks = dataset_leaks(run, mimic_like["images"], mimic_like["texts"])
    assert any(p.startswith("wandb/") for p in leaks["images"]) and any(p.startswith("tensorboard/") for p in leaks["images"])
    assert leaks["texts"] == []
