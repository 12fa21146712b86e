#!/usr/bin/env bash
# Fill wheels/ (git-ignored) with the packages benchmarks/gpu_suite.sh installs on a GPU machine that has torch,
# torchvision and lightning but no registry. Run it here, where pip reaches a registry:
#   bash benchmarks/download_wheels.sh          # then carry wheels/ to the GPU machine with the working tree
# Pure-Python wheels at the versions this project is tested with; regex (compiled) for CPython 3.10 to 3.13;
# antlr4-python3-runtime 4.9.3 (hydra's parser runtime) exists only as an sdist, so its wheel is built here.
# pandas (the data layer; only the latent-cache build step needs it) as 2.2.3, which runs on numpy 1.x and 2.x,
# for CPython 3.10 to 3.12 (about 13 MB each: the carry limit is 64 MiB for everything).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p wheels
PURE=(
  monai==1.6.1 einops==0.8.2 hydra-core==1.3.8 omegaconf==2.3.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  lpips==0.1.4 timm==1.0.31 huggingface_hub==2.4.0 safetensors==0.8.0 python-dateutil==2.9.0.post0 six==1.17.0
  pytz==2025.2 tzdata==2025.2
)
"$PY" -m pip download -q --no-deps -d wheels "${PURE[@]}"
"$PY" -m pip wheel -q --no-deps -w wheels antlr4-python3-runtime==4.9.3
for version in 3.10 3.11 3.12 3.13; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels regex
done
for version in 3.10 3.11 3.12; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels pandas==2.2.3
done
ls -la wheels
du -sh wheels
