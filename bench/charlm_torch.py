#!/usr/bin/env python3
"""PyTorch's side of the character-model benchmark: the same model, data layout, optimizer and
evaluation as `recur train`, trained for a wall-clock budget.

Same as recur: vocabulary = sorted set of characters; first (1 - val_frac) trains, the rest
validates; B parallel streams of S = (N - 1) // B characters, batches of T steps, hidden state
carried across batches and reset at each epoch; one-hot (or embedding) input -> nn.LSTM/GRU/RNN
-> nn.Linear decoder; mean cross-entropy; global-norm clipping; Adam (or the others); validation
= the validation text as B streams from a zero state, T steps at a time with the state carried,
mean loss over every predicted character. The clock counts training and evaluation, as recur's
--max-minutes does.

The regularisers of `recur train` (docs/semantics.md), built the AWD-LSTM way when any is on:
--weight-drop P (each layer's weight_hh through F.dropout once per batch, the layer run with
torch.func.functional_call, as AWD-LSTM's WeightDrop), --dropout between layers and
--dropout-output on the top layer's outputs, --dropout-input on the first layer's (embedded or
one-hot) input, drawn per element (--dropout-mode step, nn.LSTM's
way) or once per sequence for all steps (locked, AWD-LSTM's LockedDropout). With them the layers
are separate one-layer modules (the same parameters as one multi-layer nn.LSTM). The masks are
torch's own draws, not recur's.

--ema DECAY keeps recur's moving average of the weights (a copy after the first update, then
a_n = d a_(n-1) + (1 - d) w_n with d = min(DECAY, (1 + n) / (10 + n)) at update n); each
evaluation then measures the average (val_loss) and the raw weights (raw_val_loss), as recur's.

Prints one JSON object per evaluation on stdout:
  {"side": "torch", "step": .., "chars_seen": .., "elapsed_secs": .., "train_loss": .., "val_loss": ..}
(with --ema also "raw_val_loss").
Not a test: CI does not run it (it needs torch).
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def drop(x, p, locked, training):
    """Dropout of x (T, B, H): per element, or one (B, H) mask for every step when locked."""
    if not training or p == 0.0:
        return x
    if not locked:
        return F.dropout(x, p, True)
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


class CharModel(nn.Module):
    def __init__(self, v, cell, hidden, layers, dropout, embed, weight_drop=0.0,
                 dropout_output=0.0, locked=False, dropout_input=0.0, tie=False):
        super().__init__()
        self.v = v
        self.embedding = nn.Embedding(v, embed) if embed > 0 else None
        inp = embed if embed > 0 else v
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN, "rnn_tanh": nn.RNN}[cell]
        self.awd = weight_drop > 0 or dropout_output > 0 or dropout_input > 0 or locked
        self.dropout, self.weight_drop = dropout, weight_drop
        self.dropout_output, self.locked = dropout_output, locked
        self.dropout_input = dropout_input
        if self.awd:
            self.layers = nn.ModuleList(
                cls(inp if i == 0 else hidden, hidden) for i in range(layers))
        else:
            self.rnn = cls(inp, hidden, num_layers=layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, v)
        if tie:
            # recur's --tie-weights: one matrix, started as the decoder's uniform (nn.Linear's
            # bound 1/sqrt(hidden)), not as the embedding's N(0, 1)
            k = 1.0 / hidden ** 0.5
            nn.init.uniform_(self.embedding.weight, -k, k)
            self.decoder.weight = self.embedding.weight

    def forward(self, x, state):
        # x: (T, B) token ids
        if self.embedding is not None:
            e = self.embedding(x)
        else:
            e = F.one_hot(x, self.v).float()
        if not self.awd:
            y, state = self.rnn(e, state)
            return self.decoder(y), state
        # state: one per layer (a tuple for the LSTM), or None; input dropout on the embedded
        # (or one-hot) input, as recur's --dropout-input
        new, y = [], drop(e, self.dropout_input, self.locked, self.training)
        for i, layer in enumerate(self.layers):
            if i > 0:
                y = drop(y, self.dropout, self.locked, self.training)
            s = None if state is None else state[i]
            if self.weight_drop > 0 and self.training:
                w = dict(layer.named_parameters())
                w["weight_hh_l0"] = F.dropout(w["weight_hh_l0"], self.weight_drop, True)
                y, s = torch.func.functional_call(layer, w, (y, s))
            else:
                y, s = layer(y, s)
            new.append(s)
        y = drop(y, self.dropout_output, self.locked, self.training)
        return self.decoder(y), new


def cosine_lr(base, step, warmup, floor, total, elapsed, budget):
    """recur's `Schedule::Cosine` for the step after `step` steps: a linear warm-up, then a
    cosine from `base` to `base * floor` at step `total`, or without a step limit at the end of
    the time budget (the share of it elapsed, as recur's run does)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if total and total > warmup:
        p = (step - warmup) / (total - warmup)
    elif budget > 0:
        p = elapsed / budget
    else:
        return base
    p = min(max(p, 0.0), 1.0)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def ema_decay(decay, n):
    """recur's `ema_decay`: the average's decay at update n (1-based)."""
    return min(decay, (1 + n) / (10 + n))


@torch.no_grad()
def ema_update(avg, model, decay, n):
    """Folds the weights after update n into the average (a copy at the first update)."""
    if not avg:
        avg.extend(q.detach().clone() for q in model.parameters())
        return
    d = ema_decay(decay, n)
    for a, q in zip(avg, model.parameters()):
        a.mul_(d).add_(q.detach(), alpha=1 - d)


@torch.no_grad()
def swap(avg, model):
    """Exchanges the model's weights with the average's (twice restores both)."""
    for a, q in zip(avg, model.parameters()):
        tmp = q.detach().clone()
        q.copy_(a)
        a.copy_(tmp)


def detach(state):
    if state is None:
        return None
    if isinstance(state, list):
        return [detach(s) for s in state]
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def batch(ids, b, t, s, k):
    # inputs[j, i] = ids[i*s + k*t + j], targets one further
    base = torch.arange(b) * s + k * t
    pos = base.unsqueeze(0) + torch.arange(t).unsqueeze(1)  # (T, B)
    return ids[pos], ids[pos + 1]


@torch.no_grad()
def evaluate(model, val, b, t):
    model.eval()
    b = min(b, len(val) - 1)
    s = (len(val) - 1) // b
    total, count, state, off = 0.0, 0, None, 0
    while off < s:
        tt = min(t, s - off)
        base = torch.arange(b) * s + off
        pos = base.unsqueeze(0) + torch.arange(tt).unsqueeze(1)
        x, y = val[pos], val[pos + 1]
        logits, state = model(x, state)
        total += F.cross_entropy(logits.reshape(-1, model.v), y.reshape(-1), reduction="sum").item()
        count += y.numel()
        off += tt
    model.train()
    return total / count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/tinyshakespeare/input.txt")
    p.add_argument("--cell", default="lstm")
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--rnn-size", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--weight-drop", type=float, default=0.0)
    p.add_argument("--dropout-output", type=float, default=0.0)
    p.add_argument("--dropout-input", type=float, default=0.0)
    p.add_argument("--dropout-mode", choices=["step", "locked"], default="step")
    p.add_argument("--embed", type=int, default=0)
    p.add_argument("--tie-weights", action="store_true",
                   help="the decoder's weight is the embedding's (needs --embed equal to --rnn-size)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-length", type=int, default=64)
    p.add_argument("--optim", default="adam")
    p.add_argument("--learning-rate", "--lr", dest="lr", type=float, default=2e-3)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="cosine: recur's --lr-schedule cosine over --max-steps, else --max-minutes")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--lr-floor", type=float, default=0.05)
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=5.0)
    p.add_argument("--max-steps", type=int, default=0, help="0 = no step limit")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--ema", type=float, default=0.0,
                   help="moving average of the weights with this decay (0 = none), as recur's")
    a = p.parse_args()
    if a.tie_weights and a.embed != a.rnn_size:
        p.error(f"--tie-weights needs --embed equal to --rnn-size ({a.rnn_size}), got {a.embed}")
    if not 0.0 <= a.ema < 1.0:
        p.error(f"--ema must be in [0, 1), got {a.ema}")

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    text = open(a.data, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_val = round(len(ids) * a.val_frac)
    train, val = ids[: len(ids) - n_val], ids[len(ids) - n_val:]
    b, t = a.batch_size, a.seq_length
    s = (len(train) - 1) // b
    per_epoch = s // t

    model = CharModel(len(chars), a.cell, a.rnn_size, a.num_layers, a.dropout, a.embed,
                      a.weight_drop, a.dropout_output, a.dropout_mode == "locked",
                      a.dropout_input, a.tie_weights)
    opt = {
        "adam": lambda: torch.optim.Adam(model.parameters(), lr=a.lr),
        "rmsprop": lambda: torch.optim.RMSprop(model.parameters(), lr=a.lr),
        "adagrad": lambda: torch.optim.Adagrad(model.parameters(), lr=a.lr),
        "sgd": lambda: torch.optim.SGD(model.parameters(), lr=a.lr),
    }[a.optim]()

    budget = a.max_minutes * 60.0
    start = time.perf_counter()
    step, state, acc, acc_n = 0, None, 0.0, 0
    avg = []
    print(json.dumps({"side": "torch", "config": vars(a), "vocab": len(chars),
                      "params": sum(p.numel() for p in model.parameters()),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)

    def report(final):
        nonlocal acc, acc_n
        vl = evaluate(model, val, b, t)
        raw = None
        if avg:
            raw = vl
            swap(avg, model)
            vl = evaluate(model, val, b, t)
            swap(avg, model)
        row = {"side": "torch", "step": step, "chars_seen": step * b * t,
               "elapsed_secs": round(time.perf_counter() - start, 2),
               "train_loss": acc / max(acc_n, 1), "val_loss": vl, "final": final}
        if raw is not None:
            row["raw_val_loss"] = raw
        acc, acc_n = 0.0, 0
        print(json.dumps(row), flush=True)

    last_eval = -1
    while True:
        if time.perf_counter() - start >= budget or (a.max_steps and step >= a.max_steps):
            if last_eval != step:
                report(True)
            break
        k = step % per_epoch
        if k == 0:
            state = None
        x, y = batch(train, b, t, s, k)
        logits, state = model(x, state)
        state = detach(state)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        if a.lr_schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = cosine_lr(a.lr, step, a.warmup, a.lr_floor, a.max_steps,
                                    time.perf_counter() - start, budget)
        loss.backward()
        if a.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        step += 1
        if a.ema > 0:
            ema_update(avg, model, a.ema, step)
        acc += loss.item()
        acc_n += 1
        if a.eval_every and step % a.eval_every == 0:
            report(False)
            last_eval = step


if __name__ == "__main__":
    sys.exit(main())
