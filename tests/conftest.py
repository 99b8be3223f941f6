"""Shared fixtures: a private copy of the real MNIST files, the repository paths, a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from mnist_lstm.data import MNIST_FILES

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout (read-only); MNIST_LSTM_SHARED_DATA points elsewhere if needed.
SHARED_DATA = Path(os.environ.get("MNIST_LSTM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable data dir holding MNIST/raw/*.gz copied from ../shared/data (never written to)."""
    source = SHARED_DATA / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (source / name).is_file()]
    assert not missing, f"tests need the MNIST files {missing} in {source} (or set MNIST_LSTM_SHARED_DATA)"
    data_dir = tmp_path_factory.mktemp("data")
    (data_dir / "MNIST" / "raw").mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(source / name, data_dir / "MNIST" / "raw" / name)
    return data_dir


def run_script(
    script: str, *overrides: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `python scripts/<script> overrides...` the way a user does, forced onto the CPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *overrides],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
