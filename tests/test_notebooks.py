"""The notebooks run top to bottom on a fresh checkout (executed with a real kernel), and the committed copies
carry their outputs, so they read on GitHub as they ran.

``sampling`` and ``evaluation`` are given no model: the first one executed trains the tiny demo model in a
folder shared through ``CXR_LDM_NOTEBOOK_WORK`` and the other finds it done (the demo skips finished steps).
"""

from __future__ import annotations

import nbformat
import pytest
from helpers import REPO
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
def notebook_work(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("notebook_work"))


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
