#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one run on an H100/H200-class machine (about 9 minutes).
#
#   bash benchmarks/download_wheels.sh                 # once, where a registry is reachable: fills wheels/
#   OUT=/some/folder bash benchmarks/gpu_suite.sh       # on the GPU machine, from the repository root
#
# The GPU machine needs torch, torchvision and lightning; what it lacks of the rest (monai, hydra, open_clip,
# ...) is installed offline from wheels/ into .gpu_site/ (never over what it has). Results go to $OUT: one
# <step>.txt (the printed table), <step>.json and <step>.err per step, suite.log with every table, env.txt.
# Steps run in priority order within SUITE_BUDGET_S seconds (default 540); a step that would not fit is
# skipped and logged, so a short run still has the most important figures. SUITE_ONLY="step step" runs only
# those steps (e.g. a second call for what the first skipped). SUITE_DEVICE=cpu SUITE_NETS=tiny runs the same
# steps on tiny networks on a CPU in a few minutes: a smoke test of the suite itself, no figures.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
PY=${PYTHON:-python3}
BUDGET=${SUITE_BUDGET_S:-540}
ONLY=${SUITE_ONLY:-}
DEVICE=${SUITE_DEVICE:-cuda}
NETS=${SUITE_NETS:-reference}
SIZE=512
ATTENTION=(--dtype bf16 --batch 12)
if [ "$NETS" = tiny ]; then SIZE=64; ATTENTION=(--dtype fp32 --batch 2 --scale 8 --repeats 2); fi
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/cxr_ldm_gpu_suite.XXXXXX)
START=$(date +%s)
export PYTHONPATH="$PWD/.gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline TORCHINDUCTOR_CACHE_DIR="$WORK/inductor" PYTHONUNBUFFERED=1

log() { echo "[$(date +%T)] $*" | tee -a "$OUT/suite.log"; }

# step NAME LIMIT_S NEEDS_S ARGS...: run `python ARGS` with a timeout unless it would overrun the budget
step() {
  local name=$1 limit=$2 needs=$3
  shift 3
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt "$needs" ]; then
    log "SKIP $name: ${left}s left of the ${BUDGET}s budget, it needs about ${needs}s"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "START $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=20 "$limit" "$PY" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"
  local rc=$?
  log "END $name rc=$rc after $(($(date +%s) - START))s"
  grep -E '^(\||stage=|device=|phantom|UNet|NOTE|[0-9]+ synthetic)' "$OUT/$name.txt" | tee -a "$OUT/suite.log"
  [ "$rc" -ne 0 ] && tail -n 5 "$OUT/$name.err" | tee -a "$OUT/suite.log"
}

log "environment"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1
  "$PY" -c "import sys, torch, platform; print('python', sys.version.split()[0], platform.platform()); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); \
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"
  "$PY" benchmarks/install_wheels.py wheels .gpu_site
  "$PY" -c "import lightning, monai, hydra, open_clip, torchvision; print('lightning', lightning.__version__, \
'monai', monai.__version__, 'hydra', hydra.__version__, 'open_clip', open_clip.__version__, 'torchvision', torchvision.__version__)"
  nproc; free -g | head -2
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$OUT/suite.log"

TEXT="$WORK/open_clip_pytorch_model.bin"  # the random ViT-H-14 tower file, written once by the first stage-2 step
LDM=(benchmarks/train_step.py --stage ldm --nets "$NETS" --device "$DEVICE" --work "$WORK" --text-weights "$TEXT")
AEKL=(benchmarks/train_step.py --stage aekl --nets "$NETS" --device "$DEVICE" --work "$WORK")

# 1. stage 2 at 512 px, reference networks: ours (latent cache, fast path) vs the same maths by hand vs the reference
step ldm_reference 200 120 "${LDM[@]}" --cache on --baselines plain,reference --steps 10 --warmup 4 --rounds 3 \
  --json "$OUT/ldm_reference.json"
# 2. stage 1 at 512 px (GAN step and LPIPS in every step)
step aekl_reference 200 100 "${AEKL[@]}" --baselines plain,reference --steps 8 --warmup 3 --rounds 3 \
  --json "$OUT/aekl_reference.json"
# 3. torch.compile of the UNet: gain per step and compile time (first step), against the eager fast path
step ldm_compile 240 150 "${LDM[@]}" --cache on --compile on --variant model.compile=false --baselines none \
  --steps 10 --warmup 4 --rounds 2 --json "$OUT/ldm_compile.json"
# 4. which attention kernel the 512- and 768-wide heads get, and heads of 64
step attention 60 30 benchmarks/attention.py --device "$DEVICE" "${ATTENTION[@]}" --json "$OUT/attention.json"
# 5. stage 2 ablations: each switch off alone, online encoding, 64-wide heads
step ldm_ablations 200 120 "${LDM[@]}" --cache on --baselines none --steps 8 --warmup 3 --rounds 2 \
  --variant cache=off --variant model.speed.sdpa=false --variant model.speed.channels_last=false \
  --variant model.speed.tf32=false --variant model.speed.fused_adam=false --variant model.speed.frozen_bf16=false \
  --variant ++trainer.benchmark=false --variant "model.unet.num_head_channels=[0,64,64]" --json "$OUT/ldm_ablations.json"
# 6. stage 1: gradient checkpointing (memory for compute), channels_last, batch 24
step aekl_ablations 150 80 "${AEKL[@]}" --baselines none --steps 6 --warmup 3 --rounds 2 \
  --variant model.gradient_checkpointing=true --variant model.speed.channels_last=false \
  --variant "data.batch_size=24 model.gradient_checkpointing=true" --json "$OUT/aekl_ablations.json"
# 7. torch.compile of the autoencoder in stage 1
step aekl_compile 200 120 "${AEKL[@]}" --compile on --variant model.compile=false --baselines none --steps 6 \
  --warmup 3 --rounds 2 --json "$OUT/aekl_compile.json"
# 8. building the latent cache at 512 px (synthetic prepared images: the phantom renderer needs scipy)
step cache_build 90 45 benchmarks/prepare.py --synthetic 1024 --size "$SIZE" --workers 8 \
  --latent-cache "$NETS" --device "$DEVICE" --batch-size 32 --work "$WORK/prepare" --json "$OUT/cache_build.json"

log "done in $(($(date +%s) - START))s; results in $OUT"
rm -rf "$WORK"
