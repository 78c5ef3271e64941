#!/usr/bin/env python3
"""recur vs PyTorch on the CPU, side by side, on the same machine in the same run.

    python3 bench/compare.py                 # the full grid, 3 rounds, 1 and 2 threads
    python3 bench/compare.py --quick         # one round, 2 threads only (a smoke run)

What it does, in order:
1. finds a Python with torch (this one if `import torch` works, else bench/.venv, created with
   `python3 -m venv` + `pip install torch numpy` from the default package index when missing);
2. builds `recur` in release mode (`cargo build --release -p recur-cli`) unless --no-build;
3. measures the float32 GEMM throughput (2048^3) of both engines at each thread count;
4. for each round, for each grid point, runs `recur bench --json` (a fresh process) and asks a
   long-lived PyTorch worker (`bench/torch_bench.py --serve`) for the same point, alternating
   which goes first; each of them reports the median of 7 samples after 2 warm-up calls;
5. measures the peak memory of one training step of each, in separate processes (below);
6. prints one markdown table: per point the median over rounds of each engine's throughput,
   the ratio recur/PyTorch, and GFLOP/s; the GEMM peaks and the cores' FMA ceiling (`recur bench
   --fma-peak`, independent vector FMAs only); the memory; `uptime` before and after.

Grid: RNN-tanh, LSTM, GRU, one layer, input = hidden = H, (H, B, T) in (128, 32, 64),
(512, 32, 64), (1024, 16, 32), (256, 1, 256); inference and training; 1 and 2 threads; plus the
char-model training step. GFLOP/s counts the GEMM work only: 2*B*T*G*H*(I+H) per layer forward,
three times that for training.

Memory: the peak resident set size (VmHWM in /proc/self/status) of a fresh `recur bench` process
that runs warm-up + one training step, against the growth of a fresh PyTorch process's peak RSS
from just after `import torch` to after the same work (the interpreter and torch's libraries,
~300 MiB, are left out of PyTorch's figure; recur's whole process is counted).

PyTorch's allocator: by default the PyTorch worker runs with glibc's malloc told to keep freed
memory instead of handing it back to the kernel (MALLOC_TRIM_THRESHOLD_=1 GiB,
MALLOC_TOP_PAD_=256 MiB, MALLOC_MMAP_THRESHOLD_=32 MiB). Without that, PyTorch's training steps
free and re-allocate their large buffers every step, and whether those come back as fresh pages
(page faults, zeroing) depends on the process's history: the same worker ran LSTM 1024/16/32
training at 4,500-5,200 tokens/s in most processes and at 7,300-7,400 in some, LSTM 512/32/64
at 25-28 thousand against 32-33 with the setting. recur allocates its workspace once, so this
only removes noise from PyTorch's side, in its favour. `--torch-default-malloc` turns it off.
The memory measurements always use the default allocator settings (the lower figure).

Ratios: the table's ratio is the median of recur's samples over the median of PyTorch's; the
"paired" column is the median over rounds of each round's ratio, which cancels the drift of the
machine's speed between rounds (it moved by up to 15% within minutes on the shared host).

It asserts nothing; it reports what it measured. `--json PATH` also writes every sample.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RECUR = ROOT / "target" / "release" / "recur"
VENV = BENCH / ".venv"

SHAPES = [(128, 32, 64), (512, 32, 64), (1024, 16, 32), (256, 1, 256)]
CELLS = ["rnn_tanh", "lstm", "gru"]
MODES = ["infer", "train"]
# reduced precision adds the batch-1 shapes where the weights' bytes matter most
LOW_SHAPES = [(512, 1, 256), (1024, 1, 128)]
GEMM_N = 2048


def python_with_torch():
    """A Python interpreter that can import torch: this one, or bench/.venv (created if needed)."""
    # Asked in a child process: importing torch here would make this process large, and every
    # child forked from it would start from that size.
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0:
        return sys.executable
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"no torch here: creating {VENV} and installing torch from the package index", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "torch", "numpy"], check=True)
    return str(py)


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def recur_run(args):
    out = subprocess.run([str(RECUR), "bench", "--json", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def recur_args(req):
    if req["kind"] == "gemm":
        return ["--gemm", str(req["n"]), "--threads", str(req["threads"])]
    if req["kind"] == "charlm":
        return ["--charlm", "--threads", str(req["threads"]), "--precision", req.get("precision", "f32")]
    precision = req.get("precision", "f32")
    # reduced precision: the weights converted and packed once, as `eval`, `sample` and PyTorch's
    # quantize_dynamic do
    low = ["--precision", precision] if precision != "f32" else []
    if precision != "f32" and req["mode"] == "infer":
        low.append("--packed-once")
    return [
        "--cell", req["cell"], "--rnn-size", str(req["hidden"]), "--batch-size", str(req["batch"]),
        "--seq-length", str(req["seq_length"]), "--num-layers", "1", "--mode", req["mode"],
        "--threads", str(req["threads"]), *low,
    ]  # fmt: skip


class Torch:
    """A long-lived PyTorch worker answering one JSON request per line."""

    def __init__(self, py, env=None):
        self.p = subprocess.Popen(
            [py, str(BENCH / "torch_bench.py"), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env,
        )

    def ask(self, req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def memory(py, req, env=None):
    """Peak RSS (VmHWM, KiB) of a fresh recur process running warm-up + one step, and the growth
    of a fresh PyTorch process's peak RSS over the same work (from just after `import torch`)."""
    one = ["--warmup", "2", "--repeats", "1", "--min-sample-ms", "0"]
    r = recur_run(recur_args(req) + one)
    out = subprocess.run([py, str(BENCH / "torch_bench.py"), "--mem", json.dumps(req)], capture_output=True,
                         text=True, check=True, env=env).stdout  # fmt: skip
    t = json.loads(out)
    return {"recur_kib": r["peak_rss_kib"], "torch_kib": t["peak_kib"] - t["baseline_kib"], "torch_total_kib": t["peak_kib"]}


