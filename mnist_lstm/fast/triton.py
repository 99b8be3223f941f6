"""FusedLSTMLoop with each timestep's elementwise work as one Triton kernel each way (GPU, `speed.loop=triton`).

On a GPU the fused loop is many small kernels, each too short to fill it. Here the same math as `FusedLSTMLoop`
(fused.py, read that first) runs as one kernel per timestep each way, local derivatives included; the matmuls
stay cuBLAS'. Inside a kernel more operations cost nothing, so the gates keep nn.LSTM's layout (i, f, g, o, the
candidate's rows not doubled) and the derivatives are written out gate by gate. Each kernel instance handles
BLOCK of the batch * hidden cells of one timestep. Without a GPU, TRITON_INTERPRET=1 runs them on CPU tensors
(the tests do). sigmoid and tanh are written with tl.exp because tl.sigmoid, itself a Triton function, is
interpreted only if TRITON_INTERPRET was set before triton was first imported.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from mnist_lstm.fast.fused import input_gradients, saved_once

BLOCK = 1024  # cells per kernel instance


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _forward_step(gates, c_prev, c_out, h_out, dh_dc_out, forget_out, cells, hidden, BLOCK: tl.constexpr):
    """One timestep: the pre-activations in `gates` -> c_t, h_t, dh_t/dc_t and f; the gates are replaced by
    their local derivatives (FusedLSTMLoop.forward's loop body and, for this step, what follows its loop, fused)."""
    cell = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cell < cells
    gate = gates + (cell // hidden) * 4 * hidden + cell % hidden  # cell (b, k)'s gate i: row b, column k; f, g, o
    # follow, H apart
    i = _sigmoid(tl.load(gate, mask=mask))
    f = _sigmoid(tl.load(gate + hidden, mask=mask))
    g = 2.0 * _sigmoid(2.0 * tl.load(gate + 2 * hidden, mask=mask)) - 1.0  # tanh(z) = 2 sigmoid(2z) - 1
    o = _sigmoid(tl.load(gate + 3 * hidden, mask=mask))
    c_before = tl.load(c_prev + cell, mask=mask)
    c = f * c_before + i * g
    tanh_c = 2.0 * _sigmoid(2.0 * c) - 1.0
    h = o * tanh_c
    tl.store(c_out + cell, c, mask=mask)
    tl.store(h_out + cell, h, mask=mask)
    tl.store(dh_dc_out + cell, o * (1.0 - tanh_c * tanh_c), mask=mask)  # dh_t/dc_t
    tl.store(forget_out + cell, f, mask=mask)  # dc_t/dc_{t-1}
    # d/d(pre-activation): of c_t for i, f, g; of h_t for o.
    tl.store(gate, g * i * (1.0 - i), mask=mask)
    tl.store(gate + hidden, c_before * f * (1.0 - f), mask=mask)
    tl.store(gate + 2 * hidden, i * (1.0 - g * g), mask=mask)
    tl.store(gate + 3 * hidden, tanh_c * o * (1.0 - o), mask=mask)


@triton.jit
def _backward_step(derivatives, d_h, d_c, dh_dc, forget, cells, hidden, BLOCK: tl.constexpr):
    """One timestep back: dL/dc_t from dL/dh_t, the derivatives turned into dL/d(pre-activation) in place,
    and d_c carried to dL/dc_{t-1} (FusedLSTMLoop.backward's loop body, without its matmul, fused)."""
    cell = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cell < cells
    gate = derivatives + (cell // hidden) * 4 * hidden + cell % hidden
    dh = tl.load(d_h + cell, mask=mask)
    dc = tl.load(d_c + cell, mask=mask) + dh * tl.load(dh_dc + cell, mask=mask)
    tl.store(gate, tl.load(gate, mask=mask) * dc, mask=mask)
    tl.store(gate + hidden, tl.load(gate + hidden, mask=mask) * dc, mask=mask)
    tl.store(gate + 2 * hidden, tl.load(gate + 2 * hidden, mask=mask) * dc, mask=mask)
    tl.store(gate + 3 * hidden, tl.load(gate + 3 * hidden, mask=mask) * dh, mask=mask)
    tl.store(d_c + cell, dc * tl.load(forget + cell, mask=mask), mask=mask)


class TritonLSTMLoop(torch.autograd.Function):
    """`FusedLSTMLoop` with its elementwise work per timestep as one Triton kernel each way; same inputs,
    outputs and gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor, c0: Tensor):
        steps, batch, input_size = x.shape
        hidden = h0.shape[1]
        w_input, w_hidden = weight.split([input_size, hidden], dim=1)
        w_hidden_t = w_hidden.t().contiguous()
        gates = torch.addmm(bias, x.reshape(steps * batch, -1), w_input.t()).view(steps, batch, 4 * hidden)
        outputs = x.new_empty(steps, batch, hidden)
        forget, dh_dc = x.new_empty(steps, batch, hidden), x.new_empty(steps, batch, hidden)
        cells = x.new_empty(2, batch, hidden)
        h, c = h0.contiguous(), c0.contiguous()  # (the kernel reads cell b * hidden + k)
        grid = (triton.cdiv(batch * hidden, BLOCK),)
        for t in range(steps):  # the explicit unrolling, as in lstm_loop
            gates[t].addmm_(h, w_hidden_t)
            c_prev, c, h = c, cells[t % 2], outputs[t]
            _forward_step[grid](gates[t], c_prev, c, h, dh_dc[t], forget[t], batch * hidden, hidden, BLOCK=BLOCK)

        ctx.save_for_backward(x, w_input, w_hidden, h0, outputs, gates, forget, dh_dc)
        return outputs, c.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor, d_c_last: Tensor):
        x, w_input, w_hidden, h0, outputs, gates, forget, dh_dc = saved_once(ctx)
        steps, batch, _ = x.shape
        hidden = h0.shape[1]
        d_h = d_outputs[-1].contiguous().clone()  # (contiguous: the kernel reads cell b * hidden + k)
        d_c = d_c_last.contiguous().clone()
        grid = (triton.cdiv(batch * hidden, BLOCK),)
        # Backpropagation through time: each step's local derivatives in `gates` become dL/d(pre-activation).
        for t in reversed(range(steps)):
            _backward_step[grid](gates[t], d_h, d_c, dh_dc[t], forget[t], batch * hidden, hidden, BLOCK=BLOCK)
            if t > 0:
                torch.addmm(d_outputs[t - 1], gates[t], w_hidden, out=d_h)
        return (*input_gradients(ctx, x, w_input, w_hidden, h0, outputs, gates), d_c)
