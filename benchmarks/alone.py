"""Each variant alone in a fresh process, the processes interleaved (A B, B A, ...): the ratio as a user who
runs one model per process sees it.

In one process the variants also share the C allocator's state: glibc gives a large freed block back to the
OS or keeps it for reuse depending on what was freed before, and a block given back costs page faults when it
is touched again. On the 2-core VM of the README that shared state moved the training-step ratio at the
tutorial's shape by up to 0.1, against the variant that allocates more fresh memory per step.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import torch

from benchmarks.memory import REPO, build
from benchmarks.steps import train_step

MODES = ("train", "infer")


def _median_seconds_in_this_process(
    mode: str, name: str, hidden: int, layers: int, batch: int, calls: int, warmup: int, threads: int
) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name, hidden, layers)
    if mode == "train":
        call = train_step(model, batch, torch.device("cpu"), bf16=False)
    else:
        images = torch.rand(batch, 28, 28)
        model.eval()

        def call() -> None:
            with torch.inference_mode():
                model(images)

    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def median_seconds_alone(mode: str, name: str, hidden: int, layers: int, batch: int, calls: int, warmup: int) -> float:
    """The median seconds of `calls` calls (after `warmup`) of one variant, in a fresh CPU process."""
    args = [mode, name, hidden, layers, batch, calls, warmup, torch.get_num_threads()]
    command = [sys.executable, "-m", "benchmarks.alone", *map(str, args)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.split()[-1])


def interleaved_alone(
    mode: str, names: list[str], hidden: int, layers: int, batch: int, rounds: int, calls: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each variant, one fresh process per variant and round, in the order A B, B A, ..."""
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            seconds[name].append(median_seconds_alone(mode, name, hidden, layers, batch, calls, warmup))
    return seconds


if __name__ == "__main__":  # the fresh process: mode name hidden layers batch calls warmup threads
    mode, name, *numbers = sys.argv[1:]
    if mode not in MODES:
        sys.exit(f"mode must be one of {MODES}, not {mode!r}")
    print(_median_seconds_in_this_process(mode, name, *map(int, numbers)))
