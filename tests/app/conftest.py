"""Fixtures of the app tests: the tiny trained LDM (prompt-dependent, jittered) and the real command serving it.
(``trained_ldm_ckpt`` comes from ``ldm_fixtures``, which the test modules register as a plugin.)

``app_server`` starts ``python -m cxr_ldm.app`` as a user would, on a free port of 127.0.0.1 only, waits (at
most two minutes, polling twice a second) until the page answers, and stops the process afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 120
APP_ARGS = ["max_images=6", "max_steps=60", "device=cpu", "title=Test app"]


@dataclass
class AppServer:
    url: str
    port: int
    model: Path
    process: subprocess.Popen
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp / "gradio_tmp"), TMPDIR=str(tmp))  # fmt: skip


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app did not answer on {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def app_ckpt(jittered_ckpt: Path) -> Path:
    """The tiny trained LDM with jittered UNet weights (``ldm_fixtures.jittered_ckpt``): MONAI zero-initialises
    the attention outputs, so without the jitter the images would not depend on the prompt."""
    return jittered_ckpt


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory, app_ckpt: Path):
    tmp = tmp_path_factory.mktemp("app")
    port = free_port()
    log = tmp / "app.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cxr_ldm.app", f"model={app_ckpt}", f"port={port}", *APP_ARGS],
            cwd=tmp, env=app_env(tmp), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
        yield AppServer(url, port, app_ckpt, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
