"""Each variant alone in a fresh process, the processes interleaved (A B, B A, ...): the ratio as a user who
runs one model per process sees it.

In one process the variants also share the C allocator's state: glibc gives a large freed block back to the
OS or keeps it for reuse depending on what was freed before, and a block given back costs page faults when it
is touched again. On the 2-core VM of the README that shared state moved the training-step ratio at the
tutorial's shape by up to 0.1, against the variant that allocates more fresh memory per step.

The fresh processes can also run under another allocator (ALLOCATORS): `nn.LSTM` gained 15-40% from raised
glibc thresholds or jemalloc on one VM, and ours did not (issue 29), so a lead under one allocator is not one
under all. Each fresh process says which malloc it ran with, and a run under an allocator that did not load fails.
"""

from __future__ import annotations

import ctypes.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.memory import REPO, build
from benchmarks.steps import train_step

MODES = ("train", "infer")
GIB = str(1 << 30)
# name: the environment that selects it in a fresh process (glibc's own variables: `man 3 mallopt`).
ALLOCATORS: dict[str, dict[str, str]] = {
    "glibc": {},  # the C library's malloc as every Python process on Linux has it by default
    # Large blocks from the heap instead of mmap, never trimmed: no page faults when a freed block is reused.
    "glibc, 1 GiB thresholds": {"MALLOC_MMAP_THRESHOLD_": GIB, "MALLOC_TRIM_THRESHOLD_": GIB},
    "jemalloc": {"LD_PRELOAD": "libjemalloc.so.2"},  # Debian: apt install libjemalloc2
}


def allocator_missing(name: str) -> str | None:
    """Why the allocator `name` cannot run here, or None when it can."""
    if "LD_PRELOAD" in ALLOCATORS[name] and ctypes.util.find_library(name) is None:
        return f"{name}: lib{name} is not installed (Debian: apt install lib{name}2)"
    return None


def allocator_environment(allocator: str) -> dict[str, str]:
    """This process's environment for a fresh process that runs with `allocator` (one of ALLOCATORS)."""
    environment = dict(os.environ)
    for settings in ALLOCATORS.values():  # no allocator's setting leaks in from this process's environment
        for key in settings:
            environment.pop(key, None)
    return environment | ALLOCATORS[allocator]


def run_with_allocator(command: list[str], allocator: str, cwd: Path) -> str:
    """Run `command` in a fresh process with `allocator` (one of ALLOCATORS); the last line it printed."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=allocator_environment(allocator))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} ({allocator}) failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


class _Mallinfo2(ctypes.Structure):  # glibc >= 2.33, `man 3 mallinfo`
    names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    _fields_ = [(name, ctypes.c_size_t) for name in names]


def malloc_in_use() -> str:
    """The allocator this process runs with, seen from inside: jemalloc when its library is mapped; else glibc,
    whose thresholds are raised when a 64 MiB block (over the 32 MiB glibc's own threshold can grow to) comes
    from the heap instead of its own mmap."""
    if "jemalloc" in Path("/proc/self/maps").read_text():
        return "jemalloc"
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.mallinfo2.restype = ctypes.c_void_p, _Mallinfo2
    block = libc.malloc(64 << 20)
    mmapped = libc.mallinfo2().hblkhd >= 64 << 20
    libc.free(ctypes.c_void_p(block))
    return "glibc" if mmapped else "glibc, 1 GiB thresholds"


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


def median_seconds_alone(
    mode: str,
    name: str,
    hidden: int,
    layers: int,
    batch: int,
    calls: int,
    warmup: int,
    allocator: str = "glibc",
    tree: Path = REPO,
) -> float:
    """The median seconds of `calls` calls (after `warmup`) of one variant, in a fresh CPU process that runs
    with `allocator` (one of ALLOCATORS) and the code of the checkout `tree`."""
    args = [mode, name, hidden, layers, batch, calls, warmup, torch.get_num_threads()]
    command = [sys.executable, "-m", "benchmarks.alone", *map(str, args)]
    seconds, used = run_with_allocator(command, allocator, tree).split("\t")
    if used != allocator:
        raise RuntimeError(f"{' '.join(command[2:])}: asked to run with {allocator}, ran with {used}")
    return float(seconds)


def interleaved_alone(
    mode: str,
    names: list[str],
    hidden: int,
    layers: int,
    batch: int,
    rounds: int,
    calls: int,
    warmup: int,
    allocator: str = "glibc",
) -> dict[str, list[float]]:
    """Seconds per call of each variant, one fresh process per variant and round, in the order A B, B A, ..."""
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            seconds[name].append(median_seconds_alone(mode, name, hidden, layers, batch, calls, warmup, allocator))
    return seconds


if __name__ == "__main__":  # the fresh process: mode name hidden layers batch calls warmup threads
    mode, name, *numbers = sys.argv[1:]
    if mode not in MODES:
        sys.exit(f"mode must be one of {MODES}, not {mode!r}")
    print(_median_seconds_in_this_process(mode, name, *map(int, numbers)), malloc_in_use(), sep="\t")
