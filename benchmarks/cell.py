"""Where one LSTM layer's training forward goes on the CPU, against nn.LSTM's (oneDNN's fused cell), and whether
the elementwise work of each step compiled into one kernel closes the gap (issue 29's lever).

One layer at the tutorial's shape (batch 128, 28 steps, hidden 256; input 28 as the first layer, 256 as the
second), the variants interleaved in one process per allocator (benchmarks/timing.py):

    ours forward            FusedLSTMLoop's forward as a training step runs it: premul, the loop, each step's
                            local derivatives after it
    compiled forward        the same results written as plain ops (`plain_forward`) and compiled by Inductor
                            (torch.compile): each step's elementwise work one generated C++ kernel
    nn.LSTM forward         nn.LSTM's training forward (oneDNN keeps its workspace for the backward); it also
                            records its autograd node, which ours leaves out (small beside ~12 ms)
    ... forward+backward    ours and nn.LSTM's, a whole layer's training work

and, from torch.profiler, our forward's self CPU time by operation (how much is the recurrent matmul, how much
each elementwise pass). Each allocator of benchmarks/alone.py runs in a fresh process, as nn.LSTM gains from
raised glibc thresholds and jemalloc and ours does not.

    python -m benchmarks.cell --out benchmarks/results/cpu-xeon-2core/cell.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import types
from pathlib import Path

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from benchmarks.alone import ALLOCATORS, allocator_missing, malloc_in_use, run_with_allocator
from benchmarks.memory import REPO
from benchmarks.run import machine
from benchmarks.timing import interleaved, matmul_gflops, ratio, summary
from mnist_lstm.fast.fused import WORKSPACES, FusedLSTMLoop, Workspace, candidate_doubled

CPU = torch.device("cpu")


def our_forward(x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor, c0: Tensor) -> tuple[Workspace, Tensor]:
    """FusedLSTMLoop's forward as a training step runs it (without autograd's records): its workspace, with each
    step's local derivatives in it, and its outputs. The caller gives the workspace back, as a backward would."""
    ctx = types.SimpleNamespace(save_for_backward=lambda *tensors: None)
    outputs, _ = FusedLSTMLoop.forward(ctx, x, weight, bias, h0, c0)
    return ctx.workspace, outputs


def our_forward_given_back(*inputs: Tensor) -> None:
    """our_forward, its workspace given back at once: what the next training step's forward finds."""
    WORKSPACES.give_back(our_forward(*inputs)[0])


def plain_forward(x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, ...]:
    """What FusedLSTMLoop's forward leaves for its backward, in plain ops for a compiler: each step's local
    derivatives (as the workspace's gates), outputs, cells c_0..c_T, dh_t/dc_t and forget gates."""
    steps, batch, input_size = x.shape
    hidden = h0.shape[1]
    w_input, w_hidden = (candidate_doubled(part) for part in weight.split([input_size, hidden], dim=1))
    gates = torch.addmm(candidate_doubled(bias), x.reshape(steps * batch, -1), w_input.t()).view(steps, batch, -1)
    h, c = h0, c0
    derivatives, outputs, cells, dh_dc, forget = [], [], [c0], [], []
    for t in range(steps):
        s = torch.addmm(gates[t], h, w_hidden.t()).sigmoid()
        i, f, s_g, o = s.chunk(4, dim=1)
        g = 2 * s_g - 1
        c_prev, c = c, f * c + i * g
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        d_i, d_f, d_g, d_o = (s - s * s).chunk(4, dim=1)
        derivatives.append(torch.cat([d_i * g, d_f * c_prev, d_g * 2 * i, d_o * tanh_c], dim=1))
        outputs.append(h)
        cells.append(c)
        dh_dc.append(o - h * tanh_c)
        forget.append(f)
    return tuple(map(torch.stack, (derivatives, outputs, cells, dh_dc, forget)))