def throughput(r):
    return r.get("tokens_per_s") or r.get("chars_per_s")


# glibc malloc settings for PyTorch's worker: keep freed memory (see the module's text)
KEEP_FREED_MEMORY = {
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the grid (medians are taken over rounds)")
    ap.add_argument("--threads", default="2,1", help="thread counts, comma-separated")
    ap.add_argument("--quick", action="store_true", help="one round, 2 threads")
    ap.add_argument("--only", default="", help="keep only points whose label contains this text ('|' separates alternatives)")
    ap.add_argument("--no-build", action="store_true", help="use target/release/recur as it is")
    ap.add_argument("--low-shapes", action="store_true",
                    help="add the batch-1 shapes of the reduced-precision grid (512/1/256, 1024/1/128) at any precision")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    ap.add_argument("--json", help="also write every sample to this file")
    ap.add_argument(
        "--torch-default-malloc", action="store_true",
        help="run PyTorch's worker with glibc malloc's default settings (see above)",
    )  # fmt: skip
    ap.add_argument(
        "--omp-passive", action="store_true",
        help="run PyTorch with OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of spinning): "
        "the same kernels, but far less sensitive to other load on the machine",
    )  # fmt: skip
    ap.add_argument(
        "--precision", choices=["f32", "bf16", "int8"], default="f32",
        help="bf16: LSTM and GRU inference and training and the char step (PyTorch: CPU autocast on the "
        "forward); int8: LSTM and GRU inference only (PyTorch: quantize_dynamic); no memory figures",
    )  # fmt: skip
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.threads = 1, "2"
    threads = [int(t) for t in a.threads.split(",")]

    py = python_with_torch()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "recur-cli"], cwd=ROOT, check=True)

    points = []
    low = a.precision != "f32"
    for th in threads:
        for cell in CELLS:
            if low and cell not in ("lstm", "gru"):
                continue
            for h, b, t in SHAPES + (LOW_SHAPES if low or a.low_shapes else []):
                for mode in ["infer"] if a.precision == "int8" else MODES:
                    req = {"kind": "stack", "cell": cell, "hidden": h, "batch": b, "seq_length": t,
                           "layers": 1, "mode": mode, "threads": th}  # fmt: skip
                    tag = ""
                    if low:
                        req["precision"] = a.precision
                        tag = f" {a.precision}"
                    points.append((f"{cell} H={h} B={b} T={t} {mode}{tag} {th}t", req))
        if a.precision != "int8":
            tag = " bf16" if low else ""
            points.append((f"char-model step{tag} {th}t", {"kind": "charlm", "threads": th, "precision": a.precision}))
    if low:
        a.no_memory = True
    points = [p for p in points if any(o in p[0] for o in a.only.split("|"))]

    load_before = uptime()
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {load_before}", file=sys.stderr)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE") if a.omp_passive else None
    worker_env = dict(env or os.environ)
    if not a.torch_default_malloc:
        worker_env.update(KEEP_FREED_MEMORY)
    torch_w = Torch(py, worker_env)
    torch_version = torch_w.ask({"kind": "gemm", "n": 64, "threads": 1})["torch"]
    peaks = {}
    for th in threads:
        req = {"kind": "gemm", "n": GEMM_N, "threads": th}
        peaks[th] = {"recur": recur_run(recur_args(req))["gflops"], "torch": torch_w.ask(req)["gflops"]}

    samples = {label: {"recur": [], "torch": []} for label, _ in points}
    for rnd in range(a.rounds):
        for i, (label, req) in enumerate(points):
            order = ["recur", "torch"] if (rnd + i) % 2 == 0 else ["torch", "recur"]
            for who in order:
                r = recur_run(recur_args(req)) if who == "recur" else torch_w.ask(req)
                samples[label][who].append(r)
            s = samples[label]
            print(f"round {rnd + 1}/{a.rounds} {label}: recur {throughput(s['recur'][-1]):,.0f} "
                  f"torch {throughput(s['torch'][-1]):,.0f} /s", file=sys.stderr)  # fmt: skip
    for th in threads:  # the GEMM again at the end: the peak is the best of both measurements
        req = {"kind": "gemm", "n": GEMM_N, "threads": th}
        peaks[th]["recur"] = max(peaks[th]["recur"], recur_run(recur_args(req))["gflops"])
        peaks[th]["torch"] = max(peaks[th]["torch"], torch_w.ask(req)["gflops"])
        # the hardware's own ceiling: nothing but independent vector FMAs on th threads
        peaks[th]["fma"] = recur_run(["--fma-peak", "--threads", str(th)])["gflops"]
    torch_w.close()

    mem = {}
    if not a.no_memory:
        th = max(threads)
        for label, req in points:
            is_512 = req["kind"] == "stack" and req["hidden"] == 512 and req["mode"] == "train"
            if req["threads"] == th and (is_512 or req["kind"] == "charlm"):
                mem[label] = memory(py, req, env)
    load_after = uptime()

    fmt = {"f32": "float32", "bf16": "bf16 (PyTorch: CPU autocast)", "int8": "int8 (PyTorch: quantize_dynamic)"}
    print(f"recur vs PyTorch {torch_version} (CPU, {fmt[a.precision]}), {time.strftime('%Y-%m-%d %H:%M %Z')}")
    if a.omp_passive:
        print("PyTorch ran with OMP_WAIT_POLICY=PASSIVE  ")
    if a.torch_default_malloc:
        print("PyTorch ran with glibc malloc's default settings  ")
    else:
        print("PyTorch's timings ran with " + " ".join(f"{k}={v}" for k, v in KEEP_FREED_MEMORY.items())
              + " (its memory figures without)  ")  # fmt: skip
    print(f"load before: `{load_before}`  ")
    print(f"load after: `{load_after}`  ")
    print(f"medians over {a.rounds} round(s), each the median of 7 samples (3 for calls over 0.5 s) after 2 warm-up calls\n")
    print("| point | recur /s | PyTorch /s | recur/PyTorch | paired | recur GFLOP/s | PyTorch GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for label, req in points:
        s = samples[label]
        rt = statistics.median(throughput(r) for r in s["recur"])
        tt = statistics.median(throughput(r) for r in s["torch"])
        rg = statistics.median(r.get("gflops", float("nan")) for r in s["recur"])
        tg = statistics.median(r.get("gflops", float("nan")) for r in s["torch"])
        unit = "chars" if req["kind"] == "charlm" else "tokens"
        gf = lambda g: "" if g != g else f"{g:.1f}"  # noqa: E731
        paired = statistics.median(throughput(r) / throughput(t) for r, t in zip(s["recur"], s["torch"]))
        print(f"| {label} | {rt:,.0f} {unit} | {tt:,.0f} {unit} | {rt / tt:.2f}x | {paired:.2f}x | {gf(rg)} | {gf(tg)} |")
        rows.append({"label": label, "req": req, "recur": rt, "torch": tt, "ratio": rt / tt, "paired": paired})
    if 1 in threads and max(threads) > 1:
        # PyTorch's OpenMP threads wait for each other by spinning; on a machine loaded by other
        # work that can make its multi-threaded runs far slower than its single-threaded ones.
        # This second view compares recur on N threads with PyTorch's better thread count.
        th = max(threads)
        by = {r["label"]: r for r in rows}
        print(f"\n| point | recur {th}t /s | PyTorch best of 1t, {th}t /s | recur/PyTorch-best |")
        print("|---|---:|---:|---:|")
        for r in rows:
            if r["req"]["threads"] != th:
                continue
            one = by.get(r["label"].replace(f" {th}t", " 1t"))
            best = max(r["torch"], one["torch"]) if one else r["torch"]
            print(f"| {r['label']} | {r['recur']:,.0f} | {best:,.0f} | {r['recur'] / best:.2f}x |")
    print()
    for th in threads:
        p = peaks[th]
        print(f"float32 GEMM {GEMM_N}^3, {th} thread(s): recur {p['recur']:.1f} GFLOP/s, PyTorch {p['torch']:.1f} GFLOP/s; "
              f"FMA ceiling of the cores (`recur bench --fma-peak`) {p['fma']:.1f} GFLOP/s  ")  # fmt: skip
    if mem:
        print("\n| training step, peak memory | recur (peak RSS, whole process) | PyTorch (peak RSS growth after import) |")
        print("|---|---:|---:|")
        for label, m in mem.items():
            print(f"| {label} | {m['recur_kib'] / 1024:.1f} MiB | {m['torch_kib'] / 1024:.1f} MiB |")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"load_before": load_before, "load_after": load_after, "torch": torch_version, "peaks": peaks,
                 "rows": rows, "samples": samples, "memory": mem}, indent=1,
            )  # fmt: skip
        )


if __name__ == "__main__":
    main()
