"""The row-by-row LSTM classifier, in plain PyTorch: read this file top to bottom.

An MNIST image is 28 rows of 28 pixels. The LSTM reads it one row per timestep and a linear
classifier looks at the top layer's hidden state after the last row.

    LSTMLayer         one layer, unrolled explicitly over time; its four gates come from one
                      fused weight, laid out like nn.LSTM's (gate order i, f, g, o)
    lstm_loop         that loop, plainly, for autograd to differentiate op by op
    FusedLSTMLoop     the same loop made fast: in place, with its backward (through time) by hand
                      (on a GPU, optionally, its elementwise work as Triton kernels: triton_lstm.py)
    lstm_inference    the same loop without gradients, in the fewest passes over memory
    tanh, dropout     torch.tanh and F.dropout, computed faster on the CPU
    StackedLSTM       layer_num LSTMLayers, layer-major, dropout on every layer's output
    TorchStackedLSTM  the same interface on nn.LSTM (cuDNN/oneDNN): the reference we test against
    RowLSTMClassifier image -> logits, or logits after every row read
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

State = tuple[Tensor, Tensor]  # (h, c), each (layer_num, batch, hidden_size)


class LSTMLayer(nn.Module):
    """One LSTM layer with TensorFlow BasicLSTMCell semantics, unrolled over the timesteps.

    The four gates come from one fused linear map of [x_t, h_{t-1}]: `gates.weight` is
    (4*hidden, input + hidden), whose first `input_size` columns are nn.LSTM's `weight_ih` and the
    rest its `weight_hh`, rows in nn.LSTM's gate order (input, forget, cell candidate, output).
    `forget_bias` is added to the forget gate's pre-activation, so a fresh cell starts by remembering.

    `fused=False` runs `lstm_loop`, the plain loop that autograd differentiates op by op; the default
    `fused=True` runs the same loop as `FusedLSTMLoop`, whose backward is written out by hand (faster),
    or, when no gradient is wanted, as `lstm_inference`. Under torch.compile the plain loop runs (the
    compiler fuses it and derives its backward itself), and under autocast (mixed precision).
    `triton=True`: on a GPU, the fused loop's elementwise work runs as one Triton kernel per timestep.
    """

    def __init__(
        self, input_size: int, hidden_size: int, forget_bias: float = 1.0, fused: bool = True, triton: bool = False
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = forget_bias
        self.fused = fused
        self.triton = triton
        self.gates = nn.Linear(input_size + hidden_size, 4 * hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's init, so both variants start alike
        nn.init.uniform_(self.gates.weight, -bound, bound)
        nn.init.uniform_(self.gates.bias, -bound, bound)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, State]:
        """x: (time, batch, input_size) -> outputs (time, batch, hidden), final (h, c) (batch, hidden)."""
        # The forget bias is folded into the bias once, not added at every timestep.
        # (A Python number, not a new tensor: no host-to-device copy, which a CUDA graph could not capture.)
        bias = self.gates.bias + self.forget_bias * _forget_mask(self.hidden_size, x)
        if state is None:  # zero initial state, as the tutorial's cell.zero_state
            h = c = x.new_zeros(x.shape[1], self.hidden_size)
        else:
            h, c = state
        # torch.compile fuses and differentiates the plain loop itself; autocast (bf16-mixed) picks a dtype
        # op by op, which the fused loop's preallocated buffers cannot follow.
        if not self.fused or torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
            return lstm_loop(x, self.gates.weight, bias, h, c)
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, self.gates.weight, bias, h, c))):
            return lstm_inference(x, self.gates.weight, bias, h, c)
        loop = FusedLSTMLoop
        if self.triton and x.is_cuda and x.dtype in (torch.float32, torch.float64):  # (its kernels' precisions)
            from mnist_lstm.triton_lstm import TritonLSTMLoop  # here: triton is needed on a GPU only, and only then

            loop = TritonLSTMLoop
        outputs, c = loop.apply(x, self.gates.weight, bias, h, c)
        return outputs, (outputs[-1], c)


def lstm_loop(x: Tensor, weight: Tensor, bias: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, State]:
    """The LSTM, plainly: x (time, batch, input) and the fused weight -> outputs, final (h, c)."""
    steps, batch, input_size = x.shape
    hidden = h.shape[1]
    w_input, w_hidden = weight.split([input_size, hidden], dim=1)
    # The input part of every timestep's gates in one matmul ("premul"): only the recurrent
    # matmul h_{t-1} @ W_hh^T is left inside the loop, which cannot be parallelised over time.
    x_gates = torch.addmm(bias, x.reshape(steps * batch, -1), w_input.t()).view(steps, batch, 4 * hidden)

    outputs = []
    for t in range(steps):  # the explicit unrolling: one row of the image per step
        gates = torch.addmm(x_gates[t], h, w_hidden.t())  # (batch, 4*hidden)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs), (h, c)


class FusedLSTMLoop(torch.autograd.Function):
    """`lstm_loop` made fast: the same loop and the same math, with its backward written by hand.

    Autograd would record ~12 ops per step and replay each one's backward separately. Here the forward
    writes every step in place into preallocated buffers and replaces each step's gates right away by
    their local derivatives: how c_t and h_t move with each gate's pre-activation. The backward (through
    time) is then four products per step, written over those derivatives (no second (time, batch,
    4*hidden) buffer), and the weight gradient of all steps is one large matmul, as in nn.LSTM. Because
    it overwrites them, it runs once per forward. Without gradients, `lstm_inference` runs instead.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor, c0: Tensor):
        steps, batch, input_size = x.shape
        hidden = h0.shape[1]
        w_input, w_hidden = weight.split([input_size, hidden], dim=1)
        w_hidden_t = w_hidden.t().contiguous()  # (hidden, 4*hidden), the layout the step's matmul reads fastest
        # The premul of every step at once, as in lstm_loop.
        gates = torch.addmm(bias, x.reshape(steps * batch, -1), w_input.t()).view(steps, batch, 4 * hidden)
        outputs = x.new_empty(steps, batch, hidden)
        forget, dh_dc = x.new_empty(steps, batch, hidden), x.new_empty(steps, batch, hidden)
        cells = x.new_empty(2, batch, hidden)  # c_t, alternately: step t still reads c_{t-1}
        tanh_c, ig = x.new_empty(batch, hidden), x.new_empty(batch, hidden)

        h, c = h0, c0
        for t in range(steps):  # the explicit unrolling, as in lstm_loop
            a = gates[t].addmm_(h, w_hidden_t)  # pre-activations (batch, 4*hidden), activated in place:
            i, f, g, o = a.chunk(4, dim=1)
            a[:, : 2 * hidden].sigmoid_()  # i and f at once
            tanh(g, out=g)
            o.sigmoid_()
            c_prev = c
            torch.mul(i, g, out=ig)
            c = torch.addcmul(ig, f, c_prev, out=cells[t % 2])  # c_t = f * c_{t-1} + i * g
            h = torch.mul(o, tanh(c, out=tanh_c), out=outputs[t])  # h_t = o * tanh(c_t)
            # The local derivatives; sigmoid' = s (1 - s), tanh' = 1 - tanh^2.
            torch.addcmul(o, h, tanh_c, value=-1.0, out=dh_dc[t])  # dh_t/dc_t = o (1 - tanh^2 c_t) = o - h tanh c_t
            forget[t].copy_(f)  # dc_t/dc_{t-1} = f
            # Over the gates, d/d(pre-activation): dh_t for o, dc_t for i, f, g (i last: g's reads it).
            torch.addcmul(h, h, o, value=-1.0, out=o)  # tanh(c_t) o (1 - o) = h - h o
            f.addcmul_(f, f, value=-1.0).mul_(c_prev)  # c_{t-1} f (1 - f)
            torch.addcmul(i, ig, g, value=-1.0, out=g)  # i (1 - g^2) = i - ig g
            torch.addcmul(ig, ig, i, value=-1.0, out=i)  # g i (1 - i) = ig - ig i

        ctx.save_for_backward(x, weight, h0, outputs, gates, forget, dh_dc)
        return outputs, c.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor, d_c_last: Tensor):
        x, weight, h0, outputs, gates, forget, dh_dc = saved_once(ctx)
        steps, batch, input_size = x.shape
        hidden = h0.shape[1]
        w_hidden = weight[:, input_size:]
        d_h = d_outputs[-1].clone()  # dL/dh_t: from h_t's own use, plus (below) from the gates of step t+1
        d_c = d_c_last.clone()  # dL/dc_t
        d_gates = gates  # dL/d(pre-activation) of every step, written over its local derivatives
        derivatives = gates.view(steps, batch, 4, hidden)

        for t in reversed(range(steps)):  # backpropagation through time
            d_c.addcmul_(d_h, dh_dc[t])  # dL/dc_t: via c_{t+1} (carried in d_c) and via h_t
            derivatives[t, :, :3].mul_(d_c.unsqueeze(1))  # i, f, g: dL/dc_t * dc_t/d(pre-activation)
            derivatives[t, :, 3].mul_(d_h)  # o: dL/dh_t * dh_t/d(pre-activation)
            d_c.mul_(forget[t])  # now dL/dc_{t-1}
            if t > 0:  # dL/dh_{t-1}: through the recurrent matmul, plus h_{t-1}'s own output
                torch.addmm(d_outputs[t - 1], d_gates[t], w_hidden, out=d_h)

        # The gradients of x, the weight, the bias and h0 (below); then c0's.
        return (*input_gradients(ctx.needs_input_grad, x, weight, h0, outputs, d_gates), d_c)


