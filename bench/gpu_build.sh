#!/usr/bin/env bash
# Builds, on a CPU machine, everything bench/gpu_run.sh runs on the GPU machine (which has no
# Rust toolchain), into target/gpu-bin/ (git-ignored; about 30 MB stripped):
#   recur            the CLI with the `cuda` feature
#   vs_cpu           recur-cuda's stack tests (GPU stack vs CPU stack)
#   model_vs_cpu     recur-cuda's model, optimizer, clipping and PyTorch-fixture tests
#   nvrtc_compiles   the NVRTC compile check of every kernel source
# Then, with the device tool: carry target/gpu-bin and run `bash bench/gpu_run.sh target/gpu-bin "$OUT"`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DST=target/gpu-bin
mkdir -p "$DST"
nice -n 19 cargo build --release -p recur-cli --features cuda
cp target/release/recur "$DST/recur"
# the test executables: cargo prints their paths as JSON
nice -n 19 cargo test --release -p recur-cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, shutil, sys
want = {"vs_cpu", "model_vs_cpu", "nvrtc_compiles"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in want:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
        print("copied", m["target"]["name"])
' "$DST"
strip "$DST"/* 2>/dev/null || true
ls -la "$DST"
du -sh "$DST"
