#!/usr/bin/env bash
# The GPU checks, as one script: the CUDA tests (resident patches, the GPU localizer,
# batched RANSAC against OpenCV's inlier counts on real corridor matches), then
# `python -m benchmarks.bench --device cuda` (extraction, then rerank: the rerank stage
# bootstraps the corridor model at 640x480 first, minutes on a CPU).
#
# Usage: scripts/gpu_check.sh [OUTDIR] (default out/gpu_check). Writes env.txt,
# tests.log, bench_extract.{log,json} and bench_rerank.{log,json} there. PYTHON picks
# the interpreter (default python3); each step has its own time limit (seconds:
# TESTS_S, EXTRACT_S, RERANK_S) so that one slow step still leaves the others' results.
set -u
out=${1:-out/gpu_check}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$py" -c 'import torch, platform; print("python", platform.python_version(), "torch",
torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))'
    nproc
} 2>&1 | tee "$out/env.txt"
status=0
timeout "${TESTS_S:-240}" "$py" -m pytest -q -p no:cacheprovider -m gpu -rs \
    test/test_resident_patches.py test/test_batched_ransac.py 2>&1 | tee "$out/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout "${EXTRACT_S:-180}" "$py" -m benchmarks.bench --device cuda --presets speed \
    --stages extract --repeats 5 --output "$out/bench_extract.json" 2>&1 \
    | tee "$out/bench_extract.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout "${RERANK_S:-300}" "$py" -m benchmarks.bench --device cuda --presets speed \
    --stages rerank --repeats 5 --output "$out/bench_rerank.json" 2>&1 \
    | tee "$out/bench_rerank.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
