"""recur.Stack on numpy arrays: gradients against float64 central differences (dropout and
lengths included), float32 against float64, threads, the GIL released while recur computes."""

import threading
import time

import numpy as np
import pytest

import recur

# central differences in float64 with step 1e-6: truncation and rounding both near 1e-9
FD_TOL = 1e-7


def loss_and_grads(s, w, x, h0, c0, lengths, seed, gy, gh):
    y, h_n, c_n, run = s.forward(w, x, h0, c0, lengths, seed)
    loss = float((y * gy).sum() + (h_n * gh).sum())
    dx, dh0, dc0, g = run.backward(x, gy, gh)
    return loss, dx, dh0, g


AWD = dict(weight_drop=0.4, dropout_output=0.2, dropout_mode="locked", dropout_input=0.3)


@pytest.mark.parametrize(
    "cell,regs",
    [("lstm", {}), ("gru", {}), ("rnn_tanh", {}), ("rnn_relu", {}), ("lstm", AWD), ("gru", AWD)],
)
def test_gradients_match_finite_differences(cell, regs):
    rng = np.random.default_rng(0)
    s = recur.Stack(cell, 3, 4, num_layers=2, bidirectional=True, dropout=0.3, **regs)
    w = s.init(seed=2, dtype="float64")
    t, b = 5, 3
    x = rng.standard_normal((t, b, 3))
    nd, p, h = s.state_sizes
    h0 = rng.standard_normal((nd, b, p))
    c0 = rng.standard_normal((nd, b, h)) if cell == "lstm" else None
    lengths = [5, 2, 4]
    gy = rng.standard_normal((t, b, s.output_size))
    gh = rng.standard_normal((nd, b, p))
    args = (lengths, 7, gy, gh)  # dropout seed 7: the same masks at every call (all kinds)
    _, dx, dh0, g = loss_and_grads(s, w, x, h0, c0, *args)

    def fd(f, arr):
        out = np.zeros_like(arr)
        it = np.nditer(arr, flags=["multi_index"])
        for _ in it:
            i = it.multi_index
            keep = arr[i]
            arr[i] = keep + 1e-6
            up = f()
            arr[i] = keep - 1e-6
            down = f()
            arr[i] = keep
            out[i] = (up - down) / 2e-6
        return out

    loss = lambda: loss_and_grads(s, w, x, h0, c0, *args)[0]  # noqa: E731
    np.testing.assert_allclose(dx, fd(loss, x), atol=FD_TOL, rtol=FD_TOL)
    np.testing.assert_allclose(dh0, fd(loss, h0), atol=FD_TOL, rtol=FD_TOL)
    flat = np.concatenate([a.ravel() for a in w])
    offset = 0
    for name, a in zip(s.param_names, w):
        want = fd(loss, a)
        got = g[offset : offset + a.size].reshape(a.shape)
        np.testing.assert_allclose(got, want, atol=FD_TOL, rtol=FD_TOL, err_msg=name)
        offset += a.size
    assert offset == flat.size == s.num_params
    # padded steps of a shorter sequence are zeros, as torch's pad_packed_sequence gives
    y = s.forward(w, x, h0, c0, lengths, 7, False)[0]
    assert not y[2:, 1].any() and not y[4:, 2].any()


def test_float32_follows_float64_and_flat_weights_work():
    s = recur.Stack("gru", 6, 16, num_layers=2)
    w64 = s.init(seed=3, dtype="float64")
    w32 = s.init(seed=3)
    assert all(a.dtype == np.float32 and np.array_equal(a, b.astype(np.float32)) for a, b in zip(w32, w64))
    x = np.random.default_rng(1).standard_normal((20, 4, 6))
    y64 = s.forward(w64, x, keep=False)[0]
    y32 = s.forward(w32, x.astype(np.float32), keep=False)[0]
    np.testing.assert_allclose(y32, y64, atol=1e-5)
    flat = np.concatenate([a.ravel() for a in w32])
    y32b = s.forward(flat, x.astype(np.float32), keep=False)[0]
    assert np.array_equal(y32, y32b)
    assert s.param_names[:2] == ["weight_ih_l0", "weight_hh_l0"]
    assert s.param_shapes[0] == [48, 6]


