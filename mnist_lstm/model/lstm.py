"""The row-by-row LSTM classifier in plain PyTorch, to read top to bottom. An MNIST image is 28 rows of 28
pixels, read one row per timestep; a linear classifier reads the top layer's hidden state after the last row.

    lstm_loop          one layer over time: the explicit `for t in range(steps)` loop
    LSTMLayer          one layer's weights: the four gates as one fused weight, laid out like nn.LSTM's
    Implementation     the loop each layer runs and the dropout on its outputs: PLAIN here, faster ones that
                       compute the same in mnist_lstm/fast/ (handed in with `RowLSTMClassifier.use`)
    StackedLSTM        layer_num layers, each reading the whole output of the one below
    TorchStackedLSTM   the same stack on nn.LSTM (cuDNN / oneDNN): the reference the tests compare with
    RowLSTMClassifier  images -> logits, or the logits after every row
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, Tensor]  # (h, c)
# (x (time, batch, input), fused weight (4H, input + H), bias (4H,), h0, c0) -> outputs (time, batch, H), (h, c)
Loop = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, State]]


def lstm_loop(
    x: Tensor, weight: Tensor, bias: Tensor, h: Tensor, c: Tensor, record: list[Tensor] | None = None
) -> tuple[Tensor, State]:
    """The LSTM over time, plainly, for autograd to differentiate op by op.

    `weight` is [weight_ih | weight_hh] (4H, input + H), its rows the gates in nn.LSTM's order: input, forget,
    cell candidate, output. Given a list as `record`, each step appends what it computed, stacked (6, batch, H):
    the gates i, f, g, o as applied, then c and h (mnist_lstm/use/cell.py shows them to a learner).
    """
    steps, batch, input_size = x.shape
    hidden = h.shape[1]
    w_input, w_hidden = weight.split([input_size, hidden], dim=1)
    # The input part of every timestep's gates in one matmul ("premul"): only h_{t-1} @ W_hh^T, which cannot be
    # parallelised over time, is left inside the loop.
    x_gates = torch.addmm(bias, x.reshape(steps * batch, input_size), w_input.t()).view(steps, batch, 4 * hidden)

    outputs = []
    for t in range(steps):  # the explicit unrolling: one row of the image per step
        gates = torch.addmm(x_gates[t], h, w_hidden.t())  # (batch, 4 * hidden)
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g  # forget some memory, write some new
        h = o * torch.tanh(c)  # what the cell shows of its memory
        if record is not None:
            record.append(torch.stack([i, f, g, o, c, h]))
        outputs.append(h)
    return torch.stack(outputs), (h, c)


class LSTMLayer(nn.Module):
    """One LSTM layer with TensorFlow's BasicLSTMCell semantics.

    `gates` maps [x_t, h_{t-1}] to the four gates; its weight is [nn.LSTM's weight_ih | weight_hh], so the tests
    copy it into nn.LSTM by slicing. `forget_bias` on the forget gate makes a fresh cell start by remembering.
    """

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = forget_bias
        self.gates = nn.Linear(input_size + hidden_size, 4 * hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's initialisation, so both start alike
        nn.init.uniform_(self.gates.weight, -bound, bound)
        nn.init.uniform_(self.gates.bias, -bound, bound)

    def forward(self, x: Tensor, state: State | None = None, loop: Loop = lstm_loop) -> tuple[Tensor, State]:
        """x (time, batch, input) -> outputs (time, batch, hidden) and the final (h, c), each (batch, hidden)."""
        i, f, g, o = self.gates.bias.chunk(4)
        bias = torch.cat([i, f + self.forget_bias, g, o])  # the forget bias folded in once, not at every step
        if state is None:  # a zero initial state, as the tutorial's cell.zero_state
            h = c = x.new_zeros(x.shape[1], self.hidden_size)
        else:
            h, c = state
        return loop(x, self.gates.weight, bias, h, c)


class Implementation(NamedTuple):
    """How a stack computes: the loop each layer runs, and the dropout on each layer's output."""

    loop: Loop
    dropout: Callable[[Tensor, float, bool], Tensor]  # (x, p, training) -> x, as F.dropout


# The seam: a stack computes with PLAIN unless handed another (RowLSTMClassifier.use); mnist_lstm/fast/'s are
# tested against PLAIN and nn.LSTM. Which one runs is a setting of the run (conf/speed/), not of the model.
PLAIN = Implementation(lstm_loop, F.dropout)


class StackedLSTM(nn.Module):
    """`layer_num` LSTMLayers, layer-major: each reads the whole output sequence of the one below.

    Dropout hits every layer's output, the top one's included (the tutorial's DropoutWrapper), never the
    recurrent state.
    """

    def __init__(
        self, input_size: int, hidden_size: int, layer_num: int, dropout: float = 0.0, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.dropout = dropout
        sizes = [input_size] + [hidden_size] * (layer_num - 1)
        self.layers = nn.ModuleList(LSTMLayer(size, hidden_size, forget_bias) for size in sizes)
        self.implementation = PLAIN

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (time, batch, input) -> the top layer's outputs (time, batch, hidden), and (h_n, c_n), each
        (layer_num, batch, hidden), like nn.LSTM."""
        loop, dropout = self.implementation
        h_n, c_n = [], []
        for k, layer in enumerate(self.layers):
            x, (h, c) = layer(x, None if state is None else (state[0][k], state[1][k]), loop)
            x = dropout(x, self.dropout, self.training)
            h_n.append(h)
            c_n.append(c)
        return x, (torch.stack(h_n), torch.stack(c_n))


class TorchStackedLSTM(nn.Module):
    """The same stack on nn.LSTM (the tutorial's dynamic_rnn): the reference.

    nn.LSTM drops out between layers only, so the top layer's output is dropped here to match StackedLSTM.
    """

    def __init__(
        self, input_size: int, hidden_size: int, layer_num: int, dropout: float = 0.0, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.lstm = nn.LSTM(input_size, hidden_size, layer_num, dropout=dropout if layer_num > 1 else 0.0)
        with torch.no_grad():
            for k in range(layer_num):  # forget_bias on the forget gate's rows, as LSTMLayer starts
                getattr(self.lstm, f"bias_ih_l{k}")[hidden_size : 2 * hidden_size] += forget_bias
        self.implementation = PLAIN  # only its dropout applies: nn.LSTM has its own loop

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        out, (h_n, c_n) = self.lstm(x, state)
        return self.implementation.dropout(out, self.dropout, self.training), (h_n, c_n)


CELLS = {"custom": StackedLSTM, "torch": TorchStackedLSTM}


class RowLSTMClassifier(nn.Module):
    """Reads (batch, 28, 28) images row by row and classifies each digit from the top layer's last hidden state.

    Without gradients, a batch is read in chunks of `inference_chunk` images: the same answers in the memory of
    one chunk.
    """

    inference_chunk = 1024

    def __init__(
        self,
        input_size: int = 28,
        hidden_size: int = 256,
        layer_num: int = 2,
        num_classes: int = 10,
        dropout: float = 0.5,
        forget_bias: float = 1.0,
        cell: str = "custom",
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not one of {sorted(CELLS)}")
        self.lstm = CELLS[cell](input_size, hidden_size, layer_num, dropout, forget_bias)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def use(self, implementation: Implementation) -> RowLSTMClassifier:
        """Compute with `implementation` from now on (PLAIN, or one of mnist_lstm.fast.IMPLEMENTATIONS)."""
        self.lstm.implementation = implementation
        return self

    def forward(self, images: Tensor) -> Tensor:
        """images (batch, rows, columns) -> logits (batch, num_classes) after the last row."""
        return self._in_chunks(self._logits, images)

    def per_row_logits(self, images: Tensor) -> Tensor:
        """images (batch, rows, columns) -> logits (batch, rows, num_classes): what the model would answer having
        read that many rows."""
        return self._in_chunks(self._per_row_logits, images)

    def _logits(self, images: Tensor) -> Tensor:
        outputs, _ = self.lstm(images.transpose(0, 1))  # time-major: (rows, batch, columns)
        return self.classifier(outputs[-1])

    def _per_row_logits(self, images: Tensor) -> Tensor:
        outputs, _ = self.lstm(images.transpose(0, 1))
        return self.classifier(outputs).transpose(0, 1)

    def _in_chunks(self, read: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
        if torch.is_grad_enabled() or len(images) <= self.inference_chunk:
            return read(images)
        return torch.cat([read(chunk) for chunk in images.split(self.inference_chunk)])
