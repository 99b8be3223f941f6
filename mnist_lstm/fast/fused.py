"""`lstm_loop` made fast for training: the same loop and the same math, in place, with its backward (through
time) written by hand. Read mnist_lstm/model/lstm.py first: this file computes exactly what `lstm_loop` does.

    fused_loop        the loop the "fused" implementation runs: FusedLSTMLoop with gradients, lstm_inference
                      without (mnist_lstm/fast/inference.py), and lstm_loop itself where the compiler or
                      autocast must see plain ops
    FusedLSTMLoop     the forward in place, in buffers kept between steps, and the hand-written backward
    Workspaces        those buffers: given back by a step's backward, taken by the next step's forward
    candidate_doubled the candidate gate's rows doubled, so that one sigmoid activates all four gates
    uniform_dropout   F.dropout's distribution, its mask drawn as uniform >= p (TensorFlow's way), faster on the CPU
"""

from __future__ import annotations

from collections import OrderedDict

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

    Its buffers come from WORKSPACES: a training step's forward takes those the step before gave back.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor, c0: Tensor):
        steps, batch, input_size = x.shape
        hidden = h0.shape[1]
        # tanh(z) = 2 sigmoid(2z) - 1: with the candidate gate's rows doubled, one sigmoid activates all four gates,
        # and each gate's local derivative is sigmoid' = s (1 - s) times one factor. A step is then 12 elementwise
        # operations; on the CPU each costs a call and a fork and join of the threads beside its arithmetic.
        weight, bias = candidate_doubled(weight), candidate_doubled(bias)
        w_input, w_hidden = weight.split([input_size, hidden], dim=1)
        w_hidden_t = w_hidden.t().contiguous()  # (hidden, 4*hidden), the layout the step's matmul reads fastest
        ctx.workspace = WORKSPACES.take(x, steps, batch, hidden)
        gates, forget, dh_dc, factors = ctx.workspace
        # The premul of every step at once, as in lstm_loop.
        torch.addmm(bias, x.reshape(steps * batch, -1), w_input.t(), out=gates.view(steps * batch, 4 * hidden))
        outputs = x.new_empty(steps, batch, hidden)
        factors[0, 1] = c0  # each step's factors, (gate, batch, hidden); c_{t-1} is the forget gate's

        h = h0
        for t in range(steps):  # the explicit unrolling, as in lstm_loop
            a = gates[t].addmm_(h, w_hidden_t)  # pre-activations (batch, 4*hidden), activated in place:
            i, f, s, o = a.sigmoid_().chunk(4, dim=1)  # the candidate g = tanh(its pre-activation) = 2 s - 1
            g, c_prev, two_i, tanh_c = factors[t % 2]  # each block contiguous: tanh is slow on strided views
            c = factors[(t + 1) % 2, 1]  # c_t, where step t + 1 reads c_{t-1}
            torch.add(s, s, out=g).sub_(1.0)
            torch.mul(i, g, out=c).addcmul_(f, c_prev)  # c_t = f * c_{t-1} + i * g
            h = torch.mul(o, torch.tanh(c, out=tanh_c), out=outputs[t])  # h_t = o * tanh(c_t)
            # The local derivatives. dh_t/dc_t = o (1 - tanh^2 c_t) = o - h tanh c_t; dc_t/dc_{t-1} = f.
            torch.addcmul(o, h, tanh_c, value=-1.0, out=dh_dc[t])
            forget[t].copy_(f)
            # Over the gates, d/d(pre-activation), of c_t for i, f, s and of h_t for o: sigmoid' times g for i,
            # c_{t-1} for f, 2 i for s (c_t has i (2 s - 1)), tanh c_t for o.
            torch.add(i, i, out=two_i)
            a.addcmul_(a, a, value=-1.0).view(batch, 4, hidden).mul_(factors[t % 2].transpose(0, 1))

        ctx.save_for_backward(x, weight, h0, outputs, gates, forget, dh_dc)
        return outputs, factors[steps % 2, 1].clone()

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
            derivatives[t, :, :3].mul_(d_c.unsqueeze(1))  # i, f, s: dL/dc_t * dc_t/d(pre-activation)
            derivatives[t, :, 3].mul_(d_h)  # o: dL/dh_t * dh_t/d(pre-activation)
            d_c.mul_(forget[t])  # now dL/dc_{t-1}
            if t > 0:  # dL/dh_{t-1}: through the recurrent matmul, plus h_{t-1}'s own output
                torch.addmm(d_outputs[t - 1], d_gates[t], w_hidden, out=d_h)

        # The gradients of x, the weight, the bias and h0 (below); then c0's.
        d_x, d_weight, d_bias, d_h0 = input_gradients(ctx.needs_input_grad, x, weight, h0, outputs, d_gates)
        WORKSPACES.give_back(ctx.workspace)  # nothing reads the buffers any more: the next forward may
        # The weight and bias the forward used had the candidate's rows doubled: d/d(the given rows) is twice.
        return d_x, candidate_doubled(d_weight), candidate_doubled(d_bias), d_h0, d_c


