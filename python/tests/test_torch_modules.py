"""recur.torch.LSTM / GRU / RNN against torch.nn's own modules: outputs, final states and every
gradient, for random configurations of every cell and option; PackedSequence and unbatched
inputs; state_dict both ways; a short training run."""

import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import recur.torch as rt

# Named tolerances: recur and torch sum the same products in different orders.
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}

CELLS = {"lstm": (rt.LSTM, nn.LSTM), "gru": (rt.GRU, nn.GRU), "rnn": (rt.RNN, nn.RNN)}


def pair(cell, dtype, **kw):
    """A recur module and a torch.nn module with the same weights (recur's drawn by torch)."""
    ours, theirs = CELLS[cell]
    a = ours(**kw).to(dtype)
    b = theirs(**kw).to(dtype)
    b.load_state_dict(a.state_dict(), strict=True)
    return a, b


def random_config(rng, cell):
    kw = dict(
        input_size=rng.randint(1, 9),
        hidden_size=rng.randint(1, 12),
        num_layers=rng.randint(1, 3),
        bias=rng.random() < 0.7,
        batch_first=rng.random() < 0.5,
        bidirectional=rng.random() < 0.5,
    )
    if cell == "lstm" and rng.random() < 0.4 and kw["hidden_size"] > 1:
        kw["proj_size"] = rng.randint(1, kw["hidden_size"] - 1)
    if cell == "rnn":
        kw["nonlinearity"] = rng.choice(["tanh", "relu"])
    return kw


def run(m, x, hx, gy, gh):
    """Forward, then backward of sum(y * gy) + sum(h_n * gh) (+ c_n for an LSTM): outputs and
    the gradients of x, the initial state and every parameter."""
    for p in m.parameters():
        p.grad = None
    y, hn = m(x, hx)
    if isinstance(hn, tuple):
        loss = (y * gy).sum() + (hn[0] * gh[0]).sum() + (hn[1] * gh[1]).sum()
    else:
        loss = (y * gy).sum() + (hn * gh).sum()
    ins = [x] + ([] if hx is None else (list(hx) if isinstance(hx, tuple) else [hx]))
    grads = torch.autograd.grad(loss, ins + list(m.parameters()))
    return y, hn, grads


def close(a, b, what, dtype):
    torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("seed", range(6))
