"""PyTorch's side of the side-by-side benchmark (`bench/compare.py` drives it).

Times exactly what `recur bench` times, with the same shapes, in float32 on the CPU, with
torch.set_num_threads(threads):
- a stack (nn.RNN tanh / nn.LSTM / nn.GRU, input = hidden = H): inference (forward under
  torch.inference_mode) or a training step (forward, backward of a fixed random output gradient,
  gradients of the weights and of the input, gradients reset to None each step);
- the char-model training step (one-hot over 65 symbols, 2-layer LSTM 512, linear decoder,
  cross-entropy, clip_grad_norm_(5), Adam), B = 32, T = 64;
- one square float32 matrix product (torch.mm), for the machine's GEMM throughput.

Modes:
  python3 torch_bench.py --serve     reads one JSON request per line on stdin, answers one JSON
                                      line per request on stdout (keeps torch loaded between points)
  python3 torch_bench.py --mem REQ   runs REQ (a JSON request) once in this process and prints the
                                      peak resident set size (VmHWM, KiB) before building anything
                                      and after warm-up + one step

A request is {"kind": "stack", "cell", "hidden", "batch", "seq_length", "layers", "mode",
"threads", optional "precision": "f32" (default), "bf16" (inference, or training's forward,
under CPU autocast to bfloat16; the backward outside it, as PyTorch's mixed-precision recipe
runs it) or "int8" (inference of `torch.ao.quantization.quantize_dynamic(net, dtype=qint8)`,
LSTM and GRU: weights quantized and packed once, activations per step), optional "proj_size"
(an LSTM's projection, as `recur bench --proj-size`; its GFLOP/s count leaves the projection
out, its tokens/s are exact)} or {"kind": "charlm", "threads", optional "precision": "f32" or
"bf16" (as a stack's training)} or {"kind": "gemm", "n", "threads"}. This script
asserts nothing; it reports what it measured.
"""

import json
import resource
import sys
import time

import torch

WARMUP = 2
REPEATS = 7
MIN_SAMPLE_S = 0.05


def peak_rss_kib():
    """This process's peak resident set size so far (VmHWM, KiB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def time_median(work):
    """Median per-call wall time over REPEATS samples of at least MIN_SAMPLE_S each."""
    for _ in range(WARMUP):
        work()
    t0 = time.perf_counter()
    work()
    one = max(time.perf_counter() - t0, 1e-9)
    iters = max(1, int(-(-MIN_SAMPLE_S // one)))
    samples = []
    # a call that takes over half a second (a badly loaded machine) gets at most 3 samples,
    # the same rule as `recur bench`
    for _ in range(REPEATS if one <= 0.5 else min(REPEATS, 3)):
        t = time.perf_counter()
        for _ in range(iters):
            work()
        samples.append((time.perf_counter() - t) / iters)
    samples.sort()
    return samples[len(samples) // 2]


def stack_work(req, cls=None):
    """A stack's inference or training step; `cls` replaces the torch.nn module
    (bench/python_modules.py passes recur.torch's)."""
    cell, h, b, t = req["cell"], req["hidden"], req["batch"], req["seq_length"]
    layers, train = req.get("layers", 1), req["mode"] == "train"
    cls = cls or {"rnn": torch.nn.RNN, "rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    torch.manual_seed(7)
    # an LSTM's projection (proj_size): the output and the state are P wide
    proj = req.get("proj_size", 0)
    net = cls(h, h, num_layers=layers, proj_size=proj) if proj else cls(h, h, num_layers=layers)
    precision = req.get("precision", "f32")
    if precision == "int8" and train:
        raise SystemExit("torch_bench: precision int8 is for inference only")
    bf16 = precision == "bf16"
    if precision == "int8":
        net = torch.ao.quantization.quantize_dynamic(net, {torch.nn.LSTM, torch.nn.GRU}, dtype=torch.qint8)
    x = torch.rand(t, b, h) * 2 - 1
    dy = torch.rand(t, b, proj or h) * 2 - 1
    if train:
        x.requires_grad_(True)

        def work():
            for p in net.parameters():
                p.grad = None
            x.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y, _ = net(x)
            y.backward(dy.to(y.dtype))

    else:

        def work():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                net(x)

    return work


def charlm_work(req, rnn=None):
    """The char-model training step; `rnn` replaces torch.nn.LSTM (bench/python_modules.py
    passes recur.torch.LSTM)."""
    rnn = rnn or torch.nn.LSTM
    v, h, layers, b, t = 65, 512, 2, 32, 64

    class CharModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn(v, h, num_layers=layers)
            self.decoder = torch.nn.Linear(h, v)

        def forward(self, ids):
            x = torch.nn.functional.one_hot(ids, v).float()
            y, _ = self.rnn(x)
            return self.decoder(y)

    torch.manual_seed(3)
    model = CharModel()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    ids = torch.randint(0, v, (t, b))
    targets = torch.randint(0, v, (t, b))

    bf16 = req.get("precision", "f32") == "bf16"

    def work():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    return work


def gemm_work(req):
    n = req["n"]
    a = torch.rand(n, n)
    b = torch.rand(n, n)
    c = torch.empty(n, n)
    return lambda: torch.mm(a, b, out=c)


def build(req):
    torch.set_num_threads(req["threads"])
    return {"stack": stack_work, "charlm": charlm_work, "gemm": gemm_work}[req["kind"]](req)


def answer(req):
    s = time_median(build(req))
    out = {"median_s": s, "threads": torch.get_num_threads(), "torch": torch.__version__}
    if req["kind"] == "stack":
        tokens = req["batch"] * req["seq_length"]
        g = {"rnn": 1, "rnn_tanh": 1, "gru": 3, "lstm": 4}[req["cell"]]
        h = req["hidden"]
        flops = 2.0 * tokens * g * h * 2 * h * req.get("layers", 1) * (3 if req["mode"] == "train" else 1)
        out.update(tokens_per_s=tokens / s, gflops=flops / s / 1e9)
    elif req["kind"] == "charlm":
        out.update(chars_per_s=32 * 64 / s)
    else:
        out.update(gflops=2.0 * req["n"] ** 3 / s / 1e9)
    return out


def main():
    if sys.argv[1:2] == ["--serve"]:
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(answer(json.loads(line))), flush=True)
    elif sys.argv[1:2] == ["--mem"]:
        req = json.loads(sys.argv[2])
        before = peak_rss_kib()
        work = build(req)
        for _ in range(WARMUP + 1):
            work()
        after = peak_rss_kib()
        print(json.dumps({"baseline_kib": before, "peak_kib": after}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
