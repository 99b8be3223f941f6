"""MNIST as 28-step sequences of 28-pixel rows, held in memory as tensors, for Lightning."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

from mnist_lstm.data.augment import random_shift, random_warp
from mnist_lstm.data.files import ensure_mnist, load_mnist


class InMemory(TensorDataset):
    """A split held as tensors, on the CPU or the GPU. The DataLoader hands `__getitems__` a whole batch of indices:
    one gather per tensor makes the batch, not a Python loop over samples and a stack (on a GPU, a few kernels per
    batch instead of hundreds)."""

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        device = self.tensors[0].device
        index = torch.as_tensor(indices, dtype=torch.long)
        if device.type == "cuda":  # through pinned memory, so the copy does not wait for the GPU
            index = index.pin_memory().to(device, non_blocking=True)
        return tuple(tensor[index] for tensor in self.tensors)


class ResumableShuffle(Sampler[int]):
    """Every index of a dataset of `size` once per epoch, in an order fixed by (seed, epoch), so that a resumed run
    reads what was left: `DataLoader(shuffle=True)` draws each epoch's order from the global RNG when the epoch
    starts, which a run resumed mid-epoch cannot replay. `resume_at(epoch, samples_done)` makes the next pass skip
    what that epoch had already read; Lightning calls `set_epoch` before every epoch, which starts from its beginning.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.epoch = 0
        self.start = 0  # samples of `epoch` already read before a resume

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def resume_at(self, epoch: int, samples_done: int) -> None:
        self.epoch, self.start = epoch, samples_done

    def __iter__(self) -> Iterator[int]:
        # Seeded per (seed, epoch), not drawn from a running generator: any epoch can be rebuilt alone.
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch)) % 2**63)
        yield from torch.randperm(self.size, generator=generator)[self.start :].tolist()

    def __len__(self) -> int:
        # The full epoch: Lightning counts batches per epoch from this and resumes its counters mid-epoch.
        return self.size


class MNISTDataModule(L.LightningDataModule):
    """The official 60,000 training images split 55,000 / 5,000 with a fixed seed, and the official 10,000 test
    images, in memory as tensors (47 MB of pixels: no image decoded per sample). With `on_device` (by default on a
    GPU) they move to the GPU once, in setup: no host-to-device copy of images per step. `shift`, `rotate`,
    `elastic`: the training batches' augmentation (augment.py), on the device where they are.
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
        on_device: bool | None = None,
        shift: int = 0,
        rotate: float = 0.0,
        elastic: float = 0.0,
    ) -> None:
        super().__init__()
        # In every checkpoint (datamodule_hyper_parameters); not logged: train.py logs the whole config once.
        self.save_hyperparameters(logger=False)
        self.train_set: InMemory | None = None
        self.val_set: InMemory | None = None
        self.test_set: InMemory | None = None
        self.train_order: ResumableShuffle | None = None
        self._train_order_to_resume: dict | None = None

    def prepare_data(self) -> None:  # once, before any process reads the files
        ensure_mnist(self.hparams.data_dir, self.hparams.download)

    def setup(self, stage: str | None = None) -> None:
        # Lightning calls setup for fit and again for test: build the splits once.
        if self.train_set is not None:
            return
        images, labels = load_mnist(self.hparams.data_dir, train=True)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_idx, train_idx = order[: self.hparams.val_size], order[self.hparams.val_size :]
        test = load_mnist(self.hparams.data_dir, train=False)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        device = device if self._keep_on(device) else torch.device("cpu")
        self.train_set, self.val_set, self.test_set = (
            InMemory(*(tensor.to(device) for tensor in split))
            for split in ((images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx]), test)
        )

    def _keep_on(self, device: torch.device) -> bool:
        """Whether the splits move to `device` once (on_device: true, or null on a GPU)."""
        if self.hparams.on_device is None:  # (auto)
            return device.type == "cuda"
        return bool(self.hparams.on_device) and device.type != "cpu"

    def _loader(self, dataset: InMemory | None, batch_size: int, sampler: ResumableShuffle | None = None) -> DataLoader:
        assert dataset is not None, "call setup() first"
        on_gpu = dataset.tensors[0].device.type != "cpu"  # then only the main process can gather from it
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=tuple,  # InMemory.__getitems__ has made the batch
            num_workers=0 if on_gpu else self.hparams.num_workers,
            pin_memory=self.hparams.pin_memory and not on_gpu,
            persistent_workers=self.hparams.num_workers > 0 and not on_gpu,
        )

    def train_dataloader(self) -> DataLoader:
        # Shuffled in an order fixed by (the run's seed, epoch), so a resumed run reads what was left.
        assert self.train_set is not None, "call setup() first"
        resume, self._train_order_to_resume = self._train_order_to_resume, None
        seed = resume["seed"] if resume else torch.initial_seed()  # the run's seed (seed_everything)
        self.train_order = ResumableShuffle(len(self.train_set), seed=seed)
        if resume:
            self.train_order.resume_at(resume["epoch"], resume["samples"])
        return self._loader(self.train_set, self.hparams.batch_size, self.train_order)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        shift, rotate, elastic = self.hparams.shift, self.hparams.rotate, self.hparams.elastic
        if (shift or rotate or elastic) and self.trainer is not None and self.trainer.training:
            images, labels = batch
            return random_warp(random_shift(images, shift), rotate, elastic), labels
        return batch

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size)

    def state_dict(self) -> dict:
        """Where training stands in the shuffled training set, saved in every checkpoint."""
        if self.train_order is None or self.trainer is None or self.trainer.state.fn != "fit":
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed  # batches of this epoch
        samples = done * self.hparams.batch_size
        return {"train_order": {"seed": self.train_order.seed, "epoch": self.trainer.current_epoch, "samples": samples}}

    def load_state_dict(self, state_dict: dict) -> None:
        self._train_order_to_resume = state_dict.get("train_order")
