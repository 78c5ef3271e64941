#!/usr/bin/env python3
"""Checks a `bench/compare.py --json PATH` result against the CPU speed targets of issue 5.

    python3 bench/targets.py PATH [--threads 2]

Targets, at the given thread count (2 by default), against PyTorch at the same thread count:
1. recur at or above 1.0x PyTorch on every point of the grid;
2. at least 1.5x on training at (H, B, T) = (512, 32, 64) for all three cells, and on the
   char-model step;
3. at least 2x wherever PyTorch stays under 60 GFLOP/s;
4. LSTM training at (512, 32, 64) at or above 80% of the float32 GEMM peak measured in the same
   run (the better of recur's and PyTorch's 2048^3 product at that thread count);
5. peak memory of a training step at or below PyTorch's.
Then the targets of "CPU speed on every x86-64 machine", on whichever machine the run was on:
A. at or above 1.1x PyTorch on every point and on the char-model step;
B. LSTM training at (512, 32, 64) and the char-model step at or above 1.3x wherever PyTorch runs
   below 60% of the cores' FMA ceiling (`recur bench --fma-peak`, in the run);
C. LSTM training and inference at (512, 32, 64) at or above 75% of the FMA ceiling.
Prints each target with the numbers behind it and "met" or "MISSED". Reads numbers only.
"""

import json
import statistics
import sys


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    th = int(args[args.index("--threads") + 1]) if "--threads" in args else 2
    d = json.load(open(args[0]))
    rows = [r for r in d["rows"] if r["req"]["threads"] == th]
    samples = d["samples"]

    def gflops(label, who):
        v = [s.get("gflops") for s in samples[label][who] if s.get("gflops") is not None]
        return statistics.median(v) if v else None

    def verdict(ok):
        return "met" if ok else "MISSED"

    print(f"targets at {th} thread(s), from {args[0]} (load before: {d['load_before']})\n")
    below = [r for r in rows if r["ratio"] < 1.0]
    worst = min(rows, key=lambda r: r["ratio"])
    def paired(r):  # the median of per-round ratios, where the run has it
        return f" (paired {r['paired']:.2f}x)" if "paired" in r else ""

    print(f"1. >= 1.0x everywhere: {verdict(not below)}; lowest {worst['ratio']:.2f}x{paired(worst)} at {worst['label']}"
          + "".join(f"\n   below 1.0x: {r['label']} {r['ratio']:.2f}x{paired(r)}" for r in below))  # fmt: skip
    need = [r for r in rows if (r["req"].get("hidden"), r["req"].get("batch"), r["req"].get("mode")) == (512, 32, "train")
            or r["req"]["kind"] == "charlm"]  # fmt: skip
    print(f"2. >= 1.5x on training at 512/32/64 and the char-model step: {verdict(all(r['ratio'] >= 1.5 for r in need))}")
    for r in need:
        print(f"   {r['label']}: {r['ratio']:.2f}x{paired(r)}")
    slow = [(r, gflops(r["label"], "torch")) for r in rows if r["req"]["kind"] == "stack"]
    slow = [(r, g) for r, g in slow if g is not None and g < 60]
    print(f"3. >= 2x where PyTorch is under 60 GFLOP/s: {verdict(all(r['ratio'] >= 2 for r, _ in slow))}")
    for r, g in slow:
        print(f"   {r['label']}: PyTorch {g:.1f} GFLOP/s, {r['ratio']:.2f}x" + ("" if r["ratio"] >= 2 else "  <-"))
    pk = d["peaks"][str(th)] if str(th) in d["peaks"] else d["peaks"][th]
    peak = max(pk["recur"], pk["torch"])  # the best measured GEMM (not the FMA ceiling)
    fma = pk.get("fma")
    lstm = [r for r in rows if r["req"].get("cell") == "lstm" and r["req"].get("hidden") == 512
            and r["req"].get("mode") == "train"]  # fmt: skip
    if lstm:
        g = gflops(lstm[0]["label"], "recur")
        print(f"4. LSTM 512/32/64 training >= 80% of the GEMM peak: {verdict(g >= 0.8 * peak)}; "
              f"{g:.1f} GFLOP/s of {peak:.1f} ({100 * g / peak:.0f}%)"
              + (f"; {100 * g / fma:.0f}% of the cores' FMA ceiling {fma:.1f}" if fma else ""))  # fmt: skip
    if fma:
        tp = [r for r in rows if r["req"]["kind"] == "stack" and r["req"]["threads"] == th]
        print(f"   PyTorch's own share of the FMA ceiling ({fma:.1f} GFLOP/s), largest: "
              + ", ".join(f"{r['label']} {100 * gflops(r['label'], 'torch') / fma:.0f}%"
                          for r in sorted(tp, key=lambda r: -gflops(r["label"], "torch"))[:3]))  # fmt: skip
    mem = d.get("memory") or {}
    if mem:
        ok = all(m["recur_kib"] <= m["torch_kib"] for m in mem.values())
        print(f"5. training-step peak memory <= PyTorch's: {verdict(ok)}")
        for label, m in mem.items():
            print(f"   {label}: recur {m['recur_kib'] / 1024:.1f} MiB, PyTorch {m['torch_kib'] / 1024:.1f} MiB")

    every_machine(rows, gflops, fma, paired, verdict)


# The char-model step of the grid (2-layer LSTM 512 on one-hot input over 65 symbols, linear
# decoder, B = 32, T = 64): GEMM FLOPs of forward + backward, counted as for the grid's points.
CHAR_STEP_FLOP = 3 * 2 * 32 * 64 * (4 * 512 * (65 + 512) + 4 * 512 * (512 + 512) + 512 * 65)


def every_machine(rows, gflops, fma, paired, verdict):
    """The targets of "CPU speed on every x86-64 machine", on the machine the run was on."""
    print("\nCPU speed on every x86-64 machine (on this run's machine):")
    low = [r for r in rows if r["ratio"] < 1.1]
    print(f"A. >= 1.1x on every point and the char-model step: {verdict(not low)}"
          + "".join(f"\n   below 1.1x: {r['label']} {r['ratio']:.2f}x{paired(r)}" for r in low))  # fmt: skip
    if not fma:
        print("B, C: the run has no FMA ceiling (older compare.py); not checked")
        return
    for r in rows:
        if r["req"]["kind"] == "charlm":
            torch_g = CHAR_STEP_FLOP * r["torch"] / (32 * 64) / 1e9
        elif (r["req"].get("cell"), r["req"].get("hidden"), r["req"].get("batch"), r["req"].get("mode")) == ("lstm", 512, 32, "train"):
            torch_g = gflops(r["label"], "torch")
        else:
            continue
        share = torch_g / fma
        if share < 0.6:
            print(f"B. {r['label']}: PyTorch at {100 * share:.0f}% of the FMA ceiling, so >= 1.3x: "
                  f"{verdict(r['ratio'] >= 1.3)} ({r['ratio']:.2f}x{paired(r)})")
        else:
            print(f"B. {r['label']}: PyTorch at {100 * share:.0f}% of the FMA ceiling (not under 60%): "
                  f"1.3x does not apply; 1.1x would need {110 * share:.0f}% of the ceiling")
    for r in rows:
        if (r["req"].get("cell"), r["req"].get("hidden"), r["req"].get("batch")) == ("lstm", 512, 32):
            g = gflops(r["label"], "recur")
            print(f"C. {r['label']} >= 75% of the FMA ceiling: {verdict(g >= 0.75 * fma)} "
                  f"({g:.1f} of {fma:.1f} GFLOP/s, {100 * g / fma:.0f}%)")


if __name__ == "__main__":
    main()