class Workspaces:
    """The fused loop's buffers, kept between a training step and the next.

    A forward's buffers are needed until its backward, and not after: there they come back here, and the next
    forward of the same shape takes them instead of allocating. On the CPU a fresh buffer of megabytes can be
    new memory from the OS, which costs page faults as it is first written; how often depends on the C
    allocator (docs/speed.md). PyTorch's CUDA caching allocator already spares a GPU this, and a CUDA graph owns
    its memory, so buffers on a GPU are not kept. Forwards whose backwards have not run yet (two losses summed
    before one backward) each take their own.
    """

    def __init__(self, shapes: int = 4, per_shape: int = 8) -> None:
        # Per shape, the buffers given back and not yet taken again: at most `per_shape` sets (a stack of that
        # many layers runs its forwards before its backwards), for the `shapes` shapes used last.
        self.free: OrderedDict[tuple, list[tuple[Tensor, ...]]] = OrderedDict()
        self.shapes, self.per_shape = shapes, per_shape

    def take(self, x: Tensor, steps: int, batch: int, hidden: int) -> tuple[Tensor, ...]:
        """Buffers for a forward over x (steps, batch, input) with `hidden` cells: gates, forget, dh_dc, factors."""
        free = self.free.get((steps, batch, 4 * hidden, x.dtype, x.device))  # as _shape(gates)
        if free:
            return free.pop()
        return (
            x.new_empty(steps, batch, 4 * hidden),  # the gates: pre-activations, then their local derivatives
            x.new_empty(steps, batch, hidden),  # dc_t/dc_{t-1} = f
            x.new_empty(steps, batch, hidden),  # dh_t/dc_t
            x.new_empty(2, 4, batch, hidden),  # each step's factors of the gates' derivatives, alternately
        )

    def give_back(self, workspace: tuple[Tensor, ...]) -> None:
        """Keep a backward's buffers for the next forward of their shape (on the CPU)."""
        if workspace[0].device.type != "cpu":
            return
        key = _shape(workspace[0])
        free = self.free.setdefault(key, [])
        self.free.move_to_end(key)
        if len(free) < self.per_shape:
            free.append(workspace)
        while len(self.free) > self.shapes:
            self.free.popitem(last=False)  # the shape used longest ago


def _shape(gates: Tensor) -> tuple:
    """The key of a workspace: its gates' shape, dtype and device."""
    return (*gates.shape, gates.dtype, gates.device)


WORKSPACES = Workspaces()


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


def candidate_doubled(rows: Tensor) -> Tensor:
    """A fused weight, bias or their gradient with the candidate gate's block of rows (i, f, g, o) doubled."""
    i, f, g, o = rows.chunk(4)
    return torch.cat([i, f, 2 * g, o])


def uniform_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, as F.dropout: each element is kept with probability 1 - p and scaled by 1 / (1 - p).

    On the CPU the mask is drawn as TensorFlow's dropout draws it, uniform >= p: torch.rand is vectorised, while
    F.dropout's bernoulli_ draws element by element (docs/speed.md). On a GPU F.dropout is one fused kernel.
    """
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))
