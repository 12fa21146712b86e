"""Suite-wide settings: nothing may reach the network, runs share one small phantom data folder, and the tests'
phantom datasets are built once per session by one builder (``phantom_prepared``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

TESTS = Path(__file__).resolve().parent
# Folders whose files share one expensive session fixture (a SLURM cluster, an app server): one worker runs them.
ONE_WORKER_FOLDERS = ("scale", "app")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup`` (.ci/run): each test file runs on one worker, so its module
    fixtures are built once, and the folders above run whole on one worker."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        rel = path.relative_to(TESTS) if path.is_relative_to(TESTS) else path
        group = rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in ONE_WORKER_FOLDERS else str(rel)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """``paths.data_dir`` for end-to-end runs: phantom data are generated there once, on first use."""
    return tmp_path_factory.mktemp("cxr_data")


@pytest.fixture(scope="session")
def phantom_prepared(tmp_path_factory) -> Callable[..., Path]:
    """``phantom_prepared(n_studies=120, raw_size=64, size=32) -> prepared folder`` (its raw studies in
    ``<folder>/../raw``): phantom studies generated and prepared as the runs do on first use
    (``ensure_phantom_prepared``), once per session for each size. Tests read them; a test that alters its data
    builds its own copy."""
    from cxr_ldm.phantom.bootstrap import ensure_phantom_prepared

    built: dict[tuple[int, int, int], Path] = {}

    def build(n_studies: int = 120, raw_size: int = 64, size: int = 32) -> Path:
        key = (n_studies, raw_size, size)
        if key not in built:
            root = tmp_path_factory.mktemp(f"phantom_{n_studies}_{raw_size}_{size}")
            built[key] = ensure_phantom_prepared(root / "prepared", root / "raw", n_studies=n_studies,
                                                 raw_size=raw_size, size=size, num_workers=1)  # fmt: skip
        return built[key]

    return build

