"""Peak memory added by one inference call: on the GPU what the caching allocator reports, on the CPU
the peak resident set size, measured in a fresh process (freed memory that the C allocator keeps would
hide a second call's peak)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.cnn import TutorialCNN
from mnist_lstm.fast import IMPLEMENTATIONS
from mnist_lstm.model.lstm import RowLSTMClassifier

MiB = 2**20
REPO = Path(__file__).resolve().parents[1]
# The models compared: name -> (cell, implementation); "cnn" is the tutorial series' CNN.
MODELS = {"ours": ("custom", "fused"), "nn.LSTM": ("torch", "fused"), "ours-plain": ("custom", "plain"), "cnn": None}


def build(name: str, hidden_size: int, layer_num: int) -> torch.nn.Module:
    if MODELS[name] is None:
        return TutorialCNN()
    cell, implementation = MODELS[name]
    return RowLSTMClassifier(hidden_size=hidden_size, layer_num=layer_num, cell=cell).use(
        IMPLEMENTATIONS[implementation]
    )


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_peak_in_this_process(name: str, hidden_size: int, layer_num: int, batch: int, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name, hidden_size, layer_num).eval()
    images = torch.rand(batch, 28, 28)
    with torch.inference_mode():
        model(images[:2])  # load the kernels' code before measuring
        before = _rss_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        model(images)
        return (_rss_bytes("VmHWM") - before) / MiB


def cpu_peak_mib(name: str, hidden_size: int, layer_num: int, batch: int) -> float:
    """Peak resident memory (MiB) that one forward pass of `batch` images adds, in a fresh process."""
    args = [name, hidden_size, layer_num, batch, torch.get_num_threads()]
    command = [sys.executable, "-m", "benchmarks.memory", *map(str, args)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def cuda_peak_mib(model: torch.nn.Module, images: torch.Tensor) -> float:
    """torch.cuda.max_memory_allocated added by one forward pass (MiB)."""
    with torch.inference_mode():
        model(images[:2])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        model(images)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / MiB


if __name__ == "__main__":  # the fresh process of cpu_peak_mib: name hidden_size layer_num batch threads
    name, *numbers = sys.argv[1:]
    print(_cpu_peak_in_this_process(name, *map(int, numbers)))
