"""End to end: steps per second of a real `scripts/train.py` run against a bare PyTorch loop that trains
the same model on the same in-memory data, so framework and data-loading overhead stay visible."""

from __future__ import annotations

import argparse
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

import mnist_lstm.fast  # noqa: F401  (registers "fused" and "triton", train.py's loops)
from mnist_lstm.data import MNISTDataModule
from mnist_lstm.fast.cuda_graph import GraphedStep, GraphedTraining
from mnist_lstm.fast.nvml import skip_the_nvml_check_without_nvml
from mnist_lstm.model.lstm import RowLSTMClassifier

REPO = Path(__file__).resolve().parents[1]


class StepTimer(L.Callback):
    """Added to a train.py run by override; writes to `path` when (time.perf_counter: the system's monotonic
    clock, which the parent process reads too) the run reached each of its phases: the callback built (imports,
    config, data check and model done), the data set up, training started, every training step ended, every
    validation began and ended, training ended, and the test's phases (its batches, its figures)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.marks: dict[str, float] = {"built": time.perf_counter()}
        self.ends: list[float] = []
        self.validations: list[list[float]] = []  # [start, end] of each, the sanity check's first

    def _mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes its TrainerFn enum: "fit", "test"
        self.marks.setdefault(f"setup_{stage}", time.perf_counter())  # after the datamodule's setup

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
        self._mark("test_figures_end")  # after TestFigures' (callbacks run in order; this one is added last)

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
    """Where a train.py run's wall time went, from its StepTimer timeline and the parent's start and end.

    The coarse split: start to the first step (`to_train_start_s`), the steps with the validations between them
    (`steps_s`), the rest (`after_steps_s`). The fine one, which adds up to the same wall time: `startup_s`
    (imports, config, data check, model), `trainer_data_s` (Trainer, accelerator, data loaded and moved),
    `to_first_step_s` (model to the device, sanity check), `training_s` (the steps and their checkpoints),
    `validation_s` (every validation after the sanity check), then, with a test, `fit_end_s` (to the test's
    start: the best checkpoint loaded), `test_s` (its batches), `test_figures_s`, and `exit_s` (the
    hyperparameters and metrics written, the interpreter's exit).
    """
    marks, ends = timeline["marks"], timeline["ends"]
    train_start = marks["train_start"]
    validation = sum(e - s for s, e in timeline["validations"] if s >= train_start)
    seconds = {
        "wall_s": end - start,
        "to_train_start_s": train_start - start,
        "steps_s": ends[-1] - train_start,  # the validations during training included
        "after_steps_s": end - ends[-1],  # the last validation, the test, its figures, exit
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
    """Run scripts/train.py as a user does; return where its wall time went (`phases`) and its StepTimer
    timeline (the time at the end of each step: "ends"; the validations' [start, end]: "validations")."""
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


# conf/speed/'s presets, by the setting each one is (its speed.compile: false)
SPEED_PRESETS = {("forward_backward", "triton"): "graphed", ("whole_step", "triton"): "graphed_step"}


def speed_overrides(cuda_graph: str = "none", loop: str = "fused") -> list[str]:
    """train.py's overrides for speed.cuda_graph=`cuda_graph` and speed.loop=`loop`: the preset's name where one is
    exactly that setting, else the keys that differ from the default (speed=fused)."""
    if (cuda_graph, loop) in SPEED_PRESETS:
        return [f"speed={SPEED_PRESETS[cuda_graph, loop]}"]
    return [f"speed.loop={loop}"] * (loop != "fused") + [f"speed.cuda_graph={cuda_graph}"] * (cuda_graph != "none")


def train_script_steps_per_second(steps: int, warmup: int, data_dir: str, device: str, *overrides: str) -> float:
    """Steps per second of scripts/train.py over `steps` steps (validation only at the end, no test)."""
    _, timeline = run_train_script(steps, data_dir, device, f"val_every={steps}", "test=false", *overrides)
    return steps_per_second(timeline["ends"], warmup)


def make_whole_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The bare loop's whole training step as one function, as WholeStepGraphModule.whole_step writes train.py's
    (speed.cuda_graph=whole_step): gradients to None, forward, loss, backward, Adam. Returns (loss, logits)."""

    def step(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach()

    return step


def bare_loop_steps_per_second(
    steps: int,
    warmup: int,
    data_dir: str,
    device: str,
    hidden_size: int,
    layer_num: int,
    batch_size: int,
    cuda_graph: bool = False,
    on_step: Callable[[int], None] | None = None,
    loop: str = "fused",
    fused_adam: bool = True,
    whole_step: bool = False,
) -> float:
    """The same model, optimiser and data as train.py, in a plain loop over shuffled batches gathered from
    the training set, which is kept on the device. `on_step(step)` is called before each step (a profiler's).
    `loop`: the LSTM's implementation, as train.py's speed.loop (fused, its default; triton; plain).
    `fused_adam=False`: Adam's default implementation instead (for-each on a GPU), to measure what fusing gives.
    `whole_step`: each step one function (`make_whole_step`); with `cuda_graph`, replayed from one CUDA graph
    (`GraphedStep`), as train.py's speed.cuda_graph=whole_step. Otherwise `cuda_graph` graphs the forward and
    backward, as speed.cuda_graph=forward_backward."""
    skip_the_nvml_check_without_nvml()  # as train.py does
    data = MNISTDataModule(data_dir=data_dir, download=False)
    data.prepare_data()
    data.setup("fit")
    images, labels = (t.to(device) for t in data.train_set.tensors)
    model = RowLSTMClassifier(hidden_size=hidden_size, layer_num=layer_num).use(loop).to(device)
    # As in conf/ (and capturable when the graph holds Adam's update, as train.py makes it then).
    capturable = whole_step and cuda_graph and device == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if fused_adam else None, capturable=capturable)
    if whole_step:
        whole = make_whole_step(model, optimizer)
        whole = GraphedStep(whole, model.parameters()) if cuda_graph else whole
    else:
        whole, net = None, GraphedTraining(model) if cuda_graph else model
    order = torch.randperm(len(images), device=device)
    ends = []
    for step in range(steps):
        if on_step is not None:
            on_step(step)
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


RECIPE_RUNS = {  # name -> train.py overrides; the tutorial recipe (2,000 steps, validation every 500, test)
    # speed=graphed_step: the whole step in one CUDA graph, with the Triton kernels (speed.loop=triton)
    "train.py speed=graphed_step": ["speed=graphed_step"],
    # speed=graphed: the forward and backward in a CUDA graph, with the Triton kernels
    "train.py speed=graphed": ["speed=graphed"],
    # The whole step in a graph, with the training metrics written every 50 steps (Lightning's default), not every 10:
    # on a step the logger writes, reading them makes the CPU wait for the GPU, which then idles while Lightning
    # logs and starts the next step (the bare loop, which reads its loss every 10 steps, starts it at once).
    "train.py speed=graphed_step trainer.log_every_n_steps=50": ["speed=graphed_step", "trainer.log_every_n_steps=50"],
    # the forward and backward in a CUDA graph, the fused loop (train.py's default loop)
    "train.py speed.cuda_graph=forward_backward": ["speed.cuda_graph=forward_backward"],
    # What StopOnNonFiniteLoss costs: on the GPU it reads the losses every 10 steps (where Lightning waits anyway).
    "train.py speed.cuda_graph=forward_backward ~callbacks.stop_on_non_finite_loss": [
        "speed.cuda_graph=forward_backward",
        "~callbacks.stop_on_non_finite_loss",
    ],
    "train.py speed.cuda_graph=forward_backward data.on_device=false": [
        "speed.cuda_graph=forward_backward",
        "data.on_device=false",
    ],
    "train.py": [],
}


def recipe(
    data_dir: str, device: str, runs: dict[str, list[str]] | None = None, out: Path | None = None, rounds: int = 1
) -> list[dict[str, object]]:
    """The tutorial's 2,000-step recipe on the GPU: the bare loop with a CUDA graph (training only; with and
    without speed.loop=triton's kernels, and with the whole step in one graph: `GraphedStep`), then scripts/train.py
    start to exit (validation, test and figures included), split into its phases (`phases`), with its training
    steps per second (the goal: <= 15 s).
    With `rounds` > 1 the train.py runs repeat, every other round in reverse order (the first run after the bare
    loop has been the slowest to start), each row numbered by its round. `out`: the rows so far are written
    there (JSON) after each run."""
    rows: list[dict[str, object]] = []
    for triton, whole_step in ((True, False), (False, False), (True, True)):
        name = "bare loop, " + ("the whole step in one CUDA graph" if whole_step else "CUDA graph")
        name += ", Triton" if triton else ""
        start = time.perf_counter()
        try:
            rate = bare_loop_steps_per_second(
                2000,
                10,
                data_dir,
                device,
                256,
                2,
                128,
                cuda_graph=True,
                loop="triton" if triton else "fused",
                whole_step=whole_step,
            )
        except Exception as err:  # (a variant never run on a GPU before must not cost the other runs)
            rows.append({"run": name, "error": repr(err)[-1500:]})
            print(f"recipe {name}: failed\n{err!r}", flush=True)
            continue
        rows.append({"run": name, "wall_s": time.perf_counter() - start, "steps_per_s": rate})
        print(f"recipe {name}: {rows[-1]['wall_s']:.1f} s wall, {rate:.0f} steps/s", flush=True)
    chosen = list((RECIPE_RUNS if runs is None else runs).items())
    for r in range(rounds):
        for name, overrides in chosen if r % 2 == 0 else chosen[::-1]:
            if out is not None:
                out.write_text(json.dumps(rows, indent=2))
            numbered = {"round": r + 1} if rounds > 1 else {}
            try:
                seconds, timeline = run_train_script(2000, data_dir, device, *overrides)
            except RuntimeError as err:
                rows.append({"run": name, **numbered, "error": str(err)[-1500:]})
                print(f"recipe {name}: failed\n{err}", flush=True)
                continue
            # (The validations every 500 steps left out: the bare loop's rate has none.)
            rate = steps_per_second(timeline["ends"], 10, timeline["validations"])
            rows.append({"run": name, **numbered, **seconds, "steps_per_s": rate})
            numbers = ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items() if isinstance(v, float))
            print(f"recipe {name}{f' (round {r + 1})' if numbered else ''}: {numbers}", flush=True)
    if out is not None:
        out.write_text(json.dumps(rows, indent=2))
    return rows


def compare_adam(
    data_dir: str, device: str, rounds: int, steps: int = 2000, hidden_size: int = 256
) -> list[dict[str, object]]:
    """The bare loop's steps per second with Adam fused (train.py's) and Adam's default, interleaved."""
    rows: list[dict[str, object]] = []
    gpu = device == "cuda"
    for r in range(rounds):
        for fused in (True, False) if r % 2 == 0 else (False, True):
            rate = bare_loop_steps_per_second(
                steps,
                10,
                data_dir,
                device,
                hidden_size,
                2,
                128,
                cuda_graph=gpu,
                loop="triton" if gpu else "fused",
                fused_adam=fused,
            )
            rows.append({"adam": "fused" if fused else "default", "round": r + 1, "steps_per_s": rate})
            print(f"bare loop, Adam {rows[-1]['adam']} (round {r + 1}): {rate:.0f} steps/s", flush=True)
    return rows


SMALL_RUN = ["hidden_size=8", "layer_num=1", "batch_size=128"]  # a whole run whose fixed costs show


def compare_figures(data_dir: str, device: str, rounds: int, steps: int = 100) -> list[dict[str, object]]:
    """Whole train.py runs of a small model (`steps` steps, validation, test and its figures), the test figures
    drawn in forked processes (the default) and one after another in the run's own process
    (`callbacks.test_figures.processes=1`), interleaved ABBA; each row holds the run's phases (`phases`)."""
    variants = {"forked": [], "here": ["callbacks.test_figures.processes=1"]}
    rows: list[dict[str, object]] = []
    for r in range(rounds):
        for figures in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            overrides = [*SMALL_RUN, f"val_every={steps}", *variants[figures]]
            seconds, _ = run_train_script(steps, data_dir, device, *overrides)
            rows.append({"figures": figures, "round": r + 1, "overrides": overrides, **seconds})
            print(
                f"figures {figures} (round {r + 1}): test figures {seconds['test_figures_s']:.2f} s, "
                f"wall {seconds['wall_s']:.2f} s",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The 2,000-step recipe alone, on the GPU (benchmarks/gpu.sh).")
    parser.add_argument("--data-dir", default="data", help="holds MNIST/raw/")
    parser.add_argument("--out", type=Path, required=True, help="the rows, as JSON")
    parser.add_argument(
        "--profile",
        type=Path,
        help="first, one recipe run with speed.cuda_graph=forward_backward under Lightning's SimpleProfiler, whose "
        "reports (fit-profile.txt, test-profile.txt) go to this folder",
    )
    parser.add_argument("--runs", type=int, default=len(RECIPE_RUNS), help="the first this many of RECIPE_RUNS")
    parser.add_argument("--rounds", type=int, default=1, help="of those runs, every other round in reverse order")
    parser.add_argument(
        "--adam-rounds",
        type=int,
        default=0,
        help="instead of the recipe: the bare loop's 2,000 steps (CUDA graph, Triton) with Adam fused and not, "
        "this many rounds in ABBA order",
    )
    parser.add_argument(
        "--figures-rounds",
        type=int,
        default=0,
        help="instead of the recipe: whole runs of a small model with the test figures drawn in forked processes "
        "and in the run's own process, this many rounds in ABBA order",
    )
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.figures_rounds:
        args.out.write_text(json.dumps(compare_figures(args.data_dir, device, args.figures_rounds), indent=2))
        return
    if args.adam_rounds:
        args.out.write_text(json.dumps(compare_adam(args.data_dir, device, args.adam_rounds), indent=2))
        return
    if args.profile:
        profiler = "+trainer.profiler"
        seconds, _ = run_train_script(
            2000,
            args.data_dir,
            device,
            "speed.cuda_graph=forward_backward",
            f"{profiler}._target_=lightning.pytorch.profilers.SimpleProfiler",
            f"{profiler}.dirpath={args.profile.resolve()}",
            f"{profiler}.filename=profile",
        )
        print("profiled run: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()), flush=True)
    recipe(args.data_dir, device, dict(list(RECIPE_RUNS.items())[: args.runs]), out=args.out, rounds=args.rounds)
    from benchmarks import plots  # (here: StepTimer's runs of train.py import this module, and time their start)

    plots.draw(args.out)  # the runs' phases against the goal, beside the rows


if __name__ == "__main__":
    main()
