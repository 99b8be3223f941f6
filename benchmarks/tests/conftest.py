"""The benchmarks' fixture: a private copy of the real MNIST files, found where the project's tests find them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mnist_lstm.data import MNIST_FILES, ensure_mnist, raw_dir

REPO = Path(__file__).resolve().parents[2]
DATA_VARIABLE = "MNIST_LSTM_DATA"  # a folder holding MNIST/raw/*.gz (or the four files themselves)


def mnist_raw_folders(environ: dict[str, str], repo: Path) -> list[Path]:
    """Where the four original MNIST files may be, in the order tried: $MNIST_LSTM_DATA, the clone's data/, and
    ../shared/data/ beside the checkout (tests/helpers.py's mnist_sources, the project's tests' order)."""
    folders = []
    if environ.get(DATA_VARIABLE):
        named = Path(environ[DATA_VARIABLE]).expanduser()
        folders.append(named if any((named / name).is_file() for name in MNIST_FILES) else raw_dir(named))
    return [*folders, raw_dir(repo / "data"), raw_dir(repo.parent / "shared" / "data")]


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable data dir holding copies of the four MNIST files (the first folder of `mnist_raw_folders` that
    holds all four; else downloaded into the clone's data/, as train.py does). Without them the session stops."""
    folders = mnist_raw_folders(dict(os.environ), REPO)
    source = next((f for f in folders if all((f / name).is_file() for name in MNIST_FILES)), None)
    if source is None:
        try:
            ensure_mnist(REPO / "data", download=True)
        except Exception as err:  # offline, or a download that failed its checksum
            tried = ", ".join(map(str, folders))
            pytest.exit(
                f"the benchmarks' tests need the four MNIST files {', '.join(MNIST_FILES)}; none of {tried} holds "
                f"them and downloading failed ({err}); set {DATA_VARIABLE}=<a folder holding MNIST/raw/>",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )
        source = raw_dir(REPO / "data")
    data_dir = tmp_path_factory.mktemp("data")
    raw_dir(data_dir).mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(source / name, raw_dir(data_dir) / name)
    return data_dir
