"""MNIST as 28-step sequences of 28-pixel rows, held in memory as tensors."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zlib
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from mnist_lstm.errors import UserError
from mnist_lstm.resume import ResumableShuffle

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


def missing_data_message(data_dir: str | Path, reason: str) -> str:
    return (
        f"MNIST is not in {raw_dir(data_dir)} and could not be downloaded ({reason}); "
        f"put the four original files {', '.join(MNIST_FILES)} into that folder "
        "(e.g. cp ../shared/data/MNIST/raw/*.gz there) or point data.data_dir=<dir> at a folder holding MNIST/raw/"
    )


def damage(path: Path, md5: str) -> str | None:
    """What is wrong with an original MNIST file that is present: truncated, corrupted or another file
    (its md5 differs from the published one); None when it is good."""
    if check_integrity(str(path), md5):
        return None
    try:
        with gzip.open(path) as file:
            while file.read(1 << 22):
                pass
    except EOFError:
        return "truncated (it ends before its compressed data does)"
    except (OSError, zlib.error):  # gzip.BadGzipFile is an OSError
        return "corrupted (not a readable gzip file)"
    return f"not the original file (checksum mismatch: its md5 is not the published {md5})"


def damaged_data_message(data_dir: str | Path, name: str, reason: str) -> str:
    path = raw_dir(data_dir) / name
    return (
        f"{path} is {reason}; replace it with the original (e.g. cp ../shared/data/MNIST/raw/{name} {path.parent}/) "
        "or delete it to download it again"
    )


def _remove_partial_extractions(folder: Path) -> None:
    """Delete extracted files of the wrong size (an extraction that was killed half-way), so torchvision
    extracts them again from the verified .gz files instead of reading half a file."""
    for name, size in EXTRACTED_SIZES.items():
        if (folder / name).is_file() and (folder / name).stat().st_size != size:
            (folder / name).unlink()


def ensure_mnist(data_dir: str | Path, download: bool = True) -> None:
    """Make `<data_dir>/MNIST/raw/` hold the verified, extracted MNIST files.

    With the four original `.gz` files there, torchvision checks their md5 sums and extracts them
    without touching the network; files that are missing or fail the check are downloaded if
    `download`, and otherwise the run stops here with one line saying what to do: for a file that is
    there but damaged, which file and what is wrong with it.
    """
    folder = raw_dir(data_dir)
    # One process at a time (runs of a sweep share the folder): none may read a file another is extracting.
    writable = folder.is_dir() and os.access(folder, os.W_OK)  # a read-only copy is never extracted into
    with FileLock(folder / ".lock") if writable else contextlib.nullcontext():
        _ensure_mnist(data_dir, folder, download)


def _ensure_mnist(data_dir: str | Path, folder: Path, download: bool) -> None:
    present = [(name, md5) for name, md5 in MNIST.resources if (folder / name).is_file()]
    damaged = {name: reason for name, md5 in present if (reason := damage(folder / name, md5))}
    if damaged and not download:
        raise UserError(damaged_data_message(data_dir, *next(iter(damaged.items()))))
    if len(present) < len(MNIST.resources) and not download:
        raise UserError(missing_data_message(data_dir, "downloading is off: data.download=false"))
    _remove_partial_extractions(folder)
    try:
        # torchvision prints its download and extraction chatter; a failure is reported below instead.
        with contextlib.redirect_stdout(io.StringIO()):
            MNIST(str(data_dir), train=True, download=True)
    except (RuntimeError, OSError) as err:
        if damaged:  # and it could not be downloaded again
            raise UserError(damaged_data_message(data_dir, *next(iter(damaged.items())))) from err
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(missing_data_message(data_dir, reason)) from err


def load_mnist(data_dir: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Official MNIST split as (images float32 (N, 28, 28) in [0, 1], labels int64 (N,)); see ensure_mnist."""
    try:
        dataset = MNIST(str(data_dir), train=train, download=False)
    except RuntimeError as err:
        raise UserError(missing_data_message(data_dir, "not prepared yet")) from err
    return dataset.data.float().div_(255.0), dataset.targets.long()


