"""The four original MNIST files: where they go, checked (md5) and extracted once, read as tensors."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zlib
from pathlib import Path

import torch
from filelock import FileLock
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from mnist_lstm.errors import UserError

MNIST_FILES = tuple(name for name, _md5 in MNIST.resources)  # the four original .gz files
# The size of each file torchvision extracts from them: an IDX header, then one byte per pixel or label.
EXTRACTED_SIZES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}


def raw_dir(data_dir: str | Path) -> Path:
    """Where torchvision looks for (and downloads) the four original MNIST files."""
    return Path(data_dir) / "MNIST" / "raw"


def missing_data_message(data_dir: str | Path, reason: str, keys: str = "data.") -> str:
    """`keys`: how the script spells its data keys (train.py's `data.data_dir`; the demo's top-level `data_dir`)."""
    return (
        f"MNIST is not in {raw_dir(data_dir)} and could not be downloaded ({reason}); online, a run downloads it "
        f"there itself; offline, put the four original files {', '.join(MNIST_FILES)} into that folder, "
        f"or point {keys}data_dir=<dir> at a folder holding MNIST/raw/ with them"
    )


def damage(path: Path, md5: str) -> str | None:
    """What is wrong with an original MNIST file that is present (truncated, corrupted, or another file: its md5 is
    not the published one) and what to do, in one line; None when it is good."""
    if check_integrity(str(path), md5):
        return None
    try:
        with gzip.open(path) as file:
            while file.read(1 << 22):
                pass
        reason = f"not the original file (checksum mismatch: its md5 is not the published {md5})"
    except EOFError:
        reason = "truncated (it ends before its compressed data does)"
    except (OSError, zlib.error):  # gzip.BadGzipFile is an OSError
        reason = "corrupted (not a readable gzip file)"
    return (
        f"{path} is {reason}; delete it and run again online to download it anew, or replace it with an intact "
        "copy of the original file"
    )


def ensure_mnist(data_dir: str | Path, download: bool = True, keys: str = "data.") -> None:
    """Make `<data_dir>/MNIST/raw/` hold the verified (md5), extracted MNIST files: missing or damaged ones are
    downloaded if `download`, else the run stops with one line saying which file is wrong and what to do."""
    folder = raw_dir(data_dir)
    # One process at a time (runs of a sweep share the folder): none may read a file another is extracting.
    writable = folder.is_dir() and os.access(folder, os.W_OK)  # a read-only copy is never extracted into
    with FileLock(folder / ".lock") if writable else contextlib.nullcontext():
        present = [(name, md5) for name, md5 in MNIST.resources if (folder / name).is_file()]
        damaged = [message for name, md5 in present if (message := damage(folder / name, md5))]
        if damaged and not download:
            raise UserError(damaged[0])
        if len(present) < len(MNIST.resources) and not download:
            raise UserError(missing_data_message(data_dir, f"downloading is off: {keys}download=false", keys))
        for name, size in EXTRACTED_SIZES.items():  # half-extracted (a killed run): torchvision would read it
            if (folder / name).is_file() and (folder / name).stat().st_size != size:
                (folder / name).unlink()
        try:
            # torchvision prints its download and extraction chatter; a failure is reported below instead.
            with contextlib.redirect_stdout(io.StringIO()):
                MNIST(str(data_dir), train=True, download=True)
        except (RuntimeError, OSError) as err:
            if damaged:  # and it could not be downloaded again
                raise UserError(damaged[0]) from err
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(missing_data_message(data_dir, reason, keys)) from err


def load_mnist(data_dir: str | Path, train: bool, keys: str = "data.") -> tuple[torch.Tensor, torch.Tensor]:
    """Official MNIST split as (images float32 (N, 28, 28) in [0, 1], labels int64 (N,)); see ensure_mnist."""
    try:
        dataset = MNIST(str(data_dir), train=train, download=False)
    except RuntimeError as err:
        raise UserError(missing_data_message(data_dir, "not prepared yet", keys)) from err
    return dataset.data.float().div_(255.0), dataset.targets.long()
