"""`lstm_loop` made fast for training: the same math, in place, with its backward through time written by hand.
Read mnist_lstm/model/lstm.py first."""

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
    """`lstm_loop`'s signature and results: `training_loop` (FusedLSTMLoop, or TritonLSTMLoop) when a gradient is
    wanted, lstm_inference when not."""
    # torch.compile differentiates the plain loop itself; autocast picks a dtype op by op, which the preallocated
    # buffers cannot follow.
    if torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
        return lstm_loop(x, weight, bias, h, c)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias, h, c))):
        return lstm_inference(x, weight, bias, h, c)
    outputs, c = (training_loop or FusedLSTMLoop).apply(x, weight, bias, h, c)
    return outputs, (outputs[-1], c)


class FusedLSTMLoop(torch.autograd.Function):
    """`lstm_loop` with its backward written by hand.

    Autograd would record ~12 ops per step and replay each one's backward separately. Here the forward writes
    every step in place into preallocated buffers (from WORKSPACES) and, after the loop, replaces every step's
    gates by their local derivatives (how c_t and h_t move with each pre-activation). The backward through time
    is then four products per step, written over those derivatives, and the weight gradient of all steps is
    one large matmul, as in nn.LSTM. Because it overwrites them, it runs once per forward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor, c0: Tensor):
        steps, batch, input_size = x.shape
        hidden = h0.shape[1]
        # tanh(z) = 2 sigmoid(2z) - 1: with the candidate gate's rows doubled, one sigmoid activates all four gates,
        # and each gate's local derivative is sigmoid' = s (1 - s) times one factor. candidate_doubled copies each
        # part contiguous: the forward's matmuls read it transposed, the backward's as it is.
        w_input, w_hidden = (candidate_doubled(part) for part in weight.split([input_size, hidden], dim=1))
        bias = candidate_doubled(bias)
        w_hidden_t = w_hidden.t()
        ctx.workspace = work = WORKSPACES.take(x, steps, batch, hidden)
        # The premul of every step at once, as in lstm_loop.
        torch.addmm(bias, x.reshape(steps * batch, -1), w_input.t(), out=work.gates.view(steps * batch, -1))
        outputs = x.new_empty(steps, batch, hidden)
        work.factors[0, 1] = c0
        minus_one = x.new_full((1, 1), -1.0).expand(batch, hidden)  # so that g = 2 s - 1 is one op: -1 + 2 s

        # The explicit unrolling: only what the next step needs. Each elementwise op costs a call on top of its
        # arithmetic, so the rest waits for the loop's end, as a few ops over all steps at once.
        h = h0
        for (a, i, f, s, o, g, c_prev, tanh_c, c), h_t in zip(work.forward_steps, outputs.unbind(0), strict=True):
            a.addmm_(h, w_hidden_t).sigmoid_()  # the pre-activations (batch, 4*hidden), activated in place
            torch.add(minus_one, s, alpha=2.0, out=g)  # the candidate g = tanh(its pre-activation) = 2 s - 1
            torch.mul(i, g, out=c).addcmul_(f, c_prev)  # c_t = f * c_{t-1} + i * g
            h = torch.mul(o, torch.tanh(c, out=tanh_c), out=h_t)  # h_t = o * tanh(c_t)

        # The local derivatives of all steps at once. dh_t/dc_t = o (1 - tanh^2 c_t) = o - h_t tanh c_t;
        # dc_t/dc_{t-1} = f. Over the gates, d/d(pre-activation) of c_t for i, f, s and of h_t for o: sigmoid'
        # times g for i, c_{t-1} for f, 2 i for s (c_t has i (2 s - 1)), tanh c_t for o.
        i, f, _, o = work.gates.view(steps, batch, 4, hidden).unbind(2)
        factors = work.factors[:steps]  # (steps, 4, batch, hidden): g, c_{t-1}, 2 i, tanh c_t
        torch.addcmul(o, outputs, factors[:, 3], value=-1.0, out=work.dh_dc)
        work.forget.copy_(f)
        torch.add(i, i, out=factors[:, 2])
        work.gates.addcmul_(work.gates, work.gates, value=-1.0)
        work.gates.view(steps, batch, 4, hidden).mul_(factors.transpose(1, 2))

        ctx.save_for_backward(x, w_input, w_hidden, h0, outputs)
        return outputs, work.factors[steps, 1].clone()  # c_T (a copy: the buffer is the next step's)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor, d_c_last: Tensor):
        x, w_input, w_hidden, h0, outputs = saved_once(ctx)
        work = ctx.workspace
        d_h = d_outputs[-1].clone()  # dL/dh_t: from h_t's own use, plus (below) from the gates of step t+1
        d_c = d_c_last.clone()  # dL/dc_t
        d_c_per_gate = d_c.unsqueeze(1)  # (batch, 1, hidden): the same dL/dc_t for i, f and s

        # Backpropagation through time. Each step's local derivatives become dL/d(pre-activation) in place.
        d_h_from_output = (None, *d_outputs.unbind(0)[:-1])  # h_{t-1}'s own output, for t = 0, 1, ...
        for t, (d_gates_t, d_cell_gates, d_output_gate, dh_dc, forget) in reversed(
            list(enumerate(work.backward_steps))
        ):
            d_c.addcmul_(d_h, dh_dc)  # dL/dc_t: via c_{t+1} (carried in d_c) and via h_t
            d_cell_gates.mul_(d_c_per_gate)  # i, f, s: dL/dc_t * dc_t/d(pre-activation)
            d_output_gate.mul_(d_h)  # o: dL/dh_t * dh_t/d(pre-activation)
            d_c.mul_(forget)  # now dL/dc_{t-1}
            if t > 0:  # dL/dh_{t-1}: through the recurrent matmul, plus h_{t-1}'s own output
                torch.addmm(d_h_from_output[t], d_gates_t, w_hidden, out=d_h)

        # The gradients of x, the weight, the bias and h0 (below); then c0's.
        d_x, d_weight, d_bias, d_h0 = input_gradients(ctx, x, w_input, w_hidden, h0, outputs, work.gates)
        WORKSPACES.give_back(work)  # nothing reads the buffers any more: the next forward may take them
        # The weight and bias the forward used had the candidate's rows doubled: d/d(the given rows) is twice.
        return d_x, candidate_doubled(d_weight), candidate_doubled(d_bias), d_h0, d_c


class Workspace:
    """One forward's buffers, and the views of them each timestep reads and writes, made once: on the CPU each
    view costs Python and dispatch time."""

    def __init__(self, x: Tensor, steps: int, batch: int, hidden: int) -> None:
        self.gates = x.new_empty(steps, batch, 4 * hidden)  # pre-activations, activations, local derivatives
        # Per step the factors of the gates' derivatives, each block contiguous (tanh is slow on strided views):
        # g, c_{t-1}, 2 i, tanh c_t; c_{t-1} of step t + 1 is c_t, and factors[steps, 1] is c_T.
        self.factors = x.new_empty(steps + 1, 4, batch, hidden)
        self.forget = x.new_empty(steps, batch, hidden)  # dc_t/dc_{t-1} = f
        self.dh_dc = x.new_empty(steps, batch, hidden)  # dh_t/dc_t
        gates = self.gates.unbind(0)
        # Per step: its gates (batch, 4*hidden) and their chunks i, f, s, o; where g, c_{t-1} and tanh c_t are
        # kept; where c_t goes (step t + 1's c_{t-1}).
        factors, next_c = self.factors[:steps].unbind(0), self.factors[1:, 1].unbind(0)
        self.forward_steps = [
            (a, *a.chunk(4, dim=1), g, c_prev, tanh_c, c)
            for a, (g, c_prev, _, tanh_c), c in zip(gates, factors, next_c, strict=True)
        ]
        # Per step: its derivatives, those of i, f, s (batch, 3, hidden) and of o, dh_t/dc_t, f.
        per_gate = self.gates.view(steps, batch, 4, hidden)
        per_step = gates, per_gate[:, :, :3].unbind(0), per_gate[:, :, 3].unbind(0), self.dh_dc.unbind(0)
        self.backward_steps = list(zip(*per_step, self.forget.unbind(0), strict=True))


class Workspaces:
    """The fused loop's buffers, given back by a backward for the next forward of the same shape.

    On the CPU a fresh buffer of megabytes can be new memory from the OS, paid in page faults as it is first
    written. CUDA's caching allocator already spares a GPU this, and a CUDA graph owns its memory, so GPU buffers
    are not kept. Forwards whose backwards have not run yet (two losses summed before one backward) each take
    their own. Not locked: training steps run on one thread.
    """

    def __init__(self, shapes: int = 4, per_shape: int = 8) -> None:
        # At most `per_shape` sets per shape (a stack of that many layers runs its forwards before its backwards),
        # for the `shapes` shapes used last.
        self.free: OrderedDict[tuple, list[Workspace]] = OrderedDict()
        self.shapes, self.per_shape = shapes, per_shape

    def take(self, x: Tensor, steps: int, batch: int, hidden: int) -> Workspace:
        """Buffers for a forward over x (steps, batch, input) with `hidden` cells."""
        free = self.free.get((steps, batch, 4 * hidden, x.dtype, x.device))  # give_back's key
        return free.pop() if free else Workspace(x, steps, batch, hidden)

    def give_back(self, workspace: Workspace) -> None:
        """Keep a backward's buffers for the next forward of their shape (on the CPU)."""
        gates = workspace.gates
        if gates.device.type != "cpu":
            return
        key = (*gates.shape, gates.dtype, gates.device)
        free = self.free.setdefault(key, [])
        self.free.move_to_end(key)
        if len(free) < self.per_shape:
            free.append(workspace)
        while len(self.free) > self.shapes:
            self.free.popitem(last=False)  # the shape used longest ago


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


