"""Interleaved timing: the machines are shared and noisy, so variants run A/B/A/B in one process and
are compared by the median of per-round ratios, never by a lone absolute time."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int, device: torch.device, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each variant; every round calls each variant once, the order reversed every
    other round (A B, B A, ...) so that neither always runs right after the other."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            variants[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def ratio(seconds: dict[str, list[float]], a: str, b: str) -> float:
    """The median of the per-round ratios of a's seconds to b's."""
    return statistics.median(x / y for x, y in zip(seconds[a], seconds[b], strict=True))


def summary(seconds: dict[str, list[float]], reference: str) -> dict[str, dict[str, float]]:
    """Median time of each variant and the median of its per-round ratios to the reference."""
    return {
        name: {
            "median_ms": 1e3 * statistics.median(times),
            "ratio": ratio(seconds, name, reference),
            "rounds": len(times),
        }
        for name, times in seconds.items()
    }


def matmul_gflops(n: int, rounds: int, device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """The machine's own matmul throughput: median GFLOP/s of an n x n x n matmul."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    (times,) = interleaved({"mm": lambda: a @ b}, rounds, device).values()
    return 2 * n**3 / statistics.median(times) / 1e9
