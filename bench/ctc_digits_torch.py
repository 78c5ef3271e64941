#!/usr/bin/env python3
"""The digit-string transcriber trained in PyTorch on recur's sets, for the side-by-side numbers.

    cargo run --release -p recur-apps --example ctc_digits -- DIR 12 3000 2 sets.safetensors
    python3 bench/ctc_digits_torch.py sets.safetensors [--epochs 12] [--seconds S] [--threads 2]

The example writes the three sets (normalised MFCC frames and digits, exactly what recur trains
and tests on) and trains recur's model; this script trains the same model in PyTorch: a 2-layer
bidirectional nn.GRU of 128 units, nn.Linear to blank + 10 digits, nn.CTCLoss (blank 0, mean,
zero_infinity), Adam at 2e-3 with recur's cosine schedule over epochs (to 5% of the start),
gradient norm clipped at 5, batches of 16 from length-sorted pools of 16 batches, packed
sequences. It stops after --epochs or when --seconds of training have passed (checked after each
batch), then reports the frames/s of training and the digit and string error rates of best-path
decoding on the test set. Needs torch, numpy and safetensors.
"""

import argparse
import math
import time

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def load(path):
    t = load_file(path)
    sets = {}
    for name in ["train", "val", "test"]:
        frames, lengths = t[f"{name}/frames"], t[f"{name}/lengths"]
        digits, counts = t[f"{name}/digits"], t[f"{name}/digit_counts"]
        fo = np.concatenate([[0], np.cumsum(lengths)])
        do = np.concatenate([[0], np.cumsum(counts)])
        sets[name] = [(torch.from_numpy(frames[fo[i]:fo[i + 1]].copy()), [int(d) for d in digits[do[i]:do[i + 1]]])
                      for i in range(len(lengths))]
    return sets


class Transcriber(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.rnn = nn.GRU(dim, 128, num_layers=2, bidirectional=True)
        self.out = nn.Linear(256, 11)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        y, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(y)
        return self.out(y)  # (T, B, 11)


def batch(examples, idx):
    xs = [examples[i][0] for i in idx]
    lengths = torch.tensor([len(x) for x in xs])
    x = nn.utils.rnn.pad_sequence(xs)
    targets = torch.tensor([d + 1 for i in idx for d in examples[i][1]])
    tl = torch.tensor([len(examples[i][1]) for i in idx])
    return x, lengths, targets, tl


def epoch_batches(examples, size, gen):
    perm = torch.randperm(len(examples), generator=gen).tolist()
    out = []
    for p in range(0, len(perm), size * 16):
        pool = sorted(perm[p:p + size * 16], key=lambda i: len(examples[i][0]))
        out += [pool[k:k + size] for k in range(0, len(pool), size)]
    order = torch.randperm(len(out), generator=gen).tolist()
    return [out[k] for k in order]


def edits(r, h):
    d = list(range(len(h) + 1))
    for i, a in enumerate(r):
        prev, d[0] = d[0], i + 1
        for j, b in enumerate(h):
            prev, d[j + 1] = d[j + 1], min(prev + (a != b), d[j + 1] + 1, d[j] + 1)
    return d[len(h)]


def score(model, examples):
    model.eval()
    errors = digits = wrong = 0
    with torch.no_grad():
        for k in range(0, len(examples), 32):
            idx = list(range(k, min(k + 32, len(examples))))
            x, lengths, _, _ = batch(examples, idx)
            best = model(x, lengths).argmax(2)
            for j, i in enumerate(idx):
                path = best[: lengths[j], j].tolist()
                hyp = [p - 1 for n, p in enumerate(path) if p != 0 and (n == 0 or p != path[n - 1])]
                e = edits(examples[i][1], hyp)
                errors += e
                digits += len(examples[i][1])
                wrong += e > 0
    model.train()
    return errors / digits, wrong / len(examples)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    sets = load(a.sets)
    train = sets["train"]
    dim = train[0][0].shape[1]
    model = Transcriber(dim)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    ctc = nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
    gen = torch.Generator().manual_seed(1)
    frames = sum(len(x) for x, _ in train)
    print(f"{len(train)} training strings ({frames} frames), torch {torch.__version__}, {a.threads} threads")
    trained = 0
    t0 = time.perf_counter()
    done = False
    for e in range(a.epochs):
        w = 0.5 * (1 + math.cos(math.pi * min(e, a.epochs - 1) / max(a.epochs - 1, 1)))
        for g in opt.param_groups:
            g["lr"] = 2e-3 * (0.05 + 0.95 * w)
        total = 0.0
        batches = epoch_batches(train, 16, gen)
        for idx in batches:
            x, lengths, targets, tl = batch(train, idx)
            loss = ctc(model(x, lengths).log_softmax(2), targets, lengths, tl)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += loss.item()
            trained += int(lengths.sum())
            if a.seconds and time.perf_counter() - t0 > a.seconds:
                done = True
                break
        der, _ = score(model, sets["val"])
        print(f"epoch {e + 1} ({time.perf_counter() - t0:.0f} s): train CTC {total / len(batches):.4f}, "
              f"validation digit error rate {der:.4f}", flush=True)
        if done:
            break
    secs = time.perf_counter() - t0
    der, ser = score(model, sets["test"])
    print(f"trained {secs:.0f} s, {trained / secs:.0f} frames/s; test strings, best path: "
          f"digit error rate {der:.4f}, string error rate {ser:.4f}")


if __name__ == "__main__":
    main()
