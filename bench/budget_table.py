#!/usr/bin/env python3
"""The best validation loss reached by each budget, recur against PyTorch, from one run per side:
recur's `log.csv` (`recur train --checkpoint-dir D` writes D/log.csv) and the JSON lines that
bench/charlm_torch.py prints. A run that evaluates about every minute gives every budget up to
its length: the best validation loss among the evaluations made by minute m (the clocks of both
count training and evaluation).

    python3 bench/budget_table.py --recur D/log.csv --torch torch.jsonl --minutes 2 5 10

Runs made on a loaded machine (side by side, one thread each) are compared by the characters
they have seen, which the load does not change: --recur-cps and --torch-cps give each side's
characters per second on the idle machine (from a short run of the same recipe there), and an
evaluation then counts as made at minute chars_seen / cps / 60 instead of its own clock's.

Prints a Markdown table: per budget, each side's best validation loss (nats/char) and the
difference, then each side's characters per second over its whole run.
"""

import argparse
import csv
import json


def recur_rows(path):
    with open(path, newline="") as f:
        return [
            (float(r["elapsed_secs"]), int(r["chars_seen"]), float(r["val_loss"]))
            for r in csv.DictReader(f)
            if r["val_loss"]
        ]


def torch_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            j = json.loads(line)
            if j.get("val_loss") is not None and "elapsed_secs" in j:
                rows.append((float(j["elapsed_secs"]), int(j["chars_seen"]), float(j["val_loss"])))
    return rows


def best_by(rows, secs):
    vals = [v for (t, _, v) in rows if t <= secs]
    return min(vals) if vals else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recur", required=True)
    p.add_argument("--torch", required=True)
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20, 40, 60])
    p.add_argument("--slack", type=float, default=0.0,
                   help="seconds past each budget still counted: a run's last evaluation, "
                        "made when its budget ran out, is stamped a few seconds after it")
    p.add_argument("--recur-cps", type=float, default=0.0,
                   help="recur's chars/s on the idle machine: time a row by its characters")
    p.add_argument("--torch-cps", type=float, default=0.0,
                   help="PyTorch's chars/s on the idle machine: time a row by its characters")
    a = p.parse_args()
    if (a.recur_cps > 0) != (a.torch_cps > 0):
        raise SystemExit("budget_table: give both --recur-cps and --torch-cps, or neither")
    r, t = recur_rows(a.recur), torch_rows(a.torch)
    if a.recur_cps > 0:
        r = [(c / a.recur_cps, c, v) for (_, c, v) in r]
        t = [(c / a.torch_cps, c, v) for (_, c, v) in t]
    if not r or not t:
        raise SystemExit("budget_table: a log without validation rows")
    print("| budget | recur best val | PyTorch best val | recur - PyTorch |")
    print("| ---: | ---: | ---: | ---: |")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    for m in a.minutes:
        br, bt = best_by(r, m * 60 + a.slack), best_by(t, m * 60 + a.slack)
        diff = "-" if br is None or bt is None else f"{br - bt:+.4f}"
        print(f"| {m:g} min | {fmt(br)} | {fmt(bt)} | {diff} |")
    for name, rows in (("recur", r), ("PyTorch", t)):
        secs, chars, _ = rows[-1]
        how = "at the idle rate given" if a.recur_cps > 0 else "training and evaluation"
        print(f"\n{name}: {chars:,} chars in {secs:.0f} s = {chars / secs:,.0f} chars/s ({how})")


if __name__ == "__main__":
    main()
