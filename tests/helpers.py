"""What several test files use: where MNIST is found, the repository's paths, a CLI runner, a quiet Trainer,
composing train.py's config, reading TensorBoard's scalars back, and comparing our LSTM with nn.LSTM."""

from __future__ import annotations

import io
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import mnist_lstm.config  # noqa: F401  (registers the schemas and resolvers the configs name)
import mnist_lstm.fast
from mnist_lstm.data import MNIST_FILES, raw_dir
from mnist_lstm.model.lstm import StackedLSTM

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DATA_VARIABLE = "MNIST_LSTM_DATA"  # a folder holding MNIST/raw/*.gz (or the four files themselves)


class NoMNIST(Exception):
    """MNIST is in none of the places the tests look, and could not be downloaded."""


def mnist_sources(environ: dict[str, str], repo: Path) -> list[tuple[str, Path]]:
    """Where the tests look for the four original MNIST files, in order: (what the place is, its raw folder).

    The folder named by $MNIST_LSTM_DATA; the clone's own data/MNIST/raw/ (where train.py downloads them and the
    README tells users to put them); a read-only copy beside the checkout, ../shared/data/MNIST/raw/ (what this
    project's CI machines have)."""
    places = []
    if environ.get(DATA_VARIABLE):
        named = Path(environ[DATA_VARIABLE]).expanduser()
        holds_files = any((named / name).is_file() for name in MNIST_FILES)
        places.append((f"${DATA_VARIABLE}", named if holds_files else raw_dir(named)))
    places.append(("the clone's data folder", raw_dir(repo / "data")))
    places.append(("a copy beside the checkout", raw_dir(repo.parent / "shared" / "data")))
    return places


def find_mnist(environ: dict[str, str], repo: Path, download: Callable[[Path], None]) -> Path:
    """The raw folder holding all four MNIST files: the first of `mnist_sources` that does, or else the clone's
    data/MNIST/raw/ after `download(repo / "data")` (torchvision's, md5-verified, as training does). Raises
    NoMNIST with one message naming every place tried and the four files."""
    places = mnist_sources(environ, repo)
    for _, folder in places:
        if all((folder / name).is_file() for name in MNIST_FILES):
            return folder
    target = repo / "data"
    try:
        download(target)
    except Exception as err:  # offline, or a download that failed its checksum
        tried = "; ".join(f"{what}: {folder}" for what, folder in places)
        cause = err.__cause__ or err  # (the download's own error, not the run's advice on where to put the files)
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise NoMNIST(
            f"the tests need the four MNIST files {', '.join(MNIST_FILES)}; none of these places holds them ({tried}) "
            f"and downloading them into {target} failed ({reason}): copy them into {raw_dir(target)}, or set "
            f"{DATA_VARIABLE}=<a folder holding MNIST/raw/>"
        ) from None
    return raw_dir(target)


def copy_mnist(source: Path, data_dir: Path) -> Path:
    """A private, writable data dir holding copies of the four files of `source` (never written to)."""
    (data_dir / "MNIST" / "raw").mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(source / name, data_dir / "MNIST" / "raw" / name)
    return data_dir


