"""Install the carried wheels/ into a target folder, offline: only projects this Python lacks, only compatible wheels.

    python benchmarks/install_wheels.py wheels .gpu_site      # then PYTHONPATH=.gpu_site:$PYTHONPATH

A project that is already importable (e.g. a newer torchvision) is left alone, so nothing the machine has is
replaced; of several wheels of one project (regex for CPython 3.10 ... 3.13) the one whose tags match is taken.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename


def main() -> int:
    wheels, target = Path(sys.argv[1]), Path(sys.argv[2])
    if not wheels.is_dir():
        print(f"no {wheels}/ folder: run `bash benchmarks/download_wheels.sh` where a registry is reachable and carry it")
        return 1
    supported = set(sys_tags())
    installed = {canonicalize_name(d.metadata["Name"]) for d in md.distributions()}
    chosen: dict[str, Path] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name, _, _, tags = parse_wheel_filename(wheel.name)
        if name in installed:
            print(f"have {name} {md.version(name)}: skipping {wheel.name}")
        elif tags & supported and name not in chosen:
            chosen[name] = wheel
    missing = sorted({parse_wheel_filename(w.name)[0] for w in wheels.glob("*.whl")} - installed - set(chosen))
    if missing:
        print(f"no compatible wheel for {missing} (Python {sys.version.split()[0]})")
    if not chosen:
        return 0 if not missing else 1
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target)]
    print("installing", ", ".join(w.name for w in chosen.values()))
    return subprocess.call(command + [str(w) for w in chosen.values()])


if __name__ == "__main__":
    sys.exit(main())