class InMemory(TensorDataset):
    """A split held as tensors, on the CPU or on the GPU. The DataLoader hands `__getitems__` a whole
    batch of indices: one gather per tensor makes the batch, instead of a Python loop over samples and a
    stack (on a GPU, a few kernels per batch instead of hundreds)."""

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        device = self.tensors[0].device
        index = torch.as_tensor(indices, dtype=torch.long)
        if device.type == "cuda":  # through pinned memory, so the copy does not wait for the GPU
            index = index.pin_memory().to(device, non_blocking=True)
        return tuple(tensor[index] for tensor in self.tensors)

    def to(self, device: torch.device) -> InMemory:
        return InMemory(*(tensor.to(device) for tensor in self.tensors))


def _batch_as_gathered(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The DataLoader's collate_fn: InMemory.__getitems__ already returns the batch."""
    return batch


class MNISTDataModule(L.LightningDataModule):
    """Train/val/test as the tutorial's input pipeline had them: the official 60,000 training images
    split 55,000 / 5,000 with a fixed seed, and the official 10,000 test images untouched.

    Everything stays in memory as tensors (47 MB of pixels): no PIL image is decoded per sample. With
    `on_device` (by default whenever the run is on a GPU) the tensors move to the GPU once, in setup, and
    each batch is gathered there: no host-to-device copy of images per step.
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
        on_device: bool | str = "auto",
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
        self.on_device = on_device
        self.train_set: InMemory | None = None
        self.val_set: InMemory | None = None
        self.test_set: InMemory | None = None
        self.train_order: ResumableShuffle | None = None
        self._train_order_to_resume: dict | None = None

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
        self.train_set = InMemory(images[train_idx], labels[train_idx])
        self.val_set = InMemory(images[val_idx], labels[val_idx])
        self.test_set = InMemory(*load_mnist(self.data_dir, train=False))
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self._keep_on(device):
            self.train_set, self.val_set, self.test_set = (
                s.to(device) for s in (self.train_set, self.val_set, self.test_set)
            )

    def _keep_on(self, device: torch.device) -> bool:
        """Whether the splits move to `device` once (on_device: true, or auto on a GPU)."""
        if self.on_device == "auto":
            return device.type == "cuda"
        return bool(self.on_device) and device.type != "cpu"

    def _loader(self, dataset: InMemory | None, batch_size: int, sampler: ResumableShuffle | None = None) -> DataLoader:
        assert dataset is not None, "call setup() first"
        on_gpu = dataset.tensors[0].device.type != "cpu"  # then only the main process can gather from it
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=False,  # never drop a sample: val and test metrics must see all of them
            collate_fn=_batch_as_gathered,
            num_workers=0 if on_gpu else self.num_workers,
            pin_memory=self.pin_memory and not on_gpu,
            persistent_workers=self.num_workers > 0 and not on_gpu,
        )

    def train_dataloader(self) -> DataLoader:
        # Shuffled in an order fixed by (the run's seed, epoch), so a resumed run reads what was left.
        assert self.train_set is not None, "call setup() first"
        resume, self._train_order_to_resume = self._train_order_to_resume, None
        seed = resume["seed"] if resume else torch.initial_seed()  # the run's seed (seed_everything)
        self.train_order = ResumableShuffle(len(self.train_set), seed=seed)
        if resume:
            self.train_order.resume_at(resume["epoch"], resume["samples"])
        return self._loader(self.train_set, self.batch_size, self.train_order)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def state_dict(self) -> dict:
        """Where training stands in the shuffled training set, saved in every checkpoint."""
        if self.train_order is None or self.trainer is None or self.trainer.state.fn != "fit":
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed  # batches of this epoch
        epoch = self.trainer.current_epoch
        return {"train_order": {"seed": self.train_order.seed, "epoch": epoch, "samples": done * self.batch_size}}

    def load_state_dict(self, state_dict: dict) -> None:
        self._train_order_to_resume = state_dict.get("train_order")
