"""``torch.nn.LSTM``, ``GRU`` and ``RNN`` with recur's forward and backward.

Each module here *is* its torch.nn counterpart (a subclass): the same constructor arguments,
parameters (names, shapes, initialisation from torch's generator), ``state_dict`` and
``load_state_dict`` both ways, ``train()``/``eval()``, ``.double()``; only ``forward`` differs,
computing in recur through a ``torch.autograd.Function`` whose backward is recur's BPTT.

    import torch, recur.torch
    rnn = recur.torch.GRU(32, 256, num_layers=2, batch_first=True)   # was torch.nn.GRU(...)
    y, h_n = rnn(x)                                                  # same outputs, same grads

The forward takes what torch.nn's takes: a (T, B, I) tensor ((B, T, I) with batch_first), an
unbatched (T, I) tensor, or a PackedSequence; the initial state h_0 (LSTM: (h_0, c_0)) or None.
float32 and float64 CPU tensors; the input is read in place when contiguous. Dropout between
layers is drawn from a seed taken from torch's generator, so ``torch.manual_seed`` makes a run
repeatable (the masks themselves are recur's, not torch's). recur runs on
``torch.get_num_threads()`` threads unless ``recur.set_num_threads`` was called.

Out of scope, each refused with a clear exception: CUDA (or any non-CPU) tensors (TypeError),
dtypes other than float32/float64 (TypeError), double backward (RuntimeError).
"""

import functools

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import recur as _pkg

from . import _recur

__all__ = ["LSTM", "GRU", "RNN"]


@functools.lru_cache(maxsize=64)
def _stack(cell, input_size, hidden_size, num_layers, bias, bidirectional, proj_size, dropout, nonlinearity):
    return _recur.Stack(cell, input_size, hidden_size, num_layers, bias, bidirectional, proj_size, dropout, nonlinearity)


def _np(t):
    """A tensor as a numpy array sharing its memory (a copy only when it is not contiguous)."""
    if t is None:
        return None
    return t.detach().contiguous().numpy()


def _check_tensor(t, what, dtype):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise TypeError(f"recur runs on the CPU: {what} is on {t.device} (move it with .cpu())")
    if t.dtype != dtype:
        raise TypeError(f"{what} has dtype {t.dtype}, the module's parameters are {dtype}")


class _StackFunction(torch.autograd.Function):
    """recur's forward of a stack, and its BPTT as the backward."""

    @staticmethod
    def forward(ctx, stack, lengths, seed, x, h0, c0, *weights):
        y, h_n, c_n, run = stack.forward(
            [_np(w) for w in weights], _np(x), _np(h0), _np(c0), lengths, seed, True
        )
        ctx.run = run
        ctx.has_h0 = h0 is not None
        ctx.has_c0 = c0 is not None
        ctx.shapes = [w.shape for w in weights]
        ctx.save_for_backward(x)
        ctx.set_materialize_grads(False)
        y = torch.from_numpy(y)
        h_n = torch.from_numpy(h_n)
        if c_n is None:
            c_n = torch.empty(0, dtype=y.dtype)
            ctx.mark_non_differentiable(c_n)
        else:
            c_n = torch.from_numpy(c_n)
        return y, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n, dc_n):
        (x,) = ctx.saved_tensors
        want_dx = ctx.needs_input_grad[3]
        dc_n = dc_n if (dc_n is not None and dc_n.numel() > 0) else None
        dx, dh0, dc0, g = ctx.run.backward(_np(x), _np(dy), _np(dh_n), _np(dc_n), want_dx)
        g = torch.from_numpy(g)
        sizes = [s.numel() for s in ctx.shapes]
        gw = [p.view(s) for p, s in zip(torch.split(g, sizes), ctx.shapes)]
        dx = torch.from_numpy(dx) if dx is not None else None
        dh0 = torch.from_numpy(dh0) if ctx.has_h0 else None
        dc0 = torch.from_numpy(dc0) if ctx.has_c0 else None
        return (None, None, None, dx, dh0, dc0, *gw)


