#!/usr/bin/env python3
"""The CTC loss alone, recur against PyTorch on the CPU, side by side in one run.

    python3 bench/ctc_vs_torch.py [--rounds 5] [--threads 2] [--t 200] [--b 32] [--c 11]

Both compute the loss of random logits (T, B, C) for random digit strings of 1 to 7 labels
(blank 0; input lengths from T down to 4/5 T) and its gradient with respect to the logits,
log-softmax included: recur with `recur bench --ctc --json` (a fresh process each round),
PyTorch with `F.ctc_loss(logits.log_softmax(2), ...)` forward and backward under
`torch.set_num_threads(N)`. Each engine reports the median of 7 samples after 2 warm-up calls
(a sample repeats the call until it lasts 50 ms); rounds alternate which engine goes first.
Prints per round and the medians, with the ratio recur/PyTorch (above 1: recur faster).
Needs torch (the Python running this, else bench/.venv as bench/compare.py makes it) and
target/release/recur (built here unless --no-build).
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECUR = ROOT / "target" / "release" / "recur"


def torch_ms(t, b, c, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(t, b, c, generator=g) * 2.0).requires_grad_(True)
    il = torch.tensor([t - (i % 5) * t // 25 for i in range(b)])
    tl = torch.randint(1, 8, (b,), generator=g).minimum((il + 1) // 2)
    targets = torch.randint(1, c, (int(tl.sum()),), generator=g)

    def call():
        logits.grad = None
        F.ctc_loss(logits.log_softmax(2), targets, il, tl, blank=0, reduction="mean").backward()

    for _ in range(2):
        call()
    t0 = time.perf_counter()
    call()
    one = max(time.perf_counter() - t0, 1e-9)
    iters = max(1, int(0.05 / one + 0.999))
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(iters):
            call()
        samples.append((time.perf_counter() - t0) / iters)
    return statistics.median(samples) * 1e3


def recur_ms(t, b, c, threads):
    out = subprocess.run([str(RECUR), "bench", "--ctc", "--seq-length", str(t), "--batch-size", str(b),
                          "--classes", str(c), "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--t", type=int, default=200)
    ap.add_argument("--b", type=int, default=32)
    ap.add_argument("--c", type=int, default=11)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        venv = ROOT / "bench" / ".venv" / "bin" / "python"
        if not venv.exists():
            sys.exit("no torch here: run bench/compare.py once (it makes bench/.venv), or pip install torch")
        sys.exit(subprocess.call([str(venv), __file__, *sys.argv[1:]]))
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "recur-cli"], cwd=ROOT, check=True)
    import torch

    print(f"CTC loss + gradient, T = {a.t}, B = {a.b}, C = {a.c}, {a.threads} thread(s); torch {torch.__version__}")
    rs, ts, ratios = [], [], []
    for k in range(a.rounds):
        if k % 2 == 0:
            r = recur_ms(a.t, a.b, a.c, a.threads)
            p = torch_ms(a.t, a.b, a.c, a.threads)
        else:
            p = torch_ms(a.t, a.b, a.c, a.threads)
            r = recur_ms(a.t, a.b, a.c, a.threads)
        rs.append(r)
        ts.append(p)
        ratios.append(p / r)
        print(f"round {k + 1}: recur {r:.3f} ms, PyTorch {p:.3f} ms, recur/PyTorch speed {p / r:.2f}x")
    print(f"median: recur {statistics.median(rs):.3f} ms, PyTorch {statistics.median(ts):.3f} ms, "
          f"speed ratio {statistics.median(ts) / statistics.median(rs):.2f}x (paired {statistics.median(ratios):.2f}x)")


if __name__ == "__main__":
    main()
