"""The row-by-row LSTM classifier, in plain PyTorch: read this file top to bottom.

An MNIST image is 28 rows of 28 pixels. The LSTM reads it one row per timestep and a linear
classifier looks at the top layer's hidden state after the last row.

    LSTMLayer         one layer, unrolled explicitly over time; its four gates come from one
                      fused weight, laid out like nn.LSTM's (gate order i, f, g, o)
    StackedLSTM       layer_num LSTMLayers, layer-major, dropout on every layer's output
    TorchStackedLSTM  the same interface on nn.LSTM (cuDNN/oneDNN): the reference we test against
    RowLSTMClassifier image -> logits, or logits after every row read
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, Tensor]  # (h, c), each (layer_num, batch, hidden_size)


class LSTMLayer(nn.Module):
    """One LSTM layer with TensorFlow BasicLSTMCell semantics, unrolled over the timesteps.

    The four gates come from one fused linear map of [x_t, h_{t-1}]: `gates.weight` is
    (4*hidden, input + hidden), whose first `input_size` columns are nn.LSTM's `weight_ih` and the
    rest its `weight_hh`, rows in nn.LSTM's gate order (input, forget, cell candidate, output).
    `forget_bias` is added to the forget gate's pre-activation, so a fresh cell starts by remembering.
    """

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = forget_bias
        self.gates = nn.Linear(input_size + hidden_size, 4 * hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's init, so both variants start alike
        nn.init.uniform_(self.gates.weight, -bound, bound)
        nn.init.uniform_(self.gates.bias, -bound, bound)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, State]:
        """x: (time, batch, input_size) -> outputs (time, batch, hidden), final (h, c) (batch, hidden)."""
        steps, batch, _ = x.shape
        hidden = self.hidden_size
        w_input, w_hidden = self.gates.weight.split([self.input_size, hidden], dim=1)

        # The forget bias is folded into the bias once, not added at every timestep.
        bias = self.gates.bias + x.new_tensor(self.forget_bias) * _forget_mask(hidden, x)
        # The input part of every timestep's gates in one matmul ("premul"): only the recurrent
        # matmul h_{t-1} @ W_hh^T is left inside the loop, which cannot be parallelised over time.
        x_gates = torch.addmm(bias, x.reshape(steps * batch, -1), w_input.t()).view(steps, batch, 4 * hidden)

        if state is None:  # zero initial state, as the tutorial's cell.zero_state
            h = x.new_zeros(batch, hidden)
            c = x.new_zeros(batch, hidden)
        else:
            h, c = state

        outputs = []
        for t in range(steps):  # the explicit unrolling: one row of the image per step
            gates = torch.addmm(x_gates[t], h, w_hidden.t())  # (batch, 4*hidden)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)


def _forget_mask(hidden_size: int, like: Tensor) -> Tensor:
    """(4*hidden,) vector that is 1 on the forget gate's rows and 0 elsewhere."""
    mask = like.new_zeros(4 * hidden_size)
    mask[hidden_size : 2 * hidden_size] = 1.0
    return mask


class StackedLSTM(nn.Module):
    """`layer_num` LSTMLayers, layer-major: each layer reads the whole output sequence of the one
    below. Dropout hits every layer's output in training (the tutorial's DropoutWrapper with
    output_keep_prob = 1 - dropout), the top layer's included; the recurrent state is never dropped."""

    def __init__(
        self, input_size: int, hidden_size: int, layer_num: int, dropout: float = 0.0, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.dropout = dropout
        sizes = [input_size] + [hidden_size] * (layer_num - 1)
        self.layers = nn.ModuleList(LSTMLayer(size, hidden_size, forget_bias) for size in sizes)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x: (time, batch, input) -> top layer outputs (time, batch, hidden), (h_n, c_n) like nn.LSTM."""
        h_n, c_n = [], []
        for k, layer in enumerate(self.layers):
            x, (h, c) = layer(x, None if state is None else (state[0][k], state[1][k]))
            x = F.dropout(x, self.dropout, self.training)
            h_n.append(h)
            c_n.append(c)
        return x, (torch.stack(h_n), torch.stack(c_n))


class TorchStackedLSTM(nn.Module):
    """The same model on nn.LSTM (the tutorial's "method one", dynamic_rnn): the reference.

    nn.LSTM drops out between layers only, so the top layer's output is dropped here to match
    StackedLSTM. Its two biases start with `forget_bias` on the forget gate, as our fused bias does.
    """

    def __init__(
        self, input_size: int, hidden_size: int, layer_num: int, dropout: float = 0.0, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.lstm = nn.LSTM(input_size, hidden_size, layer_num, dropout=dropout if layer_num > 1 else 0.0)
        with torch.no_grad():
            for k in range(layer_num):
                getattr(self.lstm, f"bias_ih_l{k}")[hidden_size : 2 * hidden_size] += forget_bias

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        out, (h_n, c_n) = self.lstm(x, state)
        return F.dropout(out, self.dropout, self.training), (h_n, c_n)


CELLS = {"custom": StackedLSTM, "torch": TorchStackedLSTM}


class RowLSTMClassifier(nn.Module):
    """Reads a (batch, 28, 28) image row by row and classifies the digit from the last hidden state."""

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

    def forward(self, images: Tensor) -> Tensor:
        """images (batch, rows, columns) -> logits (batch, num_classes) after the last row."""
        outputs, _ = self.lstm(images.transpose(0, 1))  # time-major: (rows, batch, columns)
        return self.classifier(outputs[-1])

    def per_row_logits(self, images: Tensor) -> Tensor:
        """images (batch, rows, columns) -> logits (batch, rows, num_classes): the classifier applied
        to the top hidden state after each row, i.e. what the model would answer having read t rows."""
        outputs, _ = self.lstm(images.transpose(0, 1))
        return self.classifier(outputs).transpose(0, 1)
