#!/usr/bin/env bash
# Compiles every CUDA kernel of recur-cuda with NVRTC (and assembles it with ptxas) on a machine
# WITHOUT a GPU: the kernels are otherwise compiled only at run time, on the GPU machine.
#
# Installs NVIDIA's NVRTC and nvcc wheels from PyPI (CUDA 13: nvidia-cuda-nvrtc, nvidia-cuda-nvcc)
# into bench/.venv-nvrtc (git-ignored, about 500 MB) on first use, then runs
# tests/nvrtc_compiles.rs with LD_LIBRARY_PATH pointing at the wheel's libnvrtc.so.13 (one of the
# names cudarc's loader tries) and RECUR_PTXAS at the wheel's ptxas. Usage, from anywhere:
#   bash crates/recur-cuda/check-kernels.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV="$ROOT/bench/.venv-nvrtc"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! ls "$SITE"/nvidia/cu13/lib/libnvrtc.so.13 >/dev/null 2>&1 || [ ! -x "$SITE/nvidia/cu13/bin/ptxas" ]; then
  "$VENV/bin/pip" install --quiet nvidia-cuda-nvrtc nvidia-cuda-nvcc
fi
"$VENV/bin/pip" list 2>/dev/null | grep -i '^nvidia-cuda' || true
export LD_LIBRARY_PATH="$SITE/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}"
export RECUR_PTXAS="$SITE/nvidia/cu13/bin/ptxas"
export RECUR_PTX_DIR="$ROOT/target/ptx"
cd "$ROOT"
nice -n 19 cargo test --release -p recur-cuda --test nvrtc_compiles -- --nocapture
