"""A wheel of the project starts its commands from any folder: the Hydra configs ship inside the package.

The configs are edited in ``conf/`` at the repository root and pyproject's ``package-dir`` maps that folder to
``cxr_ldm.conf``, so the wheel carries them as ``cxr_ldm/conf/``. The wheel is built from a copy of the sources,
installed with ``--no-deps`` into a fresh venv that sees this environment's libraries (a ``.pth`` line: not
its editable install of cxr_ldm), and every command is started from an empty folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import CONF_DIR, REPO

pytestmark = pytest.mark.slow

# `python -m` from outside the repository (the console scripts below run every command)
COMMANDS = ["cxr_ldm.phantom", "cxr_ldm.sample"]


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("cxr_ldm", "conf"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                  "-w", str(dist), str(src)], cwd=tmp)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("cxr_ldm-*.whl")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    assert made.returncode == 0, made.stderr[-2000:]
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip())
    # this environment's libraries (torch, lightning, ...) without its editable cxr_ldm: a plain path entry
    # does not run the .pth files of that folder, so the editable finder stays off
    (site / "_cxr_ldm_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp)
    assert pip.returncode == 0, pip.stderr[-3000:]
    outside = tmp / "elsewhere"
    outside.mkdir()
    return {"wheel": wheel, "python": python, "site": site, "cwd": outside, "venv": venv}


def test_the_configs_live_at_the_top_level():
    assert CONF_DIR == REPO / "conf" and (CONF_DIR / "train.yaml").is_file()
    assert not (REPO / "cxr_ldm" / "conf").exists(), "one copy of the configs: conf/ at the repository root"


def test_the_wheel_holds_every_config(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    configs = sorted(CONF_DIR.rglob("*.yaml"))
    assert len(configs) > 50
    for config in configs:
        assert f"cxr_ldm/conf/{config.relative_to(CONF_DIR)}" in names, config
    assert "cxr_ldm/metrics/report_rules.yaml" in names  # the report labeler's data


def test_pyproject_names_every_package_of_the_tree():
    """The package list is written out (conf/ is mapped into cxr_ldm): a new package must be added there."""
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    tree = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "cxr_ldm").rglob("__init__.py")}
    tree |= {".".join(("cxr_ldm", *p.parent.relative_to(REPO).parts)) for p in CONF_DIR.rglob("__init__.py")}
    assert set(setuptools["packages"]) == tree
    assert setuptools["package-dir"] == {"cxr_ldm.conf": "conf"}


def test_a_command_from_the_wheel_writes_its_files(installed):
    """Not only --help: the installed phantom command composes its config from the wheel and writes studies."""
    out = installed["cwd"] / "phantom"
    ran = _run([str(installed["venv"] / "bin" / "cxr-ldm-phantom"), f"out_dir={out}", "n_studies=3", "size=32",
                "num_workers=1"], installed["cwd"])  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert len(list((out / "files").rglob("*.jpg"))) >= 3
    assert (out / "mimic-cxr-2.0.0-split.csv.gz").is_file() and (out / "phantom_findings.csv.gz").is_file()


def test_the_installed_package_is_the_wheel(installed):
    where = _run([str(installed["python"]), "-c", "import cxr_ldm; print(cxr_ldm.__file__)"], installed["cwd"])
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed["site"])


@pytest.mark.parametrize("module", COMMANDS)
def test_commands_start_from_a_folder_outside_the_repository(installed, module):
    helped = _run([str(installed["python"]), "-m", module, "--help"], installed["cwd"])
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert helped.stdout.startswith(f"python -m {module} ") and "== Options" in helped.stdout


# each console script's --help: its usage, then options a user sets, with what they mean
HELP = {
    "cxr-ldm-train": ["python -m cxr_ldm.train experiment=NAME", "optimized_metric:", "experiment: aekl,"],
    "cxr-ldm-prepare": ["python -m cxr_ldm.prepare mimic_root=DIR", "reports: ???", "# MIMIC-CXR-JPG root"],
    "cxr-ldm-phantom": ["python -m cxr_ldm.phantom out_dir=DIR", "n_studies:"],
    "cxr-ldm-cache-latents": ["python -m cxr_ldm.cache_latents experiment=ldm model.autoencoder_ckpt=AEKL.ckpt",
                              "Its options are those of python -m cxr_ldm.train:", "== Options", "model: aekl,"],
    "cxr-ldm-sample": ["python -m cxr_ldm.sample model=PATH", "n_per_prompt: 4", "sampling:", "guidance_scale: null"],
    "cxr-ldm-evaluate": ["python -m cxr_ldm.evaluate out_dir=DIR", "metrics:", "sampling:"],
    "cxr-ldm-report": ["usage: python -m cxr_ldm.report", "--sweep-dir"],
    "cxr-ldm-export": ["python -m cxr_ldm.export ckpt=ldm.ckpt out_dir=DIR", "overwrite:"],
    "cxr-ldm-demo": ["python -m cxr_ldm.demo out_dir=DIR", "n_studies: 2000"],
    "cxr-ldm-app": ["python -m cxr_ldm.app model=PATH", "host: 127.0.0.1"],
}


@pytest.mark.parametrize("script", list(HELP))
def test_every_console_script_prints_its_options(installed, script):
    helped = _run([str(installed["venv"] / "bin" / script), "--help"], installed["cwd"])
    assert helped.returncode == 0, helped.stderr[-3000:]
    for text in HELP[script]:
        assert text in helped.stdout, (text, helped.stdout[:3000])
    assert "$$" not in helped.stdout and "${command_" not in helped.stdout  # the template filled, $ unescaped


def test_the_help_covers_every_console_script():
    import tomllib

    assert set(HELP) == set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def test_train_composes_an_experiment_from_the_installed_configs(installed):
    """Through the console script: the ldm experiment reaches the shared sampling group (pkg:// search path)."""
    script = installed["venv"] / "bin" / "cxr-ldm-train"
    job = _run([str(script), "--cfg", "job", "experiment=ldm"], installed["cwd"])
    assert job.returncode == 0, job.stderr[-3000:]
    assert "task_name: ldm" in job.stdout and "sampling:" in job.stdout
