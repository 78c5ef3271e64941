#!/usr/bin/env bash
# The one GPU-machine call of the CUDA issue: GPU tests, then recur against cuDNN.
#
# Runs on the GPU machine (which has no Rust toolchain): the binaries are built elsewhere with
#   cargo build --release -p recur-cli --features cuda
#   cargo test --release -p recur-cuda --no-run      # the vs_cpu test executable
# and copied into BIN_DIR (recur, vs_cpu). Writes logs and JSON into OUT_DIR; prints the ratio
# table last. Usage: bash bench/gpu_run.sh BIN_DIR OUT_DIR
set -uo pipefail
BIN=${1:?BIN_DIR}
OUT=${2:?OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
head -12 "$OUT/nvidia-smi.txt"
# cudarc loads libcuda, libcublas and libnvrtc at run time by name: the toolkit's first (its
# NVRTC matches the driver's PTX version), else the copies PyTorch's wheels carry.
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
for lib in libcublas.so.13 libnvrtc.so.13; do
  if ! ldconfig -p | grep -q "$lib" && ! ls /usr/local/cuda/lib64/$lib >/dev/null 2>&1; then
    f=$(find /usr/local /opt /usr/lib -name "$lib*" 2>/dev/null | head -1)
    [ -n "$f" ] && export LD_LIBRARY_PATH="$(dirname "$f"):${LD_LIBRARY_PATH:-}"
  fi
done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

echo "== GPU tests (recur-cuda vs the CPU stack)"
"$BIN/vs_cpu" --nocapture --test-threads=1 2>&1 | tee "$OUT/tests.txt"
echo "tests exit code: ${PIPESTATUS[0]}"

echo "== memcheck: 12 cases (4 fixed, 8 random) under compute-sanitizer (out-of-bounds and misaligned accesses)"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
RECUR_CUDA_TEST_CASES=8 timeout 120 "$CS" --tool memcheck --print-limit 5 \
  "$BIN/vs_cpu" gpu_matches_cpu --nocapture 2>&1 | tail -8 | tee "$OUT/memcheck.txt"

echo "== recur vs cuDNN"
PYTHONUNBUFFERED=1 python3 "$HERE/gpu_vs_cudnn.py" --recur "$BIN/recur" --out "$OUT" 2>&1 \
  | tee "$OUT/bench.txt"

echo "== small batches: the fused step kernel (small-batch 8) against cuBLAS + cell kernel (0)"
for hb in 1024:1 1024:8 256:1; do
  for sb in 8 0; do
    "$BIN/recur" gpu-bench --device cuda --cell lstm --hidden ${hb%:*} --batch ${hb#*:} \
      --steps 100 --iters 10 --small-batch $sb --json
  done
done 2>&1 | tee "$OUT/small.txt"

