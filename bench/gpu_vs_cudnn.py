#!/usr/bin/env python3
"""recur's CUDA backend against PyTorch's cuDNN RNNs, side by side on one GPU.

What it does, in one process on the GPU machine:
  1. records the card, driver, CUDA, cuDNN and PyTorch versions;
  2. measures the card's two ceilings: float32 GEMM rate (cuBLAS through torch.mm, TF32 off)
     and memory bandwidth (a large device-to-device copy, bytes read + written);
  3. times `recur bench --device cuda --grid --mode both --json` and torch.nn.{LSTM,GRU,RNN}
     (cuDNN, float32, TF32 off) on the same shapes, alternating whole rounds (recur, torch,
     recur, torch), with CUDA events, medians of --iters calls after --warmup calls;
  4. times the char-model training step (one-hot vocabulary 65 -> 2-layer LSTM 512 -> linear
     decoder -> mean cross-entropy -> gradient-norm clipping at 5 -> Adam, B = 64, T = 128):
     `recur bench --charlm --device cuda` (recur's GPU engine, the one `recur train --device
     cuda` runs) against the same model in PyTorch (torch.nn.LSTM on cuDNN, F.one_hot input as
     bench/torch_bench.py does), alternating rounds; both timed by the wall clock per step with
     the device synchronised at the end of each step (recur's loop also reads the loss and the
     gradient norm back every step);
  5. prints a table of ratios (cuDNN ms / recur ms: above 1 means recur is faster) last.

Inference is a forward over the sequence (torch under no_grad); training is forward plus
backward of the outputs against a fixed random gradient (parameter gradients accumulated, no
input gradient), for both. Input size = hidden size. Results also go to --out as JSON.

Usage: python3 bench/gpu_vs_cudnn.py --recur PATH/TO/recur [--out DIR] [--rounds 2] [--only charlm]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch


def grid():
    hbt = [(512, 64, 100), (1024, 64, 100), (512, 256, 100), (256, 1, 512), (1024, 1, 256)]
    out = []
    for cell in ["lstm", "gru", "rnn_tanh"]:
        for h, b, t in hbt:
            out.append(dict(cell=cell, h=h, b=b, t=t, layers=1))
        if cell == "lstm":
            out.append(dict(cell=cell, h=2048, b=32, t=50, layers=1))
            out.append(dict(cell=cell, h=512, b=64, t=100, layers=2))
    return out


def key(s, mode):
    return (s["cell"], s["h"], s["b"], s["t"], s["layers"], mode)


def time_cuda(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def torch_round(shapes, warmup, iters):
    res = {}
    for s in shapes:
        h, b, t, layers = s["h"], s["b"], s["t"], s["layers"]
        if s["cell"] == "lstm":
            m = torch.nn.LSTM(h, h, num_layers=layers)
        elif s["cell"] == "gru":
            m = torch.nn.GRU(h, h, num_layers=layers)
        else:
            m = torch.nn.RNN(h, h, num_layers=layers, nonlinearity="tanh")
        m = m.cuda().float()
        x = torch.randn(t, b, h, device="cuda")
        dy = torch.randn(t, b, h, device="cuda")

        def infer():
            with torch.no_grad():
                m(x)

        def train():
            y, _ = m(x)
            y.backward(dy)

        res[key(s, "infer")] = time_cuda(infer, warmup, iters)
        res[key(s, "train")] = time_cuda(train, warmup, iters)
        del m, x, dy
    return res


def recur_round(recur, warmup, iters, small_batch=8, persistent=False):
    cmd = [recur, "bench", "--device", "cuda", "--grid", "--mode", "both", "--json",
           "--warmup", str(warmup), "--repeats", str(iters), "--small-batch", str(small_batch)]
    if persistent:
        cmd.append("--persistent")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    if p.stderr.strip():
        print(p.stderr.strip(), file=sys.stderr)
    res = {}
    for line in p.stdout.splitlines():
        r = json.loads(line)
        res[key(r, r["mode"])] = (r["eager_ms"], r["graph_ms"])
    return res


CHARLM = dict(v=65, h=512, layers=2, b=64, t=128, lr=2e-3, clip=5.0)


def torch_charlm(warmup, iters):
    """Median wall-clock ms of PyTorch's char-model training step on the GPU."""
    c = CHARLM
    v = c["v"]

    class CharModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(v, c["h"], num_layers=c["layers"])
            self.decoder = torch.nn.Linear(c["h"], v)

        def forward(self, ids):
            x = torch.nn.functional.one_hot(ids, v).float()
            y, _ = self.rnn(x)
            return self.decoder(y)

    torch.manual_seed(3)
    model = CharModel().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    ids = torch.randint(0, v, (c["t"], c["b"]), device="cuda")
    targets = torch.randint(0, v, (c["t"], c["b"]), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip"])
        opt.step()
        torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t0) * 1e3)
    del model, opt
    torch.cuda.empty_cache()
    return statistics.median(ts)