def saved_once(ctx) -> tuple[Tensor, ...]:
    """What the fused loop's forward saved, for its one backward: that backward writes over it."""
    if getattr(ctx, "derivatives_consumed", False):
        raise RuntimeError(
            "a second backward through the fused LSTM loop (retain_graph=True): its first backward "
            "overwrote what the forward saved; build the model with fused=False (model.fused=false)"
        )
    ctx.derivatives_consumed = True
    return ctx.saved_tensors


def input_gradients(
    needs_input_grad: tuple[bool, ...], x: Tensor, weight: Tensor, h0: Tensor, outputs: Tensor, d_gates: Tensor
) -> tuple[Tensor | None, Tensor, Tensor, Tensor | None]:
    """The end of the fused loop's backward: from dL/d(pre-activation) of every step (time, batch, 4*hidden),
    the gradients of x, the fused weight, the bias and h0. The weight's of all steps is one large matmul:
    [x_t, h_{t-1}] is the input of step t's gates."""
    steps, batch, input_size = x.shape
    hidden = h0.shape[1]
    w_input, w_hidden = weight.split([input_size, hidden], dim=1)
    d_gates_2d = d_gates.view(steps * batch, 4 * hidden)
    d_w_hidden = torch.addmm(d_gates[0].t() @ h0, d_gates_2d[batch:].t(), outputs[:-1].reshape(-1, hidden))
    d_weight = torch.cat([d_gates_2d.t() @ x.reshape(steps * batch, -1), d_w_hidden], dim=1)
    d_x = (d_gates_2d @ w_input).view_as(x) if needs_input_grad[0] else None
    d_h0 = d_gates[0] @ w_hidden if needs_input_grad[3] else None
    return d_x, d_weight, d_gates_2d.sum(0), d_h0


