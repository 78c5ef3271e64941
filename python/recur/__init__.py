"""recur: recurrent neural networks (Elman RNN, LSTM, GRU) with PyTorch's semantics and a fast
CPU path, from Python.

- ``recur.torch.LSTM``, ``GRU``, ``RNN``: drop-in replacements for ``torch.nn.LSTM``, ``GRU`` and
  ``RNN`` (the same constructor, parameters, state_dict and forward) whose forward and
  backward run in recur (needs ``torch``; import ``recur.torch``).
- ``recur.Stack``: a recurrent stack's forward and backward (BPTT) on numpy arrays, float32 or
  float64.
- ``recur.CharModel``: a character model trained by ``recur train``, loaded from its checkpoint:
  ``sample`` and ``loss`` give the command line's ``recur sample`` and ``recur eval`` numbers.
- ``recur.set_num_threads(n)`` / ``recur.get_num_threads()``: the threads recur computes on.

Every call checks its arguments first and raises ``ValueError`` (a shape, a setting),
``TypeError`` (a dtype, a device, a type), ``OSError`` (a file) or ``MemoryError`` (a
workspace larger than the machine's memory) with a message naming the problem.
"""

from ._recur import CharModel, Run, Stack, get_num_threads
from ._recur import set_num_threads as _set_num_threads

__all__ = ["Stack", "Run", "CharModel", "set_num_threads", "get_num_threads"]

# Set by set_num_threads; until then recur.torch follows torch.get_num_threads().
_threads_set = False


def set_num_threads(n):
    """Runs recur on ``n`` threads from now on (``recur.torch`` then stops following
    ``torch.get_num_threads()``)."""
    global _threads_set
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    _threads_set = True
    _set_num_threads(n)
