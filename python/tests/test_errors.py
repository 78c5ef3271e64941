"""Bad input raises a Python exception naming the problem; nothing crashes the interpreter."""

import numpy as np
import pytest
import torch

import recur
import recur.torch as rt


def test_non_cpu_tensors_are_refused():
    m = rt.LSTM(3, 4)
    # a CUDA tensor is refused as every non-CPU tensor is; the meta device exists on every build
    x = torch.empty(5, 2, 3, device="meta")
    with pytest.raises(TypeError, match="recur runs on the CPU: the input is on meta"):
        m(x)
    m.to("meta")
    with pytest.raises(TypeError, match="parameter weight_ih_l0 is on meta"):
        m(torch.randn(5, 2, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32])
def test_unsupported_dtypes_are_refused(dtype):
    m = rt.GRU(3, 4)
    with pytest.raises(TypeError, match=f"the input has dtype {dtype}"):
        m(torch.ones(5, 2, 3, dtype=dtype))
    with pytest.raises(TypeError, match="float32 or float64"):
        m.to(torch.float16)(torch.ones(5, 2, 3, dtype=torch.float16))


def test_mixed_dtypes_are_refused():
    m = rt.RNN(3, 4)
    with pytest.raises(TypeError, match="the input has dtype torch.float64, the module's parameters are torch.float32"):
        m(torch.randn(5, 2, 3, dtype=torch.float64))


def test_wrong_shapes_are_refused():
    m = rt.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="the input has 5 features, input_size is 3"):
        m(torch.randn(5, 2, 5))
    with pytest.raises(ValueError, match="expected the input to be 2-D .* or 3-D, got 4-D"):
        m(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="the input is empty"):
        m(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(2, 2, 4\), got \(1, 2, 4\)"):
        m(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"expected c_0 of shape \(2, 2, 4\), got \(2, 3, 4\)"):
        m(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        m(torch.randn(5, 2, 3), torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match="hx must be a tensor"):
        rt.GRU(3, 4)(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4),))
    with pytest.raises(ValueError, match="h_0 should be 2-D"):
        rt.GRU(3, 4)(torch.randn(5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(TypeError, match="the input must be a torch.Tensor"):
        m([[1.0, 2.0, 3.0]])


def test_double_backward_is_refused():
    m = rt.GRU(2, 3)
    x = torch.randn(4, 1, 2, requires_grad=True)
    y, _ = m(x)
    (g,) = torch.autograd.grad((y**2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        recur.Stack("transformer", 3, 4)
    with pytest.raises(ValueError, match="unknown nonlinearity 'sigmoid'"):
        recur.Stack("rnn", 3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="proj_size"):
        recur.Stack("lstm", 3, 4, proj_size=4)
    with pytest.raises(ValueError, match="positive integer"):
        recur.set_num_threads(0)


def stack_and_weights():
    s = recur.Stack("lstm", 3, 4, num_layers=2)
    return s, s.init(seed=1)


def test_numpy_api_refuses_bad_arrays():
    s, w = stack_and_weights()
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(TypeError, match="x has dtype int64"):
        s.forward(w, np.zeros((5, 2, 3), np.int64))
    with pytest.raises(TypeError, match="x must be a numpy array, got list"):
        s.forward(w, [[[0.0] * 3] * 2] * 5)
    with pytest.raises(TypeError, match="weight_ih_l0 must be a float64 array"):
        s.forward(w, x.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        s.forward(w, np.zeros((3, 2, 5), np.float32).transpose(2, 1, 0))
    with pytest.raises(ValueError, match="7 weights given, the stack has 8 parameters"):
        s.forward(w[:7], x)
    with pytest.raises(ValueError, match=r"weight_hh_l1 has shape \[4, 4\], \[16, 4\] expected"):
        s.forward(w[:5] + [np.zeros((4, 4), np.float32)] + w[6:], x)
    with pytest.raises(ValueError, match="x must be \\(T, B, I\\)"):
        s.forward(w, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="length 6 of sequence 1 is outside 1..=5"):
        s.forward(w, x, lengths=[5, 6])
    with pytest.raises(ValueError, match="3 lengths given for a batch of 2"):
        s.forward(w, x, lengths=[5, 5, 5])
    with pytest.raises(ValueError, match=r"h0 has shape \[2, 3, 4\], \[2, 2, 4\] expected"):
        s.forward(w, x, h0=np.zeros((2, 3, 4), np.float32))
    g = recur.Stack("gru", 3, 4)
    with pytest.raises(ValueError, match="only an LSTM has a cell state"):
        g.forward(g.init(), x, c0=np.zeros((1, 2, 4), np.float32))
    y, h, c, run = s.forward(w, x)
    with pytest.raises(ValueError, match=r"dy has shape \[5, 2, 3\], \[5, 2, 4\] expected"):
        run.backward(x, dy=np.zeros((5, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"x has shape \[4, 2, 3\], \[5, 2, 3\] expected"):
        run.backward(x[:4], dy=y)


def test_too_big_a_workspace_is_a_memory_error():
    s = recur.Stack("lstm", 1, 256)
    w = s.init()
    x = np.zeros((1 << 16, 1 << 10, 1), np.float32)  # 256 MiB, never touched
    with pytest.raises(MemoryError, match="needs"):
        s.forward(w, x)
