"""MNIST as 28-step sequences of 28-pixel rows, held in memory as tensors."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from mnist_lstm.errors import UserError

MNIST_FILES = tuple(name for name, _md5 in MNIST.resources)  # the four original .gz files


def raw_dir(data_dir: str | Path) -> Path:
    """Where torchvision looks for (and downloads) the four original MNIST files."""
    return Path(data_dir) / "MNIST" / "raw"


def missing_data_message(data_dir: str | Path, reason: str) -> str:
    return (
        f"MNIST is not in {raw_dir(data_dir)} and could not be downloaded ({reason}); "
        f"put the four original files {', '.join(MNIST_FILES)} into that folder "
        "(e.g. cp ../shared/data/MNIST/raw/*.gz there) or point data.data_dir=<dir> at a folder holding MNIST/raw/"
    )


def ensure_mnist(data_dir: str | Path, download: bool = True) -> None:
    """Make `<data_dir>/MNIST/raw/` hold the verified, extracted MNIST files.

    With the four original `.gz` files there, torchvision checks their md5 sums and extracts them
    without touching the network; files that are missing or fail the check are downloaded if
    `download`, and otherwise the run stops here with one line saying what to do.
    """
    local_ok = all(check_integrity(str(raw_dir(data_dir) / name), md5) for name, md5 in MNIST.resources)
    if not local_ok and not download:
        raise UserError(missing_data_message(data_dir, "downloading is off: data.download=false"))
    try:
        # torchvision prints its download and extraction chatter; a failure is reported below instead.
        with contextlib.redirect_stdout(io.StringIO()):
            MNIST(str(data_dir), train=True, download=True)
    except (RuntimeError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(missing_data_message(data_dir, reason)) from err


def load_mnist(data_dir: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Official MNIST split as (images float32 (N, 28, 28) in [0, 1], labels int64 (N,)); see ensure_mnist."""
    try:
        dataset = MNIST(str(data_dir), train=train, download=False)
    except RuntimeError as err:
        raise UserError(missing_data_message(data_dir, "not prepared yet")) from err
    return dataset.data.float().div_(255.0), dataset.targets.long()


class MNISTDataModule(L.LightningDataModule):
    """Train/val/test as the tutorial's input pipeline had them: the official 60,000 training images
    split 55,000 / 5,000 with a fixed seed, and the official 10,000 test images untouched.

    Everything stays in memory as tensors (47 MB of pixels): no PIL image is decoded per sample.
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 42,
        download: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.split_seed = split_seed
        self.download = download
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def prepare_data(self) -> None:
        """Verify (or download) and extract the raw files once, before any process reads them."""
        ensure_mnist(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        # Lightning calls setup for fit and again for test: build the splits once.
        if self.train_set is not None:
            return
        images, labels = load_mnist(self.data_dir, train=True)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        self.train_set = TensorDataset(images[train_idx], labels[train_idx])
        self.val_set = TensorDataset(images[val_idx], labels[val_idx])
        self.test_set = TensorDataset(*load_mnist(self.data_dir, train=False))

    def _loader(self, dataset: TensorDataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        assert dataset is not None, "call setup() first"
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=False,  # never drop a sample: val and test metrics must see all of them
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)
