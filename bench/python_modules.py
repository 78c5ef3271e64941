#!/usr/bin/env python3
"""recur.torch's modules against torch.nn's in one PyTorch training loop, and what the Python
binding costs on top of recur's own speed.

    python bench/python_modules.py [--rounds 3] [--threads 2] [--quick] [--json PATH]

Needs a Python with torch and the recur package (`pip install ./python`) and the release binary
(`cargo build --release -p recur-cli`). For each point, in each round, in one process:
- torch.nn's module and recur.torch's module with the same weights run the same training step
  (forward, backward of a fixed output gradient into the weights and the input, gradients reset
  each step; for the char model: one-hot input, 2-layer LSTM 512, linear decoder,
  cross-entropy, clip_grad_norm_(5), Adam), alternating which goes first; each is the median of
  7 samples after 2 warm-up steps (bench/torch_bench.py's timer);
- `recur bench --json` (a fresh process) times the same step in Rust, without Python.

It prints, per point, medians over rounds: torch.nn's and recur.torch's step times, the
Python-level ratio (torch.nn time / recur.torch time), the Rust-level ratio (torch.nn time /
`recur bench` time) and the binding's overhead (recur.torch time - `recur bench` time: the time
spent outside recur's kernels, in the wrapper, autograd and copies), as a markdown table. The
target: the Python-level ratio within 5% of the Rust-level one. It asserts nothing.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

import recur
import recur.torch as rt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_bench import charlm_work, stack_work, time_median  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECUR = ROOT / "target" / "release" / "recur"

POINTS = [
    ("gru", 512, 32, 64),
    ("lstm", 512, 32, 64),
    ("gru", 128, 32, 64),
    ("lstm", 128, 32, 64),
    ("charlm", 512, 32, 64),
]


def stack_step(cls, cell, h, b, t):
    req = {"cell": cell, "hidden": h, "batch": b, "seq_length": t, "mode": "train"}
    return stack_work(req, cls=cls)


def charlm_step(cls):
    return charlm_work({}, rnn=cls)


def rust_step(point, threads):
    cell, h, b, t = point
    if cell == "charlm":
        args = ["--charlm"]
    else:
        args = ["--cell", cell, "--rnn-size", str(h), "--batch-size", str(b), "--seq-length", str(t), "--mode", "train"]
    out = subprocess.run([str(RECUR), "bench", *args, "--threads", str(threads), "--json"], check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]
    row = rows[-1]
    return row["median_s"] if "median_s" in row else row["train_median_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one round of the first two points")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    points = POINTS[:2] if a.quick else POINTS
    rounds = 1 if a.quick else a.rounds
    torch.set_num_threads(a.threads)
    samples = {p: {"torch": [], "recur": [], "rust": []} for p in points}
    for r in range(rounds):
        for p in points:
            cell, h, b, t = p
            if cell == "charlm":
                work = {"torch": charlm_step(torch.nn.LSTM), "recur": charlm_step(rt.LSTM)}
            else:
                ours, theirs = {"gru": (rt.GRU, torch.nn.GRU), "lstm": (rt.LSTM, torch.nn.LSTM)}[cell]
                work = {"torch": stack_step(theirs, cell, h, b, t), "recur": stack_step(ours, cell, h, b, t)}
            order = ["torch", "recur"] if r % 2 == 0 else ["recur", "torch"]
            for name in order:
                samples[p][name].append(time_median(work[name]))
            samples[p]["rust"].append(rust_step(p, a.threads))
            print(f"round {r + 1}: {p}: " + ", ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in samples[p].items()), file=sys.stderr)
    print(f"torch {torch.__version__}, {a.threads} thread(s), recur.get_num_threads() = {recur.get_num_threads()}, medians over {rounds} round(s)\n")
    print("| point (H/B/T, training step) | torch.nn ms | recur.torch ms | recur bench ms | Python-level ratio | Rust-level ratio | Python/Rust | binding overhead |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for p, s in samples.items():
        cell, h, b, t = p
        tt, tr, tb = (statistics.median(s[k]) for k in ("torch", "recur", "rust"))
        py_ratio, rust_ratio = tt / tr, tt / tb
        name = "char model (LSTM 2x512, 32x64)" if cell == "charlm" else f"{cell.upper()} {h}/{b}/{t}"
        print(
            f"| {name} | {tt * 1e3:.2f} | {tr * 1e3:.2f} | {tb * 1e3:.2f} | {py_ratio:.2f}x | {rust_ratio:.2f}x "
            f"| {py_ratio / rust_ratio:.3f} | {(tr - tb) * 1e3:+.2f} ms ({(tr - tb) / tr * 100:+.1f}%) |"
        )
    if a.json:
        a.json.write_text(json.dumps({str(k): v for k, v in samples.items()}, indent=1))


if __name__ == "__main__":
    main()