def check_same_results(compiled, x: Tensor, weight: Tensor, bias: Tensor, h0: Tensor, c0: Tensor) -> None:
    """The compiled forward does the work ours does: the same derivatives, outputs, cells, dh/dc and forget gates."""
    work, outputs = our_forward(x, weight, bias, h0, c0)
    ours = (work.gates, outputs, work.factors[:, 1], work.dh_dc, work.forget)
    names = ("derivatives", "outputs", "cells", "dh_dc", "forget gates")
    try:
        for name, theirs, mine in zip(names, compiled(x, weight, bias, h0, c0), ours, strict=True):
            torch.testing.assert_close(theirs, mine, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    finally:
        WORKSPACES.give_back(work)


def measure(input_size: int, hidden: int, batch: int, steps: int, rounds: int) -> dict:
    """One layer's variants, interleaved; ratios are medians of per-round ratios."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(input_size, hidden)
    weight = torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], dim=1).detach().requires_grad_()
    bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().requires_grad_()
    x = torch.randn(steps, batch, input_size)
    h0, c0 = torch.zeros(batch, hidden), torch.zeros(batch, hidden)
    d_outputs = torch.randn(steps, batch, hidden)
    compiled = torch.compile(plain_forward, fullgraph=True, dynamic=False)
    detached = [t.detach() for t in (x, weight, bias, h0, c0)]
    start = time.perf_counter()
    check_same_results(compiled, *detached)  # its first call compiles (or reads Inductor's cache)
    compile_seconds = time.perf_counter() - start

    def ours_forward_backward() -> None:
        outputs, c = FusedLSTMLoop.apply(x, weight, bias, h0, c0)
        torch.autograd.backward((outputs, c), (d_outputs, torch.zeros_like(c)))

    def nn_forward_backward() -> None:
        lstm(x)[0].backward(d_outputs)

    variants = {
        "ours forward": lambda: our_forward_given_back(*detached),
        "compiled forward": lambda: compiled(*detached),
        "nn.LSTM forward": lambda: lstm(x),
        "ours forward+backward": ours_forward_backward,
        "nn.LSTM forward+backward": nn_forward_backward,
    }
    seconds = interleaved(variants, rounds, CPU, warmup=2)
    pairs = {
        "ours/nn.LSTM forward": ("ours forward", "nn.LSTM forward"),
        "compiled/ours forward": ("compiled forward", "ours forward"),
        "ours/nn.LSTM forward+backward": ("ours forward+backward", "nn.LSTM forward+backward"),
    }
    ratios = {name: ratio(seconds, a, b) for name, (a, b) in pairs.items()}
    return {
        "input_size": input_size,
        "variants": summary(seconds, "ours forward"),
        "ratios": ratios,
        "compile_and_check_seconds": compile_seconds,
        "our_forward_by_operation": by_operation(lambda: our_forward_given_back(*detached), max(2, rounds // 4)),
    }


def by_operation(forward, calls: int) -> list[dict]:
    """Self CPU time per call of `forward`, by operation, largest first (the profiler adds a few microseconds to
    each operation: read it as shares, not as times)."""
    forward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            forward()
    rows = [
        {"operation": e.key, "ms": e.self_cpu_time_total / 1e3 / calls, "count": e.count // calls}
        for e in prof.key_averages()
    ]
    return sorted(rows, key=lambda row: -row["ms"])


def in_this_process(args: argparse.Namespace) -> dict:
    """Every layer's measurements in this process, with the allocator it runs with and its matmul throughput."""
    torch.set_num_threads(args.threads)
    return {
        "allocator": malloc_in_use(),
        "matmul_gflops": matmul_gflops(2048, 5, CPU),
        "layers": [measure(size, args.hidden, args.batch, args.steps, args.rounds) for size in args.input_sizes],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to write the JSON")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--input-sizes", type=int, nargs="+", default=[28, 256])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=list(ALLOCATORS))
    parser.add_argument("--in-this-process", action="store_true", help="measure here, print JSON (the child)")
    args = parser.parse_args(argv)
    if args.in_this_process:
        results = in_this_process(args)
        print(json.dumps(results))
        return results

    child_args = [f"--{name}={getattr(args, name)}" for name in ("rounds", "hidden", "batch", "steps", "threads")]
    child_args += ["--input-sizes", *map(str, args.input_sizes)]
    command = shlex.join(["python", "-m", "benchmarks.cell", *(argv if argv is not None else sys.argv[1:])])
    results = {"machine": machine(CPU), "command": command}
    for allocator in args.allocators:
        if reason := allocator_missing(allocator):
            results[allocator] = {"skipped": reason}
            continue
        print(f"{allocator}: measuring in a fresh process", file=sys.stderr, flush=True)
        child = [sys.executable, "-m", "benchmarks.cell", "--in-this-process", *child_args]
        results[allocator] = json.loads(run_with_allocator(child, allocator, REPO))
        if results[allocator]["allocator"] != allocator:
            raise RuntimeError(f"asked to run with {allocator}, ran with {results[allocator]['allocator']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
