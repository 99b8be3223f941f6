"""Shared fixtures: a private copy of the real MNIST files, and one tiny real training run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnist_lstm.data import ensure_mnist
from tests.helpers import REPO, NoMNIST, copy_mnist, find_mnist, run_script


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable data dir holding copies of the four MNIST files, found as tests/helpers.py's find_mnist says
    (downloaded into the clone's data/ if they are nowhere). Without them the session stops here, in one line."""
    try:
        source = find_mnist(dict(os.environ), REPO, download=lambda data_dir: ensure_mnist(data_dir, download=True))
    except NoMNIST as err:
        pytest.exit(str(err), returncode=pytest.ExitCode.USAGE_ERROR)
    return copy_mnist(source, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real run of scripts/train.py, shared by every test that needs a trained model or checkpoint:
    3 layers of 64 (not the defaults, so a checkpoint must carry its own architecture), 40 steps,
    validated at steps 20 and 40. Returns (run directory, stdout + stderr)."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_script(
        "train.py",
        "layer_num=3",
        "hidden_size=64",
        "max_steps=40",
        "val_every=20",
        "lr=3e-3",
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result.stdout + result.stderr
