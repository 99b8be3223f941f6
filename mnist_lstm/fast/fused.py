"""`lstm_loop` made fast for training: the same loop and the same math, in place, with its backward (through
time) written by hand. Read mnist_lstm/model/lstm.py first: this file computes exactly what `lstm_loop` does.

    fused_loop        the loop the "fused" implementation runs: FusedLSTMLoop with gradients, lstm_inference
                      without (mnist_lstm/fast/inference.py), and lstm_loop itself where the compiler or
                      autocast must see plain ops
    FusedLSTMLoop     the forward in preallocated buffers, and the hand-written backward
    tanh_into         tanh as 2 sigmoid(2x) - 1 on the CPU, where PyTorch's sigmoid is faster than its tanh
    uniform_dropout   F.dropout's distribution, its mask drawn as uniform >= p (TensorFlow's way), faster on the CPU
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mnist_lstm.fast.inference import lstm_inference
from mnist_lstm.model.lstm import State, lstm_loop


def fused_loop(
    x: Tensor, weight: Tensor, bias: Tensor, h: Tensor, c: Tensor, training_loop: type | None = None
) -> tuple[Tensor, State]:
    """`lstm_loop`'s signature and results: `training_loop` (FusedLSTMLoop by default; TritonLSTMLoop has the same
    interface) when a gradient is wanted, lstm_inference when not."""
    # torch.compile fuses and differentiates the plain loop itself; autocast (bf16-mixed) picks a dtype op by op,
    # which the fused loop's preallocated buffers cannot follow.
    if torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
        return lstm_loop(x, weight, bias, h, c)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias, h, c))):
        return lstm_inference(x, weight, bias, h, c)
    outputs, c = (training_loop or FusedLSTMLoop).apply(x, weight, bias, h, c)
    return outputs, (outputs[-1], c)


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
            tanh_into(g, out=g)
            o.sigmoid_()
            c_prev = c
            torch.mul(i, g, out=ig)
            c = torch.addcmul(ig, f, c_prev, out=cells[t % 2])  # c_t = f * c_{t-1} + i * g
            h = torch.mul(o, tanh_into(c, out=tanh_c), out=outputs[t])  # h_t = o * tanh(c_t)
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
            "overwrote what the forward saved; run the plain loop (speed=plain)"
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


def tanh_into(x: Tensor, out: Tensor) -> Tensor:
    """tanh(x) into `out` (which may be x). On the CPU as 2 sigmoid(2x) - 1, the same function: PyTorch's
    vectorised CPU sigmoid is several times faster than its tanh (docs/speed.md)."""
    if x.device.type != "cpu":
        return torch.tanh(x, out=out)
    return torch.add(x, x, out=out).sigmoid_().mul_(2.0).sub_(1.0)


def uniform_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, as F.dropout: each element is kept with probability 1 - p and scaled by 1 / (1 - p).

    On the CPU the mask is drawn as TensorFlow's dropout draws it, uniform >= p: torch.rand is vectorised, while
    F.dropout's bernoulli_ draws element by element (docs/speed.md). On a GPU F.dropout is one fused kernel.
    """
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))