def lstm_inference(x: Tensor, weight: Tensor, bias: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, State]:
    """`lstm_loop` without gradients (evaluation, prediction), in 6 elementwise passes per step (the fused
    loop's forward makes 13 before its derivatives).

    Elementwise work, not the matmuls, is where a CPU step loses time to oneDNN's fused kernel, so two
    rewrites, exact in arithmetic, save passes over memory. tanh(z) = 2 sigmoid(2z) - 1, so with the
    candidate gate's rows moved last and doubled, one sigmoid activates all four gates. The cell is carried
    as d = -2c, so tanh(c) = 1 - 2 sigmoid(d) and h = o tanh(c) is one multiply-add. Nothing is kept per
    step, and the input part of the gates is computed step by step, so a large batch never holds a
    (time, batch, 4*hidden) tensor.
    """
    steps, batch, input_size = x.shape
    hidden = h.shape[1]
    weight, bias = _candidate_last_and_doubled(weight), _candidate_last_and_doubled(bias)
    w_input, w_hidden = weight.split([input_size, hidden], dim=1)
    w_input_t = w_input.t()
    w_hidden_t = w_hidden.t().contiguous()  # (hidden, 4*hidden), the layout the step's matmul reads fastest
    outputs = x.new_empty(steps, batch, hidden)
    gates, sigmoid_d = x.new_empty(batch, 4 * hidden), x.new_empty(batch, hidden)
    d = c * -2.0

    for t in range(steps):  # the explicit unrolling, as in lstm_loop
        torch.addmm(bias, x[t], w_input_t, out=gates).addmm_(h, w_hidden_t)
        i, f, o, sigmoid_2g = gates.sigmoid_().chunk(4, dim=1)  # the candidate is g = 2 sigmoid_2g - 1
        d.mul_(f).addcmul_(i, sigmoid_2g, value=-4.0).add_(i, alpha=2.0)  # -2c_t = f (-2c_{t-1}) - 2 i g
        h = torch.addcmul(o, o, torch.sigmoid(d, out=sigmoid_d), value=-2.0, out=outputs[t])  # o tanh(c_t)
    return outputs, (h, d * -0.5)