def test_random_configurations_match_torch(cell, dtype, seed):
    rng = random.Random(f"{cell}-{seed}")
    torch.manual_seed(seed)
    kw = random_config(rng, cell)
    a, b = pair(cell, dtype, **kw)
    t, n = rng.randint(1, 7), rng.randint(1, 4)
    x = torch.randn((n, t, kw["input_size"]) if kw["batch_first"] else (t, n, kw["input_size"]), dtype=dtype)
    x.requires_grad_(True)
    nd = kw["num_layers"] * (2 if kw["bidirectional"] else 1)
    h, p = kw["hidden_size"], kw.get("proj_size", 0) or kw["hidden_size"]
    hx = None
    if seed % 2 == 0:
        h0 = torch.randn(nd, n, p, dtype=dtype, requires_grad=True)
        hx = (h0, torch.randn(nd, n, h, dtype=dtype, requires_grad=True)) if cell == "lstm" else h0
    with torch.no_grad():
        y_ref, hn_ref = b(x, hx)  # the outputs' shapes
    gy = torch.randn_like(y_ref)
    gh = (torch.randn_like(hn_ref[0]), torch.randn_like(hn_ref[1])) if cell == "lstm" else torch.randn_like(hn_ref)
    y1, hn1, g1 = run(a, x, hx, gy, gh)
    y2, hn2, g2 = run(b, x, hx, gy, gh)
    close(y1, y2, f"output {kw}", dtype)
    if cell == "lstm":
        close(hn1[0], hn2[0], "h_n", dtype)
        close(hn1[1], hn2[1], "c_n", dtype)
    else:
        close(hn1, hn2, "h_n", dtype)
    names = ["x"] + (["h0", "c0"] if cell == "lstm" else ["h0"] if hx is not None else [])
    names = names[: len(g1) - len(list(a.parameters()))] + [n for n, _ in a.named_parameters()]
    for name, ga, gb in zip(names, g1, g2):
        close(ga, gb, f"gradient of {name} {kw}", dtype)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequences_match_torch(cell, enforce_sorted):
    torch.manual_seed(1)
    kw = dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True)
    a, b = pair(cell, torch.float64, **kw)
    lengths = [5, 5, 3, 1] if enforce_sorted else [2, 5, 1, 4]
    x = torch.randn(5, 4, 4, dtype=torch.float64, requires_grad=True)
    outs = []
    for m in (a, b):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
        x.grad = None
        for p in m.parameters():
            p.grad = None
        y, hn = m(packed)
        hn = hn[0] + hn[1].sum() if cell == "lstm" else hn
        assert torch.equal(y.batch_sizes, packed.batch_sizes)
        (y.data.sin().sum() + hn.cos().sum()).backward()
        outs.append((y, hn, x.grad.clone(), [p.grad.clone() for p in m.parameters()]))
    (ya, ha, xa, pa), (yb, hb, xb, pb) = outs
    close(ya.data, yb.data, "packed output", torch.float64)
    if enforce_sorted:
        assert ya.sorted_indices is None and yb.sorted_indices is None
    else:
        assert torch.equal(ya.sorted_indices, yb.sorted_indices)
        assert torch.equal(ya.unsorted_indices, yb.unsorted_indices)
    close(ha, hb, "h_n", torch.float64)
    close(xa, xb, "input gradient", torch.float64)
    for i, (ga, gb) in enumerate(zip(pa, pb)):
        close(ga, gb, f"parameter {i} gradient", torch.float64)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_unbatched_input_matches_torch(cell):
    torch.manual_seed(2)
    a, b = pair(cell, torch.float32, input_size=3, hidden_size=5, num_layers=2)
    x = torch.randn(6, 3)
    h0 = torch.randn(2, 5)
    hx = (h0, torch.randn(2, 5)) if cell == "lstm" else h0
    (ya, ha), (yb, hb) = a(x, hx), b(x, hx)
    assert ya.shape == yb.shape == (6, 5)
    close(ya, yb, "output", torch.float32)
    if cell == "lstm":
        close(ha[0], hb[0], "h_n", torch.float32)
        close(ha[1], hb[1], "c_n", torch.float32)
        assert ha[0].shape == (2, 5)
    else:
        close(ha, hb, "h_n", torch.float32)
        assert ha.shape == (2, 5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_dict_round_trips_both_ways(cell):
    kw = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    if cell == "lstm":
        kw["proj_size"] = 2
    ours, theirs = CELLS[cell]
    torch.manual_seed(3)
    a = ours(**kw)
    torch.manual_seed(3)
    b = theirs(**kw)
    # the same names, shapes and initial values from torch's generator
    assert list(a.state_dict()) == list(b.state_dict())
    for k in a.state_dict():
        assert torch.equal(a.state_dict()[k], b.state_dict()[k]), k
    c = theirs(**kw)
    c.load_state_dict(a.state_dict(), strict=True)
    d = ours(**kw)
    d.load_state_dict(c.state_dict(), strict=True)
    for k in a.state_dict():
        assert torch.equal(d.state_dict()[k], a.state_dict()[k]), k
    assert isinstance(a, theirs)


def test_dropout_is_drawn_from_torch_seed_and_off_in_eval():
    torch.manual_seed(4)
    a, b = pair("lstm", torch.float32, input_size=3, hidden_size=8, num_layers=3, dropout=0.5)
    x = torch.randn(5, 2, 3)
    a.train()
    torch.manual_seed(10)
    y1, _ = a(x)
    torch.manual_seed(10)
    y2, _ = a(x)
    y3, _ = a(x)
    assert torch.equal(y1, y2), "the same torch seed must give the same masks"
    assert not torch.equal(y2, y3), "a new seed must give new masks"
    a.eval()
    b.eval()
    close(a(x)[0], b(x)[0], "eval-mode output", torch.float32)
    assert not torch.allclose(y1, a(x)[0]), "training mode must drop out"


def test_no_grad_runs_without_keeping_a_graph():
    a, b = pair("gru", torch.float32, input_size=3, hidden_size=4)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        y, h = a(x)
    assert y.grad_fn is None and not y.requires_grad
    close(y, b(x)[0].detach(), "no-grad output", torch.float32)


def test_backward_twice_with_retain_graph_gives_the_same_gradients():
    a, _ = pair("lstm", torch.float32, input_size=3, hidden_size=4, num_layers=2)
    x = torch.randn(4, 2, 3, requires_grad=True)
    y, _ = a(x)
    g1 = torch.autograd.grad(y.sum(), [x] + list(a.parameters()), retain_graph=True)
    g2 = torch.autograd.grad(y.sum(), [x] + list(a.parameters()))
    for u, v in zip(g1, g2):
        assert torch.equal(u, v)


def test_adam_training_follows_torch():
    """50 Adam steps of a small sequence classifier: the same losses with recur's GRU as with
    torch's, within 1e-4 relative (float32 sums in a different order drift a little)."""
    losses = {}
    for name, cls in (("recur", rt.GRU), ("torch", nn.GRU)):
        torch.manual_seed(5)
        rnn = cls(4, 16, num_layers=2, batch_first=True)
        head = nn.Linear(16, 3)
        opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-2)
        data = torch.Generator().manual_seed(6)
        x = torch.randn(32, 10, 4, generator=data)
        target = torch.randint(0, 3, (32,), generator=data)
        out = []
        for _ in range(50):
            opt.zero_grad()
            y, h = rnn(x)
            loss = nn.functional.cross_entropy(head(y[:, -1]), target)
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[name] = out
    assert losses["recur"][-1] < 0.5 * losses["recur"][0], "training must learn"
    for i, (u, v) in enumerate(zip(losses["recur"], losses["torch"])):
        assert abs(u - v) <= 1e-4 * abs(v), f"step {i}: recur {u}, torch {v}"
