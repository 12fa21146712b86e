"""The notebooks run top to bottom on a fresh checkout (executed with a real kernel), and the committed copies
carry their outputs, so they read on GitHub as they ran.

``sampling`` and ``evaluation`` are given no model: they run the tiny demo in a folder shared through
``CXR_LDM_NOTEBOOK_WORK`` and find its training done (the demo skips finished steps): the folder starts with the
checkpoints and data of the suite's own tiny demo run (``tiny_demo`` in conftest.py, checked by test_demo.py),
trained with the same number of studies and image size as the notebooks ask for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from helpers import DEMO_STUDIES, REPO
from nbclient import NotebookClient

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# what each notebook must print when it runs, and how many pictures it must draw at least
EXPECTED = {
    "phantom_tour": (["torch.Size([4, 1, 64, 64]) torch.Size([4, 77])"], 1),
    "sampling": (
        [
            "samplers: ddim, dpm++2m, unipc, euler, pndm, ddpm",
            "torch.Size([4, 1, 32, 32]) torch.float32",
            "the same call twice, bit for bit: True",
            "8-bit images equal: True",
            "explicit initial noise (latents=) instead of seed 9, bit for bit: True",
            "prompt 1 is empty",
            "prompt 2 has 182 tokens, over the 77 the text encoder reads",
        ],
        3,
    ),
    "evaluation": (
        ["blocks: fid, kid, diversity, adherence, samples, settings", "FID ", "plumbing only"],
        2,
    ),
}


@pytest.fixture(scope="session")
def notebook_work(tmp_path_factory, tiny_demo) -> str:
    work = tmp_path_factory.mktemp("notebook_work")
    out, _, proc = tiny_demo
    if proc.returncode == 0:  # else the notebooks train their own (and test_demo.py reports the failure)
        (work / "tiny_demo").mkdir()
        for name in ("aekl.ckpt", "ldm.ckpt"):
            shutil.copy(out / name, work / "tiny_demo" / name)
        prepared = Path("data") / "phantom" / f"prepared_{DEMO_STUDIES}_32"
        shutil.copytree(out / prepared, work / "tiny_demo" / prepared)
    return str(work)


def outputs(notebook) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, notebook_work, monkeypatch):
    for name in ("CXR_LDM_MODEL", "CXR_LDM_DATA", "CXR_LDM_XRV_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)  # as on a fresh checkout: the notebook makes its own model
    monkeypatch.setenv("CXR_LDM_NOTEBOOK_WORK", notebook_work)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    found = outputs(notebook)
    assert not [o for o in found if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in found if o.output_type == "stream")
    lines, n_pictures = EXPECTED.get(path.stem, ([], 1))
    for line in lines:
        assert line in text, line
    assert sum("image/png" in o.get("data", {}) for o in found) >= n_pictures


EXECUTED = [p for p in NOTEBOOKS if p.stem in ("sampling", "evaluation")]


@pytest.mark.parametrize("path", EXECUTED, ids=[p.stem for p in EXECUTED])
def test_committed_notebooks_carry_their_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), "commit the notebook executed"
    assert not [o for o in outputs(notebook) if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs(notebook)) >= EXPECTED.get(path.stem, ([], 1))[1]