def _candidate_last_and_doubled(rows: Tensor) -> Tensor:
    """A fused weight or bias, gate blocks (i, f, g, o) -> (i, f, o, 2g), for lstm_inference."""
    i, f, g, o = rows.chunk(4)
    return torch.cat([i, f, o, 2 * g])


def tanh(x: Tensor, out: Tensor) -> Tensor:
    """tanh(x) into `out` (which may be x). On the CPU as 2 sigmoid(2x) - 1, the same function: PyTorch's
    vectorised CPU sigmoid is ~3x faster than its tanh, and tanh is ~4% of a CPU training step here."""
    if x.device.type != "cpu":
        return torch.tanh(x, out=out)
    return torch.add(x, x, out=out).sigmoid_().mul_(2.0).sub_(1.0)


def _forget_mask(hidden_size: int, like: Tensor) -> Tensor:
    """(4*hidden,) vector that is 1 on the forget gate's rows and 0 elsewhere."""
    mask = like.new_zeros(4 * hidden_size)
    mask[hidden_size : 2 * hidden_size] = 1.0
    return mask


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, as F.dropout: each element is kept with probability 1 - p and scaled by 1 / (1 - p).

    On the CPU the mask is drawn as TensorFlow's dropout draws it, uniform >= p: torch.rand is vectorised,
    while F.dropout's bernoulli_ draws element by element, ~3x slower, ~10% of a CPU training step here.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":  # F.dropout is one fused kernel on a GPU
        return F.dropout(x, p, training)
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


class StackedLSTM(nn.Module):
    """`layer_num` LSTMLayers, layer-major: each layer reads the whole output sequence of the one
    below. Dropout hits every layer's output in training (the tutorial's DropoutWrapper with
    output_keep_prob = 1 - dropout), the top layer's included; the recurrent state is never dropped."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        layer_num: int,
        dropout: float = 0.0,
        forget_bias: float = 1.0,
        fused: bool = True,
        triton: bool = False,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.dropout = dropout
        sizes = [input_size] + [hidden_size] * (layer_num - 1)
        self.layers = nn.ModuleList(LSTMLayer(size, hidden_size, forget_bias, fused, triton) for size in sizes)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x: (time, batch, input) -> top layer outputs (time, batch, hidden), (h_n, c_n) like nn.LSTM."""
        h_n, c_n = [], []
        for k, layer in enumerate(self.layers):
            x, (h, c) = layer(x, None if state is None else (state[0][k], state[1][k]))
            x = dropout(x, self.dropout, self.training)
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
        return dropout(out, self.dropout, self.training), (h_n, c_n)


CELLS = {"custom": StackedLSTM, "torch": TorchStackedLSTM}


class RowLSTMClassifier(nn.Module):
    """Reads a (batch, 28, 28) image row by row and classifies the digit from the last hidden state.

    Without gradients, a batch larger than `inference_chunk` images is read in chunks of that size:
    the same answers, but the memory of e.g. all 10,000 test images at once stays that of one chunk.
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
        fused: bool = True,
        triton: bool = False,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not one of {sorted(CELLS)}")
        options = {"fused": fused, "triton": triton} if cell == "custom" else {}
        self.lstm = CELLS[cell](input_size, hidden_size, layer_num, dropout, forget_bias, **options)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """images (batch, rows, columns) -> logits (batch, num_classes) after the last row."""
        return self._in_chunks(self._logits, images)

    def per_row_logits(self, images: Tensor) -> Tensor:
        """images (batch, rows, columns) -> logits (batch, rows, num_classes): the classifier applied
        to the top hidden state after each row, i.e. what the model would answer having read t rows."""
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
