"""End to end: a real `scripts/train.py` run against a bare PyTorch loop that trains the same model on the same
in-memory data, so that what the framework and the data loading cost stays visible; on a GPU the 2,000-step recipe,
start to exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from mnist_lstm.data import MNISTDataModule
from mnist_lstm.fast import IMPLEMENTATIONS
from mnist_lstm.fast.cuda_graph import GraphedStep, GraphedTraining
from mnist_lstm.fast.nvml import skip_the_nvml_check_without_nvml
from mnist_lstm.model.lstm import RowLSTMClassifier

REPO = Path(__file__).resolve().parents[1]


class StepTimer(L.Callback):
    """Added to a train.py run by override; writes to `path` when (time.perf_counter, the monotonic clock the
    parent process reads too) the run reached each of its phases: the callback built (imports, config and model
    done), the data set up, training started, each training step ended, each validation began and ended, training
    ended, and the test's phases."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.marks: dict[str, float] = {"built": time.perf_counter()}
        self.ends: list[float] = []
        self.validations: list[list[float]] = []  # [start, end] of each, the sanity check's first

    def _mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.marks.setdefault(f"setup_{getattr(stage, 'value', stage)}", time.perf_counter())

    def on_train_start(self, *args: object) -> None:
        self._mark("train_start")

    def on_train_batch_end(self, *args: object) -> None:
        self.ends.append(time.perf_counter())

    def on_validation_start(self, *args: object) -> None:
        self.validations.append([time.perf_counter(), float("nan")])

    def on_validation_end(self, *args: object) -> None:
        self.validations[-1][1] = time.perf_counter()

    def on_train_end(self, *args: object) -> None:
        self._mark("train_end")
        self._write()

    def on_test_start(self, *args: object) -> None:
        self._mark("test_start")

    def on_test_batch_end(self, *args: object) -> None:
        self._mark("test_batches_end")

    def on_test_epoch_end(self, *args: object) -> None:
        self._mark("test_figures_end")  # after the figures' callback: callbacks run in order, this one last

    def on_test_end(self, *args: object) -> None:
        self._mark("test_end")
        self._write()

    def _write(self) -> None:
        timeline = {"marks": self.marks, "ends": self.ends, "validations": self.validations}
        Path(self.path).write_text(json.dumps(timeline))


def steps_per_second(ends: list[float], warmup: int, pauses: Sequence[Sequence[float]] = ()) -> float:
    """Steps per second between the end of step `warmup` and the end of the last step, the time of `pauses`
    ([start, end] of each, e.g. the validations that ran between steps) left out."""
    first, last = ends[warmup], ends[-1]
    paused = sum(max(0.0, min(end, last) - max(start, first)) for start, end in pauses)
    return (len(ends) - 1 - warmup) / (last - first - paused)


def phases(start: float, end: float, timeline: dict) -> dict[str, float]:
    """Where a train.py run's wall time went, from its StepTimer timeline and the parent's start and end; the
    phases add up to `wall_s`: `startup_s` (imports, config, data check, model), `trainer_data_s` (Trainer, data
    loaded and moved), `to_first_step_s` (sanity check), `training_s` (the steps and their checkpoints),
    `validation_s` (after the sanity check), with a test `fit_end_s` (the best checkpoint loaded), `test_s`,
    `test_figures_s`, and `exit_s` (the metrics written, the interpreter's exit)."""
    marks = timeline["marks"]
    train_start = marks["train_start"]
    validation = sum(e - s for s, e in timeline["validations"] if s >= train_start)
    seconds = {
        "wall_s": end - start,
        "startup_s": marks["built"] - start,
        "trainer_data_s": marks["setup_fit"] - marks["built"],
        "to_first_step_s": train_start - marks["setup_fit"],
        "training_s": marks["train_end"] - train_start - validation,
        "validation_s": validation,
    }
    if "test_end" in marks:
        seconds["fit_end_s"] = marks["test_start"] - marks["train_end"]
        seconds["test_s"] = marks["test_batches_end"] - marks["test_start"]
        seconds["test_figures_s"] = marks["test_figures_end"] - marks["test_batches_end"]
        seconds["exit_s"] = end - marks["test_figures_end"]
    else:
        seconds["exit_s"] = end - marks["train_end"]
    return seconds


def run_train_script(steps: int, data_dir: str, device: str, *overrides: str) -> tuple[dict[str, float], dict]:
    """Run scripts/train.py as a user does; return where its wall time went (`phases`) and its StepTimer timeline."""
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
        timeline = json.loads(times.read_text())
        return phases(start, end, timeline), timeline


# conf/speed/'s presets, by the setting each one is (all with speed.compile=false)
SPEED_PRESETS = {("forward_backward", "triton"): "graphed", ("whole_step", "triton"): "graphed_step"}