def run_script(
    script: str, *overrides: str, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python scripts/<script> overrides...` the way a user does, forced onto the CPU."""
    environ = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *overrides],
        cwd=cwd or REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_in_process(script: str, *argv: str) -> tuple[int, str]:
    """Run scripts/<script> with `argv` in this process, as `python scripts/<script> argv` would; returns (exit
    status, stderr). Much faster than a subprocess: no second import of torch and Lightning."""
    path = REPO / "scripts" / script
    stderr = io.StringIO()
    saved_argv = sys.argv
    sys.argv = [str(path), *argv]
    try:
        with redirect_stderr(stderr):
            runpy.run_path(str(path), run_name="__main__")
        status = 0
    except SystemExit as exit_:
        status = 1 if isinstance(exit_.code, str) else int(exit_.code or 0)
        if isinstance(exit_.code, str):
            print(exit_.code, file=stderr)  # what the interpreter prints for sys.exit("...")
    finally:
        sys.argv = saved_argv
    return status, stderr.getvalue()


def quiet_cpu_trainer(**options: object) -> L.Trainer:
    """A Trainer on the CPU for tests that fit a module directly: no validation, and nothing written or printed
    (no logger, checkpoints, progress bar or model summary); `options` add to or replace these."""
    quiet = {
        "limit_val_batches": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
    }
    return L.Trainer(**{**quiet, **options})


def compose_train(*overrides: str) -> DictConfig:
    """train.py's config with these overrides, as a run composes it (outside a run: its output dir made up)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    OmegaConf.update(cfg, "paths.output_dir", "/tmp/unused", force_add=True)
    return cfg


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard holds under `log_dir`: tag -> [(step, value)]."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


# ---------------------------------------------------------------- parity with nn.LSTM


def copy_into_nn_lstm(ours: StackedLSTM, reference: nn.LSTM) -> None:
    """Slice-and-copy: the fused weight's columns are [W_ih | W_hh]; forget_bias folds into bias_ih."""
    hidden = ours.hidden_size
    with torch.no_grad():
        for k, layer in enumerate(ours.layers):
            w_ih, w_hh = layer.gates.weight.split([layer.input_size, hidden], dim=1)
            getattr(reference, f"weight_ih_l{k}").copy_(w_ih)
            getattr(reference, f"weight_hh_l{k}").copy_(w_hh)
            bias = layer.gates.bias.clone()
            bias[hidden : 2 * hidden] += layer.forget_bias
            getattr(reference, f"bias_ih_l{k}").copy_(bias)
            getattr(reference, f"bias_hh_l{k}").zero_()


def nn_lstm_grads_as_ours(ours: StackedLSTM, reference: nn.LSTM) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """nn.LSTM's gradients rearranged into our (fused weight, bias) layout."""
    grads = []
    for k in range(len(ours.layers)):
        w = torch.cat([getattr(reference, f"weight_ih_l{k}").grad, getattr(reference, f"weight_hh_l{k}").grad], dim=1)
        b = getattr(reference, f"bias_ih_l{k}").grad  # d/d(bias_ih) == d/d(bias_hh) == d/d(our bias)
        grads.append((w, b))
    return grads


def twins(
    layer_num: int, hidden: int, inputs: int = 7, dropout: float = 0.0, implementation: str = "fused"
) -> tuple[StackedLSTM, StackedLSTM]:
    """A StackedLSTM computing with `implementation` and one with the plain loop, the same weights, in double."""
    fast = StackedLSTM(inputs, hidden, layer_num, dropout, forget_bias=1.0).double()
    fast.implementation = mnist_lstm.fast.IMPLEMENTATIONS[implementation]
    plain = StackedLSTM(inputs, hidden, layer_num, dropout, forget_bias=1.0).double()
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def forward_and_backward(
    lstm: nn.Module, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], weights: torch.Tensor
):
    """Forward and a backward through outputs and both final states; returns outputs, states and all grads."""
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    out, (h, c) = lstm(x, state)
    ((out * weights).sum() + (h * 0.5).sum() + c.pow(2).sum()).backward()
    grads = [p.grad for p in lstm.parameters()] + [x.grad, *(s.grad for s in state)]
    return out, h, c, grads


def tight_crop_on_paper(image: torch.Tensor, scale: int = 6) -> Image.Image:
    """An MNIST digit cut to its strokes (they touch all four edges), enlarged, dark ink on white paper."""
    rows, cols = (image > 0.2).nonzero().unbind(dim=1)
    crop = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    large = torch.nn.functional.interpolate(crop[None, None], scale_factor=scale, mode="bilinear")[0, 0]
    return Image.fromarray((255 * (1 - large)).round().byte().numpy(), "L")


def thick_pen_on_paper(image: torch.Tensor, grow: int = 15, scale: int = 5) -> Image.Image:
    """An MNIST digit as written with a felt pen: enlarged, every stroke grown by a (grow x grow) window (15 at x5:
    2.8 pixels of MNIST width thicker), dark ink on white paper."""
    large = torch.nn.functional.interpolate(image[None, None], scale_factor=scale, mode="bilinear")
    thick = torch.nn.functional.max_pool2d(large, grow, stride=1, padding=grow // 2)[0, 0]
    return Image.fromarray((255 * (1 - thick)).round().byte().numpy(), "L")
