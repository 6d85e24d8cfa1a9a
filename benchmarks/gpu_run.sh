#!/usr/bin/env bash
# The GPU mode of the benchmark, as one command for a lent GPU machine (one H100 or H200:
# JAX, PyTorch and timm installed; no TensorFlow, no Keras). Keras, keras-hub and the two
# pure dependencies missing there travel as wheels in .whl/ (see benchmarks/RESULTS.md):
#
#   device run, carry [".whl"], timeout_s 540:
#       DINOV2_DEADLINE=0 DINOV3_DEADLINE=0 bash benchmarks/gpu_run.sh
#   then the DINOv2 part alone, timeout_s 300:
#       BENCH_DEADLINE=0 DINOV3_DEADLINE=0 BREAKDOWN_TIMEOUT=0 bash benchmarks/gpu_run.sh
#   then the DINOv3 part alone, timeout_s 300:
#       BENCH_DEADLINE=0 DINOV2_DEADLINE=0 BREAKDOWN_TIMEOUT=0 bash benchmarks/gpu_run.sh
#
# (its three parts at their default limits can take 11 minutes, more than one call's 10).
# ViT-B/16 at 224, mixed_bfloat16, batch 256 inference / 128 training: keras_vit on JAX with
# the fast (padded cuDNN) attention and with Keras's plain attention, then keras-hub on JAX,
# then timm + torch.compile + bf16 autocast. Each runs in its own process; the run starts no
# new one after BENCH_DEADLINE seconds (default 280) and keeps what finished. Results land in
# $OUT (or ./gpu_out). BENCH_ATTENTION=fast,fast:8,plain,head_major adds the fast path padded
# to a multiple of 8 and the head-major variant; extra arguments go to bench.py (e.g. --libs
# keras_vit,keras_hub). Then the DINOv2-B/14 features models at 224, same settings (keras_vit
# as built, keras-hub's DINOV2Backbone, timm's vit_base_patch14_dinov2; bench.py --presets
# dinov2_b14), started within DINOV2_DEADLINE seconds (default 200; 0 skips it), into
# $OUT/RESULTS_gpu_dinov2.md; DINOV2_ARGS replaces its arguments (default --presets dinov2_b14).
# Then the DINOv3-B/16 features models at 224 (keras_vit with rope="dinov3", keras-hub's
# DINOV3Backbone, timm's vit_base_patch16_dinov3; bench.py --presets dinov3_b16), started within
# DINOV3_DEADLINE seconds (default 200; 0 skips it), into $OUT/RESULTS_gpu_dinov3.md;
# DINOV3_ARGS replaces its arguments (default --presets dinov3_b16).
# Then benchmarks/breakdown.py times keras_vit's parts (patch embedding,
# attention paths incl. fast:1, fast:2 and fast:8, MLP, block, model) at batch 128, cut off after
# BREAKDOWN_TIMEOUT seconds (default 180; 0 skips it), into $OUT/breakdown.*;
# BREAKDOWN_ARGS replaces its arguments. PROFILE_TIMEOUT=240 (default 0: off) then runs
# benchmarks/op_profile.py (keras_vit's device time by HLO op, timm's by kernel, the HLO) into
# $OUT/op_profile.md and hlo.tar.gz; PROFILE_ARGS replaces its arguments. BENCH_DEADLINE=0
# skips the comparison, so `BENCH_DEADLINE=0 DINOV2_DEADLINE=0 PROFILE_TIMEOUT=240 bash
# benchmarks/gpu_run.sh` is the diagnosis alone (breakdown + profile, at most 7 minutes).
# A CPU dry run of the whole script (about 2 minutes):
#
#   OUT=/tmp/dry BENCH_NO_WHEELS=1 PYTHON=python BREAKDOWN_ARGS="--preset tiny --image-size 32
#   --batch-size 2 --precision float32 --attention plain,fast:2 --warmup 1 --repeats 1
#   --steps 1" bash benchmarks/gpu_run.sh --libs keras_vit --presets tiny --image-size 32
#   --batch-size 2 --train-batch-size 2 --precision float32 --attention fast:8,plain
#   --warmup 1 --repeats 1 --steps 1 --predict-batches 1
#
# with DINOV2_ARGS="--presets dinov2_tiny --libs keras_vit,keras_hub --image-size 32
# --batch-size 2 --train-batch-size 2 --precision float32 --warmup 1 --repeats 1 --steps 1
# --predict-batches 1" in front for the DINOv2 part (or DINOV2_DEADLINE=0 to leave it out),
# the same with dinov3_tiny as DINOV3_ARGS for the DINOv3 part (or DINOV3_DEADLINE=0),
# and PROFILE_TIMEOUT=120 PROFILE_ARGS="--preset tiny --image-size 32 --batch-size 2
# --train-batch-size 2 --precision float32 --warmup 1 --steps 1" in front to include the profile.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
if [ -z "${BENCH_NO_WHEELS:-}" ]; then  # BENCH_NO_WHEELS=1: keras is installed already
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
export KERAS_HOME=/tmp/keras_home
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import jax, torch, keras; print('jax', jax.__version__, jax.devices(), '| torch',
torch.__version__, torch.cuda.is_available(), '| keras', keras.__version__)" 2>&1 | tail -2
status=0
if [ "${BENCH_DEADLINE:-280}" != 0 ]; then
    "$PYTHON" benchmarks/bench.py --gpu --attention "${BENCH_ATTENTION:-fast,plain}" \
        --deadline "${BENCH_DEADLINE:-280}" --out "$OUT/RESULTS_gpu.md" \
        --json "$OUT/results_gpu.json" --log "$OUT/bench_log.txt" "$@" || status=1
fi
if [ "${DINOV2_DEADLINE:-200}" != 0 ]; then
    "$PYTHON" benchmarks/bench.py --gpu --deadline "${DINOV2_DEADLINE:-200}" \
        ${DINOV2_ARGS:---presets dinov2_b14} --out "$OUT/RESULTS_gpu_dinov2.md" \
        --json "$OUT/results_gpu_dinov2.json" --log "$OUT/bench_log.txt" || status=1
fi
if [ "${DINOV3_DEADLINE:-200}" != 0 ]; then
    "$PYTHON" benchmarks/bench.py --gpu --deadline "${DINOV3_DEADLINE:-200}" \
        ${DINOV3_ARGS:---presets dinov3_b16} --out "$OUT/RESULTS_gpu_dinov3.md" \
        --json "$OUT/results_gpu_dinov3.json" --log "$OUT/bench_log.txt" || status=1
fi
if [ "${BREAKDOWN_TIMEOUT:-180}" != 0 ]; then
    KERAS_BACKEND=jax timeout "${BREAKDOWN_TIMEOUT:-180}" "$PYTHON" benchmarks/breakdown.py \
        ${BREAKDOWN_ARGS:---preset b16 --batch-size 128 --precision mixed_bfloat16} --out "$OUT/breakdown.md" > "$OUT/breakdown.txt" 2>&1 || status=1
    grep -v "^[WI]0000\|^WARNING" "$OUT/breakdown.txt" | tail -20
fi
if [ "${PROFILE_TIMEOUT:-0}" != 0 ]; then
    KERAS_BACKEND=jax timeout "$PROFILE_TIMEOUT" "$PYTHON" benchmarks/op_profile.py \
        ${PROFILE_ARGS:---preset b16 --timm} --out-dir "$OUT" > "$OUT/op_profile.txt" 2>&1 \
        || status=1
    grep "^#\|^keras_vit\|^timm\|failed" "$OUT/op_profile.txt" | tail -20
fi
exit $status