def speed_overrides(cuda_graph: str = "none", loop: str = "fused") -> list[str]:
    """train.py's overrides for speed.cuda_graph=`cuda_graph` and speed.loop=`loop`: the preset's name where one is
    exactly that setting, else the keys that differ from the default (speed=fused)."""
    if (cuda_graph, loop) in SPEED_PRESETS:
        return [f"speed={SPEED_PRESETS[cuda_graph, loop]}"]
    return [f"speed.loop={loop}"] * (loop != "fused") + [f"speed.cuda_graph={cuda_graph}"] * (cuda_graph != "none")


def model_overrides(model: tuple) -> list[str]:
    hidden, layers, batch = model
    return [f"hidden_size={hidden}", f"layer_num={layers}", f"batch_size={batch}"]


def train_script_steps_per_second(steps: int, warmup: int, data_dir: str, device: str, *overrides: str) -> float:
    """Steps per second of scripts/train.py over `steps` steps (validation only at the end, no test)."""
    _, timeline = run_train_script(steps, data_dir, device, f"val_every={steps}", "test=false", *overrides)
    return steps_per_second(timeline["ends"], warmup)


def make_whole_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The whole training step as one function, as speed.cuda_graph=whole_step graphs train.py's: gradients to
    None, forward, loss, backward, Adam. Returns (loss, logits)."""

    def step(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach()

    return step


def bare_loop_steps_per_second(
    steps: int, warmup: int, data_dir: str, device: str, model: tuple, cuda_graph: str = "none", loop: str = "fused"
) -> float:
    """The same model, optimiser and data as train.py, in a plain loop over shuffled batches of the training set,
    which is kept on the device. `cuda_graph` and `loop` as train.py's speed.cuda_graph and speed.loop: the forward
    and backward replayed from a graph (GraphedTraining), or the whole step (GraphedStep)."""
    skip_the_nvml_check_without_nvml()  # as train.py does
    data = MNISTDataModule(data_dir=data_dir, download=False)
    data.prepare_data()
    data.setup("fit")
    images, labels = (t.to(device) for t in data.train_set.tensors)
    hidden, layers, batch_size = model
    model = RowLSTMClassifier(hidden_size=hidden, layer_num=layers).use(IMPLEMENTATIONS[loop]).to(device)
    # Adam's update inside a graph must be capturable, as train.py makes it then.
    capturable = cuda_graph == "whole_step" and device == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=capturable)
    whole, net = None, GraphedTraining(model) if cuda_graph == "forward_backward" else model
    if cuda_graph == "whole_step":
        whole = make_whole_step(model, optimizer)
        whole = GraphedStep(whole, model.parameters()) if device == "cuda" else whole
    order = torch.randperm(len(images), device=device)
    ends = []
    for step in range(steps):
        index = order[(step * batch_size) % (len(images) - batch_size) :][:batch_size]
        if whole is not None:
            loss, _ = whole(images[index], labels[index])
        else:
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


# The recipe's speed settings (speed.cuda_graph, speed.loop), fastest first; train.py runs eager too.
RECIPE_SPEEDS = (("whole_step", "triton"), ("forward_backward", "triton"), ("forward_backward", "fused"))


def recipe(data_dir: str, device: str = "cuda") -> list[dict[str, object]]:
    """The tutorial's 2,000-step recipe: the bare loop under each speed setting (training only), then
    scripts/train.py start to exit (validation, test and figures included) in its phases, with its training steps
    per second (the validations every 500 steps left out: the bare loop's rate has none)."""
    rows: list[dict[str, object]] = []
    for speed in RECIPE_SPEEDS:
        name, start = f"bare loop, {' '.join(speed_overrides(*speed))}", time.perf_counter()
        try:
            rate = bare_loop_steps_per_second(2000, 10, data_dir, device, (256, 2, 128), *speed)
            rows.append({"run": name, "wall_s": time.perf_counter() - start, "steps_per_s": rate})
        except Exception as err:  # noqa: BLE001  (a failed setting must not cost the other runs)
            rows.append({"run": name, "error": repr(err)[-1500:]})
    for overrides in [speed_overrides(*speed) for speed in RECIPE_SPEEDS] + [[]]:
        name = " ".join(["train.py", *overrides])
        try:
            seconds, timeline = run_train_script(2000, data_dir, device, *overrides)
            rate = steps_per_second(timeline["ends"], 10, timeline["validations"])
            rows.append({"run": name, **seconds, "steps_per_s": rate})
        except RuntimeError as err:
            rows.append({"run": name, "error": str(err)[-1500:]})
    for row in rows:
        print(f"recipe: {row}", flush=True)
    return rows
