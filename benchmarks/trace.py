"""A torch.profiler trace of a window of CUDA-graphed training steps, in the bare loop and in real train.py
runs, each way: the forward and backward in a graph (speed.cuda_graph=forward_backward), and the whole step in
one (speed.cuda_graph=whole_step). How long a step takes, how much of it the GPU is busy, and what the CPU does
meanwhile.

    python -m benchmarks.trace --data-dir data --out <dir>     (on a GPU; benchmarks/gpu.sh's `trace` part)

writes <dir>/trace.txt (per step: wall time, GPU kernels and their busy time; the CPU's top operations) and
the Chrome traces <dir>/trace-{bare,bare_whole_step,train_py,train_py_step}.json.gz (chrome://tracing,
https://ui.perfetto.dev).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import e2e

CUDA = torch.cuda.is_available()  # (without, a dry run on the CPU)


def _wait_for_the_gpu() -> None:
    if CUDA:
        torch.cuda.synchronize()


def busy_and_idle(intervals: list[tuple[float, float]]) -> tuple[float, list[float]]:
    """The time covered by the union of (start, end) intervals sorted by start, and the gaps between them."""
    busy, until, idle = 0.0, float("-inf"), []
    for start, end in intervals:
        if start > until > float("-inf"):
            idle.append(start - until)
        busy += max(0.0, end - max(start, until))
        until = max(until, end)
    return busy, idle


class Window:
    """Profiles steps start..start+steps (called with each step's number before the step runs)."""

    def __init__(self, name: str, out: Path, start: int = 200, steps: int = 20) -> None:
        self.name, self.out, self.start, self.steps = name, out, start, steps
        self.profiler: profile | None = None
        self.started = 0.0

    def __call__(self, step: int) -> None:
        if step == self.start:
            _wait_for_the_gpu()
            self.profiler = profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if CUDA else [])])
            self.profiler.__enter__()
            self.started = time.perf_counter()
        elif step == self.start + self.steps and self.profiler is not None:
            _wait_for_the_gpu()
            wall = time.perf_counter() - self.started
            self.profiler.__exit__(None, None, None)
            self.report(self.profiler, wall)
            self.profiler = None

    def report(self, prof: profile, wall: float) -> None:
        kernels = sorted(
            (e.time_range.start, e.time_range.end)
            for e in prof.events()
            if e.device_type == torch.autograd.DeviceType.CUDA
        )
        busy, idle_us = busy_and_idle(kernels)  # (µs)
        idle = [gap / 1e3 for gap in idle_us]  # ms
        # Where the CPU sets the pace the idle time is spread over every step; where the GPU does, it is a few gaps:
        # after each wait for the GPU (every 10th step, when the logged metrics are copied to the CPU).
        long = sorted((gap for gap in idle if gap >= 0.1), reverse=True)
        lines = [
            f"== {self.name}: {self.steps} steps from step {self.start}: {1e3 * wall / self.steps:.2f} ms per step; "
            f"{len(kernels) / self.steps:.0f} GPU kernels per step, the GPU busy {busy / 1e3 / self.steps:.2f} ms "
            f"per step ({100 * busy / 1e6 / wall:.0f}% of the wall time); "
            f"idle between kernels {sum(idle):.2f} ms in the window, "
            f"{len(long)} gaps of 0.1 ms or more ({sum(long):.2f} ms; the longest "
            f"{', '.join(f'{gap:.2f}' for gap in long[:5]) or 'none'} ms)",
            prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70),
        ]
        with open(self.out / "trace.txt", "a") as file:
            file.write("\n".join(lines) + "\n")
        print(lines[0], flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            prof.export_chrome_trace(f"{tmp}/trace.json")
            with open(f"{tmp}/trace.json", "rb") as raw, gzip.open(self.out / f"trace-{self.name}.json.gz", "wb") as gz:
                shutil.copyfileobj(raw, gz)


class TraceSteps(L.Callback):
    """Added to a train.py run by override: profiles its training steps start..start+steps into `out`."""

    def __init__(self, out: str, start: int = 200, steps: int = 20, name: str = "train_py") -> None:
        self.window = Window(name, Path(out), start, steps)

    def on_train_batch_start(self, trainer: L.Trainer, *_: object) -> None:
        self.window(trainer.global_step)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="holds MNIST/raw/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start", type=int, default=200, help="the first step profiled (after the warm-up)")
    parser.add_argument("--steps", type=int, default=20, help="steps profiled")
    parser.add_argument("--triton", action="store_true", help="with speed.loop=triton, in the bare loop likewise")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    loop = "triton" if args.triton else "fused"
    triton = ["speed.loop=triton"] if args.triton else []
    (args.out / "trace.txt").write_text(
        f"the bare loop and train.py {' '.join(triton)}, each with the forward and backward in a CUDA graph, then "
        "with the whole step in one\n"
    )
    steps = args.start + args.steps + 10
    device = "cuda" if CUDA else "cpu"
    # The bare loop with the forward and backward graphed, then with the whole step in one graph: the CPU has next
    # to nothing to launch there, so its GPU time per step is the floor.
    for name, whole_step in (("bare", False), ("bare_whole_step", True)):
        window = Window(name, args.out, args.start, args.steps)
        e2e.bare_loop_steps_per_second(
            steps,
            5,
            args.data_dir,
            device,
            256,
            2,
            128,
            cuda_graph=CUDA,
            on_step=window,
            loop=loop,
            whole_step=whole_step,
        )
    trace = "+callbacks.trace"  # TraceSteps, added to each run by override
    for name, cuda_graph in (("train_py", "forward_backward"), ("train_py_step", "whole_step")):
        try:
            e2e.run_train_script(
                steps,
                args.data_dir,
                device,
                f"speed.cuda_graph={cuda_graph}",
                *triton,
                f"val_every={steps}",
                "test=false",
                f"{trace}._target_=benchmarks.trace.TraceSteps",
                f"{trace}.name={name}",
                f"{trace}.out={args.out.resolve()}",
                f"{trace}.start={args.start}",
                f"{trace}.steps={args.steps}",
            )
        except RuntimeError as err:
            raise SystemExit(f"speed.cuda_graph={cuda_graph}: {err}") from err
    print((args.out / "trace.txt").read_text())


if __name__ == "__main__":
    main()
