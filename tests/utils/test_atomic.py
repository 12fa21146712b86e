"""Atomic writes: the previous version survives a failed write, and a full disk is named as such, also when
``torch.save``'s zip writer turns the OSError into a RuntimeError."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cxr_ldm.utils.atomic import atomic_write, atomic_write_text, remove_stale_temporaries


def test_a_failed_write_leaves_the_previous_version_and_no_temporary(tmp_path):
    path = tmp_path / "file.json"
    atomic_write_text(path, "old")

    def half_then_fail(handle):
        handle.write(b"new but")
        raise RuntimeError("killed writer")

    with pytest.raises(RuntimeError, match="killed writer"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    (tmp_path / ".last.ckpt.999999.tmp").write_bytes(b"half")  # no such process
    (tmp_path / "last.ckpt").write_bytes(b"kept")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".last.ckpt.999999.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_torch_save_past_a_file_size_limit_is_a_disk_full_error(tmp_path):
    """The kernel refuses the write (EFBIG, as ENOSPC on a full disk); torch raises RuntimeError around it."""
    script = textwrap.dedent(f"""
        import resource, signal, torch
        from cxr_ldm.utils.atomic import DiskFullError, atomic_write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        try:
            atomic_write({str(tmp_path / 'big.ckpt')!r}, lambda h: torch.save({{"x": torch.zeros(100_000)}}, h),
                         what="checkpoint")
        except DiskFullError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == (
        f"no space left on the device writing the checkpoint {tmp_path / 'big.ckpt'} (File too large); the files "
        "written before are intact: free space (or raise the quota) and run the same command again"
    )
    assert list(tmp_path.iterdir()) == []
