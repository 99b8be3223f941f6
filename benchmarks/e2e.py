"""End to end: steps per second of a real `scripts/train.py` run against a bare PyTorch loop that trains
the same model on the same in-memory data, so framework and data-loading overhead stay visible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from mnist_lstm.data import MNISTDataModule
from mnist_lstm.lstm import RowLSTMClassifier

REPO = Path(__file__).resolve().parents[1]


class StepTimer(L.Callback):
    """Added to a train.py run by override; writes the time at the end of every training step to `path`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ends: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self, *args: object) -> None:
        Path(self.path).write_text(json.dumps(self.ends))


def steps_per_second(ends: list[float], warmup: int) -> float:
    """Steps per second between the end of step `warmup` and the end of the last step."""
    return (len(ends) - 1 - warmup) / (ends[-1] - ends[warmup])


def train_script_steps_per_second(steps: int, warmup: int, data_dir: str, device: str, *overrides: str) -> float:
    """Run scripts/train.py for `steps` steps (validation only at the end, no test) and time its steps."""
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "steps.json"
        command = [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            f"max_steps={steps}",
            f"val_every={steps}",
            "test=false",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
            f"data.data_dir={data_dir}",
            f"hydra.run.dir={tmp}/run",
            "+callbacks.step_timer._target_=benchmarks.e2e.StepTimer",
            f"+callbacks.step_timer.path={times}",
            *overrides,
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # the threads this process measures with
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"train.py failed:\n{result.stderr[-3000:]}")
        return steps_per_second(json.loads(times.read_text()), warmup)


def bare_loop_steps_per_second(
    steps: int, warmup: int, data_dir: str, device: str, hidden_size: int, layer_num: int, batch_size: int
) -> float:
    """The same model, optimiser and data as train.py, in a plain loop over shuffled in-memory batches."""
    data = MNISTDataModule(data_dir=data_dir, download=False)
    data.prepare_data()
    data.setup("fit")
    images, labels = (t.to(device) for t in data.train_set.tensors)
    model = RowLSTMClassifier(hidden_size=hidden_size, layer_num=layer_num).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(images), device=device)
    ends = []
    for step in range(steps):
        index = order[(step * batch_size) % (len(images) - batch_size) :][:batch_size]
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # as Lightning's logging does: wait for the step to finish
        ends.append(time.perf_counter())
    return steps_per_second(ends, warmup)


def recipe_wall_seconds(data_dir: str, device: str) -> dict[str, float]:
    """The tutorial's 2,000-step recipe: wall seconds of `scripts/train.py` (defaults, start to exit) and of
    the bare loop with the whole training set kept on the device (the GPU goal: <= 15 s)."""
    start = time.perf_counter()
    command = [sys.executable, str(REPO / "scripts" / "train.py"), f"data.data_dir={data_dir}"]
    with tempfile.TemporaryDirectory() as tmp:
        command += [f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", f"hydra.run.dir={tmp}/run"]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"train.py failed:\n{result.stderr[-3000:]}")
    script = time.perf_counter() - start
    start = time.perf_counter()
    bare_loop_steps_per_second(2000, 0, data_dir, device, hidden_size=256, layer_num=2, batch_size=128)
    return {"train_py_wall_s": script, "bare_loop_wall_s": time.perf_counter() - start}
