"""The benchmarks' fixture: a private copy of the real MNIST files, found where the project's tests find them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mnist_lstm.data import MNIST_FILES, ensure_mnist, raw_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable data dir holding copies of the four MNIST files, from the first of these that holds them:
    $MNIST_LSTM_DATA (a folder holding MNIST/raw/), the clone's data/, ../shared/data/ beside the checkout; else
    downloaded into the clone's data/, as train.py does."""
    roots = [Path(os.environ["MNIST_LSTM_DATA"]).expanduser()] if os.environ.get("MNIST_LSTM_DATA") else []
    folders = [raw_dir(root) for root in [*roots, REPO / "data", REPO.parent / "shared" / "data"]]
    source = next((f for f in folders if all((f / name).is_file() for name in MNIST_FILES)), None)
    if source is None:
        try:
            ensure_mnist(REPO / "data", download=True)
        except Exception as err:  # noqa: BLE001  (offline, or a download that failed its checksum)
            pytest.exit(
                f"the benchmarks' tests need MNIST: none of {', '.join(map(str, folders))} holds it and "
                f"downloading failed ({err}); set MNIST_LSTM_DATA=<a folder holding MNIST/raw/>",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )
        source = raw_dir(REPO / "data")
    data_dir = tmp_path_factory.mktemp("data")
    raw_dir(data_dir).mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(source / name, raw_dir(data_dir) / name)
    return data_dir
