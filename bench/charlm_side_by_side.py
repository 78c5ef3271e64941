#!/usr/bin/env python3
"""Trains the same character model with recur and with PyTorch for the same wall-clock time and
prints both validation-loss curves side by side.

Both sides get the same architecture, optimizer, batch, sequence length, split, threads, eval
interval and time budget (the clock includes evaluations on both sides). By default they run one
after the other (a 2-core machine); with --parallel they run at the same time pinned to
disjoint cores with taskset (a machine with at least 2 x threads cores).

  python3 bench/charlm_side_by_side.py --minutes 5 -- --num-layers 2 --rnn-size 256

Flags after `--` go to both `recur train` and bench/charlm_torch.py (those two accept the same
names for what they share). Output: the two curves, then val loss at each whole minute.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--recur", default=os.path.join(ROOT, "target/release/recur"))
    p.add_argument("--parallel", action="store_true", help="run both at once on disjoint cores")
    p.add_argument("--cpu-offset", type=int, default=0, help="first core used with --parallel")
    p.add_argument("--out", default=None, help="directory for the logs (default: a temp dir)")
    p.add_argument("rest", nargs="*", help="flags for both sides (after --)")
    a = p.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="recur-bench-")
    os.makedirs(out, exist_ok=True)
    ck = os.path.join(out, "recur-ck")
    shared = ["--max-minutes", str(a.minutes), "--threads", str(a.threads)] + a.rest
    recur_cmd = [a.recur, "train", "--checkpoint-dir", ck, "--quiet", "--sample-length", "0",
                 "--json"] + shared
    torch_cmd = [sys.executable, os.path.join(HERE, "charlm_torch.py")] + shared
    if a.parallel:
        t, o = a.threads, a.cpu_offset
        recur_cmd = ["taskset", "-c", f"{o}-{o + t - 1}"] + recur_cmd
        torch_cmd = ["taskset", "-c", f"{o + t}-{o + 2 * t - 1}"] + torch_cmd
    print("recur:", " ".join(recur_cmd), flush=True)
    print("torch:", " ".join(torch_cmd), flush=True)
    with open(os.path.join(out, "recur.stdout"), "w") as ro, \
            open(os.path.join(out, "torch.jsonl"), "w") as to:
        if a.parallel:
            pr = subprocess.Popen(recur_cmd, stdout=ro, stderr=subprocess.DEVNULL, cwd=ROOT)
            pt = subprocess.Popen(torch_cmd, stdout=to, cwd=ROOT)
            rc = (pr.wait(), pt.wait())
        else:
            rc = (subprocess.call(recur_cmd, stdout=ro, stderr=subprocess.DEVNULL, cwd=ROOT),
                  subprocess.call(torch_cmd, stdout=to, cwd=ROOT))
    if rc != (0, 0):
        sys.exit(f"exit codes recur={rc[0]} torch={rc[1]}; see {out}")
    recur_rows = []
    with open(os.path.join(ck, "log.csv")) as f:
        # rows without a validation loss are the training-loss rows between evaluations; the
        # training loss shown is the mean over all steps since the previous evaluation
        acc, n, prev = 0.0, 0, 0
        for r in csv.DictReader(f):
            steps = int(r["step"]) - prev
            prev = int(r["step"])
            acc += float(r["train_loss"]) * steps
            n += steps
            if r["val_loss"]:
                recur_rows.append((float(r["elapsed_secs"]), int(r["chars_seen"]), acc / n,
                                   float(r["val_loss"])))
                acc, n = 0.0, 0
    torch_rows, torch_info = [], {}
    with open(os.path.join(out, "torch.jsonl")) as f:
        for line in f:
            j = json.loads(line)
            if "config" in j:
                torch_info = j
            else:
                torch_rows.append((j["elapsed_secs"], j["chars_seen"], j["train_loss"], j["val_loss"]))
    print(f"\nlogs in {out}; torch {torch_info.get('torch')}, params {torch_info.get('params')}")
    print(f"\n{'recur':>42} | {'pytorch':>40}")
    print(f"{'secs':>8} {'chars':>10} {'train':>7} {'val':>7}    | {'secs':>8} {'chars':>10} {'train':>7} {'val':>7}")
    for i in range(max(len(recur_rows), len(torch_rows))):
        def cell(rows):
            if i >= len(rows):
                return " " * 36
            s, c, tr, v = rows[i]
            return f"{s:8.1f} {c:10d} {tr:7.4f} {v:7.4f}"
        print(f"{cell(recur_rows)}    | {cell(torch_rows)}")
    for name, rows in (("recur", recur_rows), ("pytorch", torch_rows)):
        if rows:
            s, c, _, _ = rows[-1]
            print(f"{name}: {c} chars in {s:.0f} s = {c / s:.0f} chars/s (training and evaluation)")
    print("\nvalidation loss (nats/char) of the last evaluation at or before each minute:")
    print(f"{'minute':>6} {'recur':>8} {'pytorch':>8}")
    m = 1
    while m <= a.minutes + 1e-9:
        def at(rows):
            v = [r[3] for r in rows if r[0] <= m * 60 + 1e-6]
            return f"{v[-1]:8.4f}" if v else f"{'-':>8}"
        print(f"{m:6d} {at(recur_rows)} {at(torch_rows)}")
        m += 1
    def final(rows):
        return f"{rows[-1][3]:.4f}" if rows else "-"
    print(f" final {final(recur_rows):>8} {final(torch_rows):>8}")


if __name__ == "__main__":
    main()