def test_threads_follow_torch_unless_set():
    torch = pytest.importorskip("torch")
    import recur.torch as rt

    before = torch.get_num_threads()
    try:
        recur._threads_set = False
        torch.set_num_threads(1)
        rt.GRU(2, 3)(torch.randn(3, 1, 2))
        assert recur.get_num_threads() == 1
        torch.set_num_threads(2)
        rt.GRU(2, 3)(torch.randn(3, 1, 2))
        assert recur.get_num_threads() == 2
        recur.set_num_threads(3)
        torch.set_num_threads(1)
        rt.GRU(2, 3)(torch.randn(3, 1, 2))
        assert recur.get_num_threads() == 3
    finally:
        recur._threads_set = False
        torch.set_num_threads(before)


def test_the_gil_is_released_while_recur_computes():
    """While one thread runs a long forward, another Python thread keeps running: the longest
    pause it sees is far shorter than the forward."""
    s = recur.Stack("lstm", 64, 256)
    w = s.init()
    x = np.ones((400, 8, 64), np.float32)
    t0 = time.perf_counter()
    s.forward(w, x, keep=False)
    alone = time.perf_counter() - t0
    done = threading.Event()
    worker = threading.Thread(target=lambda: (s.forward(w, x, keep=False), done.set()))
    stamps = []
    worker.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    gaps = np.diff(stamps) if len(stamps) > 1 else [alone]
    assert max(gaps) < 0.5 * alone, f"the Python thread stalled {max(gaps):.3f} s of a {alone:.3f} s forward"


def test_reused_workspaces_give_the_same_results_as_fresh_ones():
    """A stack hands a finished run's workspace to its next forward of the same shape: what an
    earlier call (other lengths, states, dropout, dtype) left there must not change a result."""
    rng = np.random.default_rng(3)
    cfg = ("lstm", 3, 5)
    kw = dict(num_layers=2, bidirectional=True, dropout=0.4)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    h0 = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dy = rng.standard_normal((6, 3, 10)).astype(np.float32)
    calls = [
        dict(h0=h0, c0=h0, lengths=[6, 2, 4], dropout_seed=1),
        dict(lengths=None, dropout_seed=None),
        dict(h0=h0, lengths=[1, 6, 3], dropout_seed=9),
    ]

    def one(s, w, call):
        y, h_n, c_n, run = s.forward(w, x, **call)
        return [y, h_n, c_n, *run.backward(x, dy, h_n, c_n)]

    fresh = []
    for call in calls:
        s = recur.Stack(*cfg, **kw)
        fresh.append(one(s, s.init(seed=4), call))
    s = recur.Stack(*cfg, **kw)
    w = s.init(seed=4)
    s.forward(s.init(seed=4, dtype="float64"), x.astype(np.float64), keep=False)  # another dtype in the pool
    for _ in range(2):
        for call, want in zip(calls, fresh):
            got = one(s, w, call)
            for a, b in zip(got, want):
                assert np.array_equal(a, b)


def test_regularisers_act_in_training_only_and_bad_modes_are_refused():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    s = recur.Stack("lstm", 3, 5, **AWD)
    assert "weight_drop=0.4" in repr(s) and "dropout_mode='locked'" in repr(s)
    assert "dropout_input=0.3" in repr(s)
    w = s.init(seed=3)
    plain = recur.Stack("lstm", 3, 5)
    y_eval = s.forward(w, x, keep=False)[0]
    np.testing.assert_array_equal(y_eval, plain.forward(w, x, keep=False)[0])
    y_train = s.forward(w, x, dropout_seed=4, keep=False)[0]
    assert not np.array_equal(y_train, y_eval)
    # locked output dropout: the zeros sit at the same places at every step
    zeros = y_train == 0
    assert zeros.any() and (zeros == zeros[0]).all()
    with pytest.raises(ValueError, match="dropout_mode"):
        recur.Stack("lstm", 3, 5, dropout_mode="sometimes")
    with pytest.raises(ValueError, match="weight_drop"):
        recur.Stack("lstm", 3, 5, weight_drop=1.0)
    with pytest.raises(ValueError, match="dropout_input"):
        recur.Stack("lstm", 3, 5, dropout_input=1.0)
