"""``prepare`` on a disk that fills up: one line, only complete images left, and a re-run finishes the job.

The prepared folder sits on a small tmpfs (a real full disk, ENOSPC from the kernel); where none can be
mounted (not root), PIL's PNG writer is made to fail with ENOSPC after a few images instead. Before the fix a
write error counted the image as "unreadable" and the run "succeeded" with the rest of the dataset skipped.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import small_tmpfs
from PIL import Image

from cxr_ldm.data.preparation import prepare_dataset
from cxr_ldm.phantom.studies import generate_phantom
from cxr_ldm.utils.atomic import DiskFullError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom_raw")
    generate_phantom(out, n_studies=60, size=64, seed=3, num_workers=1, progress=False)
    return out


def _prepare_cli(raw: Path, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxr_ldm.prepare", f"mimic_root={raw}", f"reports={raw / 'reports'}", f"out_dir={out}",
         "size=64", "num_workers=1"],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _images(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted((folder / "images").rglob("*.png"))}


def _assert_complete(folder: Path) -> int:
    """Every image there opens and decodes fully; no temporary file is left; returns how many."""
    count = 0
    for path in (folder / "images").rglob("*"):
        assert not path.name.endswith(".tmp"), path
        if path.suffix == ".png":
            with Image.open(path) as im:
                im.load()
            count += 1
    return count


def test_a_full_disk_stops_prepare_and_a_rerun_finishes(raw, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    prepare_dataset(raw, raw / "reports", reference, size=64, num_workers=1, progress=False)
    total = len(_images(reference))
    disk = tmp_path / "disk"
    with small_tmpfs(disk, "96k") as mounted:
        out = disk / "prepared"
        if mounted:
            failed = _prepare_cli(raw, out, tmp_path)
            assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
            assert "Traceback" not in failed.stderr
            message = failed.stderr.strip().splitlines()[-1]
            assert message.startswith("error: no space left on the device writing the prepared image "), message
            assert "images are written, complete, and a re-run reuses them" in message
        else:  # PIL's writer fails as a full disk does, after 5 images
            original, calls = Image.Image.save, {"n": 0}

            def full_disk_save(self, fp, *args, **kwargs):
                calls["n"] += 1
                if calls["n"] > 5:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return original(self, fp, *args, **kwargs)

            monkeypatch.setattr(Image.Image, "save", full_disk_save)
            with pytest.raises(DiskFullError, match="5 of .* images are written"):
                prepare_dataset(raw, raw / "reports", out, size=64, num_workers=1, progress=False)
            monkeypatch.setattr(Image.Image, "save", original)
        done = _assert_complete(out)
        assert 0 < done < total
        assert not (out / "train.csv").exists()  # the split files come last: never a half-prepared dataset
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
            again = _prepare_cli(raw, out, tmp_path)
            assert again.returncode == 0, again.stderr[-2000:]
            assert f"{done} reused from an earlier run" in again.stdout
        else:
            result = prepare_dataset(raw, raw / "reports", out, size=64, num_workers=1, progress=False)
            assert result.reused == done
        assert _images(out) == _images(reference)
        for split in ("train", "validate", "test"):
            pd.testing.assert_frame_equal(pd.read_csv(out / f"{split}.csv"), pd.read_csv(reference / f"{split}.csv"))