def recur_charlm(recur, warmup, iters):
    """Median wall-clock ms of `recur bench --charlm --device cuda` (one step per sample)."""
    c = CHARLM
    cmd = [recur, "bench", "--charlm", "--device", "cuda", "--batch-size", str(c["b"]),
           "--seq-length", str(c["t"]), "--warmup", str(warmup), "--repeats", str(iters),
           "--min-sample-ms", "1", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r["median_s"] * 1e3, r.get("last_loss")


def charlm_rounds(recur, rounds, warmup, iters):
    rec, tor = [], []
    for r in range(rounds):
        ms, loss = recur_charlm(recur, warmup, iters)
        rec.append(ms)
        tor.append(torch_charlm(warmup, iters))
        print(f"charlm round {r}: recur {ms:.3f} ms (loss {loss}), torch {tor[-1]:.3f} ms",
              flush=True)
    return dict(CHARLM, recur_ms=statistics.median(rec), cudnn_ms=statistics.median(tor),
                recur_rounds=rec, cudnn_rounds=tor)


def print_charlm(row, rounds, iters):
    c = row
    chars = c["b"] * c["t"]
    print(f"char-model training step (one-hot V={c['v']}, LSTM {c['layers']}x{c['h']}, "
          f"B={c['b']}, T={c['t']}, decoder, cross-entropy, clip {c['clip']}, Adam): wall-clock "
          f"ms per step, medians of {rounds} rounds x {iters} steps")
    print(f"{'':<8} {'cuDNN ms':>9} {'recur ms':>9} {'ratio':>6} {'recur chars/s':>14}")
    print(f"{'charlm':<8} {c['cudnn_ms']:9.3f} {c['recur_ms']:9.3f} "
          f"{c['cudnn_ms'] / c['recur_ms']:6.2f} {chars / (c['recur_ms'] * 1e-3):14.0f}")


def ceilings():
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 8192
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    ms = time_cuda(lambda: torch.mm(a, b), 3, 10)
    gemm_tflops = 2 * n ** 3 / (ms * 1e-3) / 1e12
    del a, b
    src = torch.randn(512 * 1024 * 1024 // 4 * 4, device="cuda")  # 2 GiB of float32
    dst = torch.empty_like(src)
    ms = time_cuda(lambda: dst.copy_(src), 3, 10)
    bw = 2 * src.numel() * 4 / (ms * 1e-3) / 1e12
    del src, dst
    torch.cuda.empty_cache()
    return gemm_tflops, bw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recur", required=True)
    ap.add_argument("--out", default=".")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--only", choices=["charlm"], help="time only the char-model step")
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(0)
    dev = torch.cuda.get_device_properties(0)
    drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    env = dict(card=dev.name, sms=dev.multi_processor_count, driver=drv,
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print("env:", json.dumps(env), flush=True)
    gemm_tflops, bw = ceilings()
    print(f"ceilings: fp32 GEMM {gemm_tflops:.1f} TFLOP/s (8192^3, TF32 off), "
          f"copy {bw:.2f} TB/s (2 GiB, read+write)", flush=True)
    charlm = charlm_rounds(a.recur, max(a.rounds, 3), a.warmup, a.iters)
    with open(os.path.join(a.out, "gpu_charlm.json"), "w") as f:
        json.dump(dict(env=env, row=charlm), f, indent=1)
    if a.only == "charlm":
        print()
        print(f"{env['card']}, driver {drv}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
              f"torch {env['torch']}; float32, TF32 off")
        print_charlm(charlm, max(a.rounds, 3), a.iters)
        return

    shapes = grid()
    rec, tor, rec0, recp = [], [], [], []
    for r in range(a.rounds):
        t0 = time.time()
        rec.append(recur_round(a.recur, a.warmup, a.iters))
        t1 = time.time()
        tor.append(torch_round(shapes, a.warmup, a.iters))
        t2 = time.time()
        # recur again with the fused small-batch kernel off (cuBLAS + cell kernel every step)
        rec0.append(recur_round(a.recur, a.warmup, a.iters, small_batch=0))
        t3 = time.time()
        # recur with the persistent one-launch forward (B <= 8, H <= 1024; larger shapes unchanged)
        recp.append(recur_round(a.recur, a.warmup, a.iters, persistent=True))
        print(f"round {r}: recur {t1 - t0:.1f} s, torch {t2 - t1:.1f} s, "
              f"recur without step_small {t3 - t2:.1f} s, recur persistent {time.time() - t3:.1f} s",
              flush=True)

    rows = []
    for s in shapes:
        for mode in ["infer", "train"]:
            k = key(s, mode)
            cu = statistics.median([x[k] for x in tor])
            ea = statistics.median([x[k][0] for x in rec])
            gs = [x[k][1] for x in rec if x[k][1] is not None]
            gr = statistics.median(gs) if gs else None
            g0 = [x[k][1] for x in rec0 if x[k][1] is not None]
            gr0 = statistics.median(g0) if g0 else None
            ea0 = statistics.median([x[k][0] for x in rec0])
            gp = [x[k][1] for x in recp if x[k][1] is not None]
            grp = statistics.median(gp) if gp else None
            eap = statistics.median([x[k][0] for x in recp])
            g = {"lstm": 4, "gru": 3}.get(s["cell"], 1)
            h, b, t = s["h"], s["b"], s["t"]
            # GEMM work: forward 2*T*B*G*H*(I + H) per layer (I = H); training adds dX, dW_ih,
            # dh and dW_hh: three times the forward
            flops = s["layers"] * 2 * t * b * g * h * (2 * h) * (3 if mode == "train" else 1)
            best = min(v for v in [ea, gr] if v)
            rows.append(dict(s, mode=mode, cudnn_ms=cu, recur_eager_ms=ea, recur_graph_ms=gr,
                             recur_nosmall_eager_ms=ea0, recur_nosmall_graph_ms=gr0,
                             recur_persistent_eager_ms=eap, recur_persistent_graph_ms=grp,
                             recur_persistent_rounds=[x[k] for x in recp],
                             gemm_flops=flops, recur_tflops=flops / (best * 1e-3) / 1e12,
                             cudnn_tflops=flops / (cu * 1e-3) / 1e12,
                             cudnn_rounds=[x[k] for x in tor], recur_rounds=[x[k] for x in rec],
                             recur_nosmall_rounds=[x[k] for x in rec0]))
    with open(os.path.join(a.out, "gpu_vs_cudnn.json"), "w") as f:
        json.dump(dict(env=env, gemm_tflops=gemm_tflops, copy_tbs=bw, rows=rows), f, indent=1)

    print()
    print(f"{env['card']}, driver {drv}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, torch {env['torch']}; "
          f"fp32 GEMM {gemm_tflops:.1f} TFLOP/s, copy {bw:.2f} TB/s; float32, TF32 off")
    print("ratio = cuDNN ms / recur ms (> 1: recur faster); medians of "
          f"{a.rounds} rounds x {a.iters} calls")
    print("recur ms: eager (launches from the host); graph ms: the same work replayed from a CUDA "
          "graph; noSB: graph ratio with the fused small-batch step kernel off (B <= 8 rows); "
          "pers: graph ratio with the persistent one-launch forward (B <= 8 rows); "
          "TF/s: GEMM TFLOP/s of the faster recur time (without pers)")
    print(f"{'cell':<8} {'H':>5} {'B':>4} {'T':>4} {'L':>2} {'mode':<5} {'cuDNN ms':>9} "
          f"{'recur ms':>9} {'graph ms':>9} {'ratio':>6} {'r.graph':>7} {'noSB':>5} {'pers':>5} "
          f"{'TF/s':>5}")
    for r in rows:
        g = r["recur_graph_ms"]
        gs = f"{g:9.3f}" if g else f"{'-':>9}"
        rg = f"{r['cudnn_ms'] / g:7.2f}" if g else f"{'-':>7}"
        g0 = r["recur_nosmall_graph_ms"]
        r0 = f"{r['cudnn_ms'] / g0:5.2f}" if (g0 and r["b"] <= 8) else f"{'-':>5}"
        gp = r["recur_persistent_graph_ms"]
        rp = f"{r['cudnn_ms'] / gp:5.2f}" if (gp and r["b"] <= 8) else f"{'-':>5}"
        print(f"{r['cell']:<8} {r['h']:>5} {r['b']:>4} {r['t']:>4} {r['layers']:>2} {r['mode']:<5} "
              f"{r['cudnn_ms']:9.3f} {r['recur_eager_ms']:9.3f} {gs} "
              f"{r['cudnn_ms'] / r['recur_eager_ms']:6.2f} {rg} {r0} {rp} {r['recur_tflops']:5.1f}")
    print()
    print_charlm(charlm, max(a.rounds, 3), a.iters)


if __name__ == "__main__":
    main()
