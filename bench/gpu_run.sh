#!/usr/bin/env bash
# One call on a GPU machine: every GPU check, then recur against cuDNN.
#
# Runs on the GPU machine (no Rust toolchain there): build first on a CPU machine with
#   bash bench/gpu_build.sh          # -> target/gpu-bin/{recur, vs_cpu, model_vs_cpu, nvrtc_compiles}
# then, from the repository root on the GPU machine (device tool: carry target/gpu-bin):
#   bash bench/gpu_run.sh target/gpu-bin "$OUT"
# Stages (each logged to OUT_DIR; a failing stage does not stop the others):
#   1. NVRTC compiles every kernel source for sm_80/90/100 with the machine's libnvrtc;
#   2. the model, optimizer, clipping and PyTorch-fixture tests (model_vs_cpu), then the stack
#      tests (vs_cpu);
#   3. memcheck (compute-sanitizer) on a few cases of each;
#   4. the CLI end to end: train on the CPU, continue on the GPU (--resume --device cuda), eval
#      and sample on the GPU, the same short run from scratch on both devices;
#   5. small batches: the fused step kernel against cuBLAS + cell kernel;
#   6. bench/gpu_vs_cudnn.py: the card's ceilings, the grid and the char-model step against
#      cuDNN; its tables are printed last.
set -uo pipefail
BIN=$(cd "${1:?BIN_DIR}" && pwd)
OUT=${2:?OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STATUS="$OUT/status.txt"
: > "$STATUS"
stage() { echo; echo "== $*"; }
record() { echo "$1: exit $2" | tee -a "$STATUS"; }

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
export RECUR_FIXTURES="$ROOT/crates/recur/tests/fixtures"

stage "1. NVRTC compile check (the machine's libnvrtc; ptxas when the toolkit has one)"
PTXAS=$(command -v ptxas || ls /usr/local/cuda/bin/ptxas 2>/dev/null || true)
[ -n "$PTXAS" ] && export RECUR_PTXAS="$PTXAS" RECUR_PTX_DIR="$OUT/ptx"
"$BIN/nvrtc_compiles" --nocapture 2>&1 | tee "$OUT/nvrtc.txt" | grep -v '^$'
record nvrtc_compiles "${PIPESTATUS[0]}"

stage "2a. GPU model, optimizers, clipping, PyTorch fixtures (model_vs_cpu)"
"$BIN/model_vs_cpu" --nocapture --test-threads=1 2>&1 | tee "$OUT/model_tests.txt"
record model_vs_cpu "${PIPESTATUS[0]}"
stage "2b. GPU stack vs the CPU stack (vs_cpu)"
"$BIN/vs_cpu" --nocapture --test-threads=1 2>&1 | tee "$OUT/tests.txt"
record vs_cpu "${PIPESTATUS[0]}"

stage "3. memcheck under compute-sanitizer (out-of-bounds and misaligned accesses)"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# the model (8 random cases), the fixtures and the engine; the optimizer and clipping tests are
# element-wise kernels over large buffers: slow under the checker, and simple
RECUR_CUDA_TEST_CASES=8 timeout 120 "$CS" --tool memcheck --print-limit 5 \
  "$BIN/model_vs_cpu" gpu_model_matches_cpu gpu_matches_torch_fixtures gpu_engine_continues \
  --nocapture --test-threads=1 2>&1 | tail -12 | tee "$OUT/memcheck_model.txt"
RECUR_CUDA_TEST_CASES=8 timeout 120 "$CS" --tool memcheck --print-limit 5 \
  "$BIN/vs_cpu" gpu_matches_cpu --nocapture 2>&1 | tail -8 | tee "$OUT/memcheck.txt"

stage "4. the CLI end to end: train on the CPU, continue on the GPU; eval and sample on both"
E2E="$OUT/e2e"; mkdir -p "$E2E"
R="$BIN/recur"
DATA="$ROOT/data/tinyshakespeare/input.txt"
COMMON=(--data "$DATA" --preset tiny --sample-length 0 --quiet --json --eval-every 20)
: > "$E2E/log.txt"
# runs one command, logging it, its output and its exit status
run() {
  echo "+ $*" >> "$E2E/log.txt"; "$@" >> "$E2E/log.txt" 2>&1; local c=$?
  echo "exit $c" >> "$E2E/log.txt"
  local dev=cpu; [[ " $* " == *" --device cuda "* ]] && dev=cuda
  record "e2e [$dev]: $(echo "$*" | sed "s|$BIN/||g; s|$ROOT/||g; s|$E2E/||g" | cut -c1-90)" $c
}
run "$R" train "${COMMON[@]}" --max-steps 20 --checkpoint-dir "$E2E/a"
run "$R" train --resume --checkpoint-dir "$E2E/a" --max-steps 40 --quiet --json --sample-length 0 --device cuda
run "$R" train --resume --checkpoint-dir "$E2E/a" --max-steps 50 --quiet --json --sample-length 0
tail -c 20000 "$DATA" > "$E2E/part.txt"
run "$R" eval --checkpoint "$E2E/a/best.safetensors" --text "$E2E/part.txt" --json
run "$R" eval --checkpoint "$E2E/a/best.safetensors" --text "$E2E/part.txt" --json --device cuda
run "$R" sample --checkpoint "$E2E/a/best.safetensors" --prime "ROMEO:" --length 200 --seed 3
run "$R" sample --checkpoint "$E2E/a/best.safetensors" --prime "ROMEO:" --length 200 --seed 3 --device cuda
# the same 40 steps from scratch on each device: the validation losses should agree closely
run "$R" train "${COMMON[@]}" --max-steps 40 --checkpoint-dir "$E2E/cpu"
run "$R" train "${COMMON[@]}" --max-steps 40 --checkpoint-dir "$E2E/gpu" --device cuda
# the long-memory task and the spoken digits on the GPU
run "$R" task adding --len 50 --max-steps 300 --json --device cuda --out "$E2E/adding"
run "$R" task adding --len 50 --max-steps 300 --json --out "$E2E/adding-cpu"
run "$R" speech train --data "$ROOT/data/fsdd-sample" --checkpoint-dir "$E2E/speech" --val-takes none --epochs 10 --batch-size 6 --rnn-size 32 --json --device cuda
run "$R" speech eval --checkpoint "$E2E/speech/best.safetensors" --data "$ROOT/data/fsdd-sample" --json --device cuda
run "$R" speech eval --checkpoint "$E2E/speech/best.safetensors" --data "$ROOT/data/fsdd-sample" --json
# half a minute of training on the GPU with the default preset (chars/s, loss, a sample)
run timeout 90 "$R" train --data "$DATA" --max-minutes 0.5 --eval-every 500 --sample-length 200 --quiet --checkpoint-dir "$E2E/default" --device cuda
cut -c1-300 "$E2E/log.txt" | tail -60

stage "5. small batches: fused step kernel (small-batch 8), cuBLAS + cell kernel (0), persistent"
for hb in 1024:1 1024:8 256:1; do
  for flags in "--small-batch 8" "--small-batch 0" "--persistent"; do
    "$BIN/recur" bench --device cuda --mode both --cell lstm --rnn-size ${hb%:*} \
      --batch-size ${hb#*:} --seq-length 100 --warmup 3 --repeats 10 $flags --json
  done
done 2>&1 | tee "$OUT/small.txt"

echo
echo "== status"
cat "$STATUS"
stage "6. recur vs cuDNN (the grid and the char-model training step; tables last)"
PYTHONUNBUFFERED=1 python3 "$HERE/gpu_vs_cudnn.py" --recur "$BIN/recur" --out "$OUT" 2>&1 \
  | tee "$OUT/bench.txt"
