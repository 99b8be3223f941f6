"""What lets `ckpt_path=<run>/checkpoints/last.ckpt` continue a run exactly where it stopped.

Lightning restores the weights, the optimiser and scheduler, the step counters and the callbacks. Three
things it leaves to us, each handled here or in `callbacks.RestoreRNG`:

- the run itself: a checkpoint inside `<run>/checkpoints/` is resumed *into that run*, with the overrides
  that run was started with (`<run>/.hydra/overrides.yaml`), so the config, the checkpoints and the
  TensorBoard curves continue in the same place (`resume_overrides`);
- the data order: `DataLoader(shuffle=True)` draws each epoch's order from the global RNG when the epoch
  starts, which a run resumed mid-epoch cannot replay; `ResumableShuffle` makes the order a function of
  (seed, epoch) and can start part-way into an epoch;
- the RNG that dropout draws from (`callbacks.RestoreRNG`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import OmegaConf
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


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The training run a checkpoint belongs to: `<run>/checkpoints/x.ckpt` -> `<run>`; else its folder."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def run_of_checkpoint(ckpt_path: str | Path) -> Path | None:
    """The Hydra run a checkpoint was written by (run_dir_of, holding `.hydra/overrides.yaml`), or None."""
    path = Path(ckpt_path).resolve()
    run_dir = run_dir_of(path)
    return run_dir if path.parent.name == "checkpoints" and (run_dir / ".hydra" / "overrides.yaml").is_file() else None


def resume_overrides(run_dir: Path, overrides: list[str], keys: list[str]) -> list[str]:
    """The command line that continues `run_dir`: its original overrides, then the new ones (`keys` are
    the keys the new overrides set, which replace the original's), then `hydra.run.dir=<run_dir>`."""
    original = [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
    kept = [o for o in original if _key(o) not in set(keys) | {"ckpt_path"}]
    return [*kept, *overrides, f"hydra.run.dir={run_dir}"]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")
