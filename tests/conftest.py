"""Shared fixtures: a private copy of the real MNIST files, the repository paths, a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
