"""``run_command``: a user error is one line on stderr even when the run's log file cannot be written."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from cxr_ldm.utils.cli import run_command

FULL_DEVICE = Path("/dev/full")  # every write fails with ENOSPC, as a file on a full disk


@pytest.mark.skipif(not FULL_DEVICE.exists(), reason="needs /dev/full")
def test_a_log_file_on_a_full_disk_does_not_bury_the_error_line_under_tracebacks(capsys, monkeypatch):
    monkeypatch.delenv("CXR_LDM_TRACEBACK", raising=False)
    monkeypatch.setattr(logging, "raiseExceptions", True)  # Python's default, restored after the test
    handler = logging.FileHandler(FULL_DEVICE)
    logger = logging.getLogger("cxr_ldm.test_run_command")
    logger.addHandler(handler)

    def task(cfg):
        logger.warning("could not update the run record")  # the record the full disk cannot take
        raise ValueError("no space left on the device writing the checkpoint x.ckpt")

    try:
        with pytest.raises(SystemExit) as stop:
            run_command(task, None)
    finally:
        logger.removeHandler(handler)
        with contextlib.suppress(OSError):  # its buffer cannot be flushed either
            handler.close()
    assert stop.value.code == "error: no space left on the device writing the checkpoint x.ckpt"
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err
