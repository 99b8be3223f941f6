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

from mnist_lstm.cuda_graph import GraphedTraining
from mnist_lstm.data import MNISTDataModule
from mnist_lstm.lstm import RowLSTMClassifier

REPO = Path(__file__).resolve().parents[1]


class StepTimer(L.Callback):
    """Added to a train.py run by override; writes the time (time.perf_counter: the system's monotonic clock,
    which the parent process reads too) at the start of training and at the end of every step to `path`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.train_start = 0.0
        self.ends: list[float] = []

    def on_train_start(self, *args: object) -> None:
        self.train_start = time.perf_counter()

    def on_train_batch_end(self, *args: object) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self, *args: object) -> None:
        Path(self.path).write_text(json.dumps({"train_start": self.train_start, "ends": self.ends}))


def steps_per_second(ends: list[float], warmup: int) -> float:
    """Steps per second between the end of step `warmup` and the end of the last step."""
    return (len(ends) - 1 - warmup) / (ends[-1] - ends[warmup])


def run_train_script(steps: int, data_dir: str, device: str, *overrides: str) -> tuple[dict[str, float], list[float]]:
    """Run scripts/train.py as a user does; return where its wall time went (start to the first training
    step, the steps, the rest: validation, test, figures, exit) and the time at the end of each step."""
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "steps.json"
        command = [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            f"max_steps={steps}",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
            f"data.data_dir={data_dir}",
            f"hydra.run.dir={tmp}/run",
            "+callbacks.step_timer._target_=benchmarks.e2e.StepTimer",
            f"+callbacks.step_timer.path={times}",
            *overrides,
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # the threads this process measures with
        start = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        end = time.perf_counter()
        if result.returncode != 0:
            raise RuntimeError(f"train.py failed:\n{result.stderr[-3000:]}")
        timed = json.loads(times.read_text())
        ends = timed["ends"]
        seconds = {"wall_s": end - start, "to_train_start_s": timed["train_start"] - start}
        seconds["steps_s"] = ends[-1] - timed["train_start"]  # the validations during training included
        seconds["after_steps_s"] = end - ends[-1]  # the last validation, the test, its figures, exit
        return seconds, ends


def train_script_steps_per_second(steps: int, warmup: int, data_dir: str, device: str, *overrides: str) -> float:
    """Steps per second of scripts/train.py over `steps` steps (validation only at the end, no test)."""
    _, ends = run_train_script(steps, data_dir, device, f"val_every={steps}", "test=false", *overrides)
    return steps_per_second(ends, warmup)


def bare_loop_steps_per_second(
    steps: int,
    warmup: int,
    data_dir: str,
    device: str,
    hidden_size: int,
    layer_num: int,
    batch_size: int,
    cuda_graph: bool = False,
) -> float:
    """The same model, optimiser and data as train.py, in a plain loop over shuffled batches gathered from
    the training set, which is kept on the device."""
    data = MNISTDataModule(data_dir=data_dir, download=False)
    data.prepare_data()
    data.setup("fit")
    images, labels = (t.to(device) for t in data.train_set.tensors)
    model = RowLSTMClassifier(hidden_size=hidden_size, layer_num=layer_num).to(device)
    net = GraphedTraining(model) if cuda_graph else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(images), device=device)
    ends = []
    for step in range(steps):
        index = order[(step * batch_size) % (len(images) - batch_size) :][:batch_size]
        loss = F.cross_entropy(net(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            loss.item()  # as Lightning's logging does every 10 steps: wait for the step to finish
        ends.append(time.perf_counter())
    if device == "cuda":
        torch.cuda.synchronize()
        ends[-1] = time.perf_counter()
    return steps_per_second(ends, warmup)


RECIPE_RUNS = {  # name -> train.py overrides; the tutorial recipe (2,000 steps, validation every 500, test)
    "train.py model.cuda_graph=true": ["model.cuda_graph=true"],
    # What StopOnNonFiniteLoss costs: on the GPU it reads the losses every 10 steps (where Lightning waits anyway).
    "train.py model.cuda_graph=true ~callbacks.stop_on_non_finite_loss": [
        "model.cuda_graph=true",
        "~callbacks.stop_on_non_finite_loss",
    ],
    "train.py model.cuda_graph=true data.on_device=false": ["model.cuda_graph=true", "data.on_device=false"],
    "train.py": [],
}


def recipe(data_dir: str, device: str) -> list[dict[str, object]]:
    """The tutorial's 2,000-step recipe on the GPU: the bare loop with a CUDA graph (training only), then
    scripts/train.py start to exit (validation, test and figures included), split into start-up, steps and
    the rest, with its training steps per second (the goal: <= 15 s)."""
    start = time.perf_counter()
    rate = bare_loop_steps_per_second(2000, 10, data_dir, device, 256, 2, 128, cuda_graph=True)
    rows: list[dict[str, object]] = [
        {"run": "bare loop, CUDA graph", "wall_s": time.perf_counter() - start, "steps_per_s": rate}
    ]
    print(f"recipe bare loop, CUDA graph: {rows[-1]['wall_s']:.1f} s wall, {rate:.0f} steps/s", flush=True)
    for name, overrides in RECIPE_RUNS.items():
        try:
            seconds, ends = run_train_script(2000, data_dir, device, *overrides)
        except RuntimeError as err:
            rows.append({"run": name, "error": str(err)[-1500:]})
            print(f"recipe {name}: failed\n{err}", flush=True)
            continue
        rows.append({"run": name, **seconds, "steps_per_s": steps_per_second(ends, 10)})
        print(f"recipe {name}: {rows[-1]}", flush=True)
    return rows