class _RecurForward:
    """The forward shared by LSTM, GRU and RNN: torch.nn's argument handling, recur's numbers."""

    def _recur_stack(self):
        if self.mode == "LSTM":
            cell, nl = "lstm", "tanh"
        elif self.mode == "GRU":
            cell, nl = "gru", "tanh"
        else:
            cell, nl = "rnn", self.nonlinearity
        return _stack(
            cell,
            self.input_size,
            self.hidden_size,
            self.num_layers,
            bool(self.bias),
            bool(self.bidirectional),
            int(getattr(self, "proj_size", 0)),
            float(self.dropout),
            nl,
        )

    def forward(self, input, hx=None):
        lstm = self.mode == "LSTM"
        weights = self._flat_weights
        dtype = weights[0].dtype
        for w, name in zip(weights, self._flat_weights_names):
            if w.device.type != "cpu":
                raise TypeError(f"recur runs on the CPU: parameter {name} is on {w.device} (call .cpu())")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"recur computes in float32 or float64, the parameters are {dtype}")

        packed = isinstance(input, PackedSequence)
        unbatched = False
        lengths = None
        if packed:
            _check_tensor(input.data, "the input", dtype)
            x, lens = pad_packed_sequence(input, batch_first=False)
            lengths = [int(n) for n in lens]
        else:
            _check_tensor(input, "the input", dtype)
            if input.dim() == 2:
                unbatched = True
                x = input.unsqueeze(1)
            elif input.dim() == 3:
                x = input.transpose(0, 1) if self.batch_first else input
            else:
                raise ValueError(
                    f"{type(self).__name__}: expected the input to be 2-D (unbatched) or 3-D, got {input.dim()}-D"
                )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: the input has {x.shape[-1]} features, input_size is {self.input_size}"
            )
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{type(self).__name__}: the input is empty (shape {tuple(input.shape)})")

        h0, c0 = None, None
        if hx is not None:
            if lstm:
                if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                    raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
                h0, c0 = hx
            else:
                if isinstance(hx, (tuple, list)):
                    raise TypeError(f"{type(self).__name__}: hx must be a tensor, not a tuple")
                h0 = hx
            for t, what in ((h0, "h_0"), (c0, "c_0")):
                if t is not None:
                    _check_tensor(t, what, dtype)
                    if t.dim() != (2 if unbatched else 3):
                        raise ValueError(
                            f"{type(self).__name__}: for {'unbatched 2-D' if unbatched else 'batched 3-D'} input, "
                            f"{what} should be {'2-D' if unbatched else '3-D'}, got {t.dim()}-D"
                        )
            if unbatched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if c0 is not None else None
            b = x.shape[1]
            nd = self.num_layers * (2 if self.bidirectional else 1)
            p = self.proj_size if getattr(self, "proj_size", 0) > 0 else self.hidden_size
            for t, what, size in ((h0, "h_0", p), (c0, "c_0", self.hidden_size)):
                if t is not None and tuple(t.shape) != (nd, b, size):
                    want = (nd, size) if unbatched else (nd, b, size)
                    got = tuple(t.shape[i] for i in (0, 2)) if unbatched else tuple(t.shape)
                    raise ValueError(f"{type(self).__name__}: expected {what} of shape {want}, got {got}")

        if not _pkg._threads_set:
            _recur.set_num_threads(torch.get_num_threads())
        stack = self._recur_stack()
        seed = None
        if self.training and self.dropout > 0 and self.num_layers > 1:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        tensors = [x, h0, c0, *weights]
        needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        if needs_grad:
            y, h_n, c_n = _StackFunction.apply(stack, lengths, seed, x, h0, c0, *weights)
        else:
            y, h_n, c_n, _ = stack.forward(
                [_np(w) for w in weights], _np(x), _np(h0), _np(c0), lengths, seed, False
            )
            y, h_n = torch.from_numpy(y), torch.from_numpy(h_n)
            c_n = torch.from_numpy(c_n) if c_n is not None else None

        if packed:
            out = PackedSequence(_pack_like(y, input), input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif unbatched:
            out = y.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else c_n
        else:
            out = y.transpose(0, 1) if self.batch_first else y
        return (out, (h_n, c_n)) if lstm else (out, h_n)


def _pack_like(y, like):
    """The padded outputs ``y`` (T, B, *) in the batch order of ``like``'s padded form, packed
    as ``like`` is packed: the data of the PackedSequence torch.nn would return."""
    if like.sorted_indices is not None:
        y = y.index_select(1, like.sorted_indices)
    lengths = (like.batch_sizes.unsqueeze(0) > torch.arange(y.shape[1]).unsqueeze(1)).sum(1)
    return pack_padded_sequence(y, lengths, enforce_sorted=True).data


class LSTM(_RecurForward, nn.LSTM):
    """``torch.nn.LSTM`` computed by recur (the same arguments: input_size, hidden_size,
    num_layers, bias, batch_first, dropout, bidirectional, proj_size)."""


class GRU(_RecurForward, nn.GRU):
    """``torch.nn.GRU`` computed by recur (the same arguments: input_size, hidden_size,
    num_layers, bias, batch_first, dropout, bidirectional)."""


class RNN(_RecurForward, nn.RNN):
    """``torch.nn.RNN`` computed by recur (the same arguments: input_size, hidden_size,
    num_layers, nonlinearity, bias, batch_first, dropout, bidirectional)."""
