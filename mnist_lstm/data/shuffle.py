"""The training data's order, as a function of (seed, epoch), so that a resumed run reads what was left.

`DataLoader(shuffle=True)` draws each epoch's order from the global RNG when the epoch starts, which a run resumed
mid-epoch cannot replay; `ResumableShuffle` can rebuild any epoch's order alone and start part-way into it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableShuffle(Sampler[int]):
    """Every index of a dataset of `size` once per epoch, in an order fixed by (seed, epoch).

    `resume_at(epoch, samples_done)` makes the next pass skip what that epoch had already read. Lightning
    calls `set_epoch` before every epoch; a new epoch always starts from its beginning.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.start = 0  # samples of `epoch` already read before a resume

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def resume_at(self, epoch: int, samples_done: int) -> None:
        self.epoch, self.start = epoch, samples_done

    def order(self, epoch: int) -> torch.Tensor:
        # Seeded per (seed, epoch), not drawn from a running generator: any epoch can be rebuilt alone.
        generator = torch.Generator().manual_seed(hash((self.seed, epoch)) % 2**63)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        yield from self.order(self.epoch)[self.start :].tolist()

    def __len__(self) -> int:
        # The full epoch: Lightning counts batches per epoch from this and resumes its counters mid-epoch.
        return self.size
