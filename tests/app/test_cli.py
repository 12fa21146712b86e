"""``python -m cxr_ldm.app``'s own messages: no gradio, no model; and its defaults (127.0.0.1, port 7860)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import compose_config, run_module

from cxr_ldm.app import INSTALL_HINT

# `import gradio` fails as it does where the extra is not installed (sys.modules[name] = None blocks the import)
WITHOUT_GRADIO = (
    "import runpy, sys; sys.modules['gradio'] = None; sys.argv = ['cxr_ldm.app', *sys.argv[1:]]; "
    "runpy.run_module('cxr_ldm.app', run_name='__main__')"
)


def test_without_gradio_it_says_how_to_install_it_in_one_line(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_GRADIO, "model=whatever.ckpt"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == INSTALL_HINT
    assert 'pip install -e ".[app]"' in INSTALL_HINT


def test_missing_or_wrong_model_is_one_clear_message(tmp_path: Path):
    missing = run_module("cxr_ldm.app", cwd=tmp_path, timeout=300)
    assert missing.returncode == 2 and "missing required option(s): model=" in missing.stderr

    wrong = run_module("cxr_ldm.app", f"model={tmp_path / 'nope.ckpt'}", cwd=tmp_path, timeout=300)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].startswith(f"error: model not found: '{tmp_path / 'nope.ckpt'}'")


def test_it_serves_this_machine_only_unless_told_otherwise():
    cfg = compose_config("app", ["model=m.ckpt"], inference=True)
    opened = compose_config("app", ["model=m.ckpt", "host=0.0.0.0", "port=8000"], inference=True)
    assert (cfg.host, cfg.port, cfg.model) == ("127.0.0.1", 7860, "m.ckpt")
    assert (opened.host, opened.port) == ("0.0.0.0", 8000)
