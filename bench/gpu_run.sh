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

echo "== smoke: one shape"
"$BIN/recur" gpu-bench --device cuda --cell lstm --hidden 1024 --batch 1 --steps 256 --iters 5

echo "== recur vs cuDNN"
PYTHONUNBUFFERED=1 python3 "$HERE/gpu_vs_cudnn.py" --recur "$BIN/recur" --out "$OUT" 2>&1 \
  | tee "$OUT/bench.txt"