def input_gradients(ctx, x: Tensor, w_input: Tensor, w_hidden: Tensor, h0: Tensor, outputs: Tensor, d_gates: Tensor):
    """From dL/d(pre-activation) of every step (time, batch, 4*hidden): the gradients of x and h0 (where `ctx`
    needs them), the fused weight (given in its input and hidden parts) and the bias. The weight's is one matmul
    over all steps per part, since [x_t, h_{t-1}] is the input of step t's gates."""
    steps, batch, _ = x.shape
    hidden = h0.shape[1]
    d_gates_2d = d_gates.view(steps * batch, 4 * hidden)
    # Transposed, (input^T d_gates)^T: on the CPU MKL computes it faster than d_gates^T input.
    d_w_hidden = torch.addmm(h0.t() @ d_gates[0], outputs[:-1].reshape(-1, hidden).t(), d_gates_2d[batch:])
    d_weight = torch.cat([x.reshape(steps * batch, -1).t() @ d_gates_2d, d_w_hidden]).t()
    d_x = (d_gates_2d @ w_input).view_as(x) if ctx.needs_input_grad[0] else None
    d_h0 = d_gates[0] @ w_hidden if ctx.needs_input_grad[3] else None
    return d_x, d_weight, d_gates_2d.sum(0), d_h0


def candidate_doubled(rows: Tensor) -> Tensor:
    """A fused weight, bias or their gradient with the candidate gate's block of rows (i, f, g, o) doubled."""
    i, f, g, o = rows.chunk(4)
    return torch.cat([i, f, 2 * g, o])


def uniform_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout with F.dropout's distribution.

    On the CPU the mask is drawn as TensorFlow draws it, uniform >= p, where F.dropout's bernoulli_ draws element
    by element. Where p is a multiple of 1/256 (0.5, 0.25, ...) the uniform numbers are random bytes, eight per
    64-bit draw, and the mask is exact; otherwise torch.rand's floats. On a GPU F.dropout is one fused kernel.
    """
    if not training or p == 0.0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    if (p * 256).is_integer():
        draws = torch.empty((x.numel() + 7) // 8, dtype=torch.int64).random_(-(2**63), None)  # 64 random bits
        uniform = draws.view(torch.uint8)[: x.numel()].view(x.shape).to(x.dtype)  # 0, 1, ..., 255
        threshold = p * 256
    else:
        uniform, threshold = torch.rand_like(x), p
    return x * uniform.ge_(threshold).mul_(1.0 / (1.0 - p))
