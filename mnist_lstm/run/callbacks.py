"""Callbacks that keep a run's work safe: a checkpoint on SIGTERM/Ctrl-C, exact RNG on resume, and a stop
on a non-finite loss before it reaches the weights or a checkpoint."""

from __future__ import annotations

import logging
import random
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lstm.errors import UserError

log = logging.getLogger(__name__)


class CheckpointOnInterrupt(L.Callback):
    """On SIGTERM or Ctrl-C: finish the step, save last.ckpt, say how to continue, and exit with 128 + the signal;
    a second Ctrl-C stops at once. Not OnExceptionCheckpoint: that saves mid-step on any error (docs/reliability.md).
    """

    def __init__(self, dirpath: str) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.signal = signal.SIGTERM

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own Ctrl-C stops mid-step (no exact resume) and exits with 1: pass it to Lightning's SIGTERM
        # handler instead, which stops at the end of the step. Lightning puts the previous handler back after the fit.
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.SIGINT
        log.warning("Ctrl-C: finishing this step and saving a checkpoint (press Ctrl-C again to stop at once)")
        lightning_handler = signal.getsignal(signal.SIGTERM)  # (none where Lightning installs none: Windows)
        if callable(lightning_handler):
            lightning_handler(signal.SIGTERM, frame)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):  # raised by Lightning at the end of the step
            return
        exception.code = 128 + self.signal  # SIGTERMException is a SystemExit: this is the exit status
        if trainer.state.fn == "fit" and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path)
            log.warning(
                f"{self.signal.name} at step {trainer.global_step}: saved {self.path}; "
                f"continue with: python {sys.argv[0]} ckpt_path={self.path}"
            )


class RestoreRNG(L.Callback):
    """Saves the global RNG states in every checkpoint (Lightning does not) and restores them when training resumes,
    so a resumed run draws the dropout masks an unbroken one would. They go back at the start of training, after
    the sanity check and the dataloaders, which an unbroken run had also been through."""

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # As plain values and tensors, which torch.load(weights_only=True) accepts (numpy's own state it does not).
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]
        states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states, self._to_restore = self._to_restore, None
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])


class StopOnNonFiniteLoss(L.Callback):
    """Stops training at the first step whose loss is NaN or infinite, before its backward pass, so neither the
    weights nor any checkpoint see it (EarlyStopping(check_finite=True) looks only at validation, after the damage).

    `deferred` (by default on a GPU): reading a loss makes the CPU wait for the GPU, so the losses are kept on the
    device and read together on the steps whose metrics Lightning writes, before validation, before a checkpoint
    and at the end of training: the stop comes up to `log_every_n_steps` steps late, every checkpoint still from
    before the bad step (docs/reliability.md). With speed.cuda_graph=whole_step, whose step has already updated
    the weights, only the checkpoints are spared.
    """

    def __init__(self, deferred: bool | None = None) -> None:
        self.deferred = deferred
        self._losses: list[tuple[int, torch.Tensor]] = []  # (step, loss) not checked yet

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        step, every = trainer.global_step + 1, trainer.log_every_n_steps
        self._losses.append((step, loss.detach()))
        deferred = self.deferred if self.deferred is not None else loss.device.type != "cpu"
        if not deferred or every <= 0 or step % every == 0:  # every step, or the steps whose metrics are written
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._check(trainer)  # raising here writes nothing: Lightning saves the checkpoint after this hook

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        losses, self._losses = self._losses, []
        finite = torch.isfinite(torch.stack([loss for _, loss in losses])).tolist() if losses else []  # one wait
        if all(finite):
            return
        step, loss = losses[finite.index(False)]
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        last = Path(getattr(trainer.checkpoint_callback, "dirpath", None) or ".") / "last.ckpt"
        saved = f"the last checkpoint, {last}, is from before it" if last.is_file() else "no checkpoint was written"
        raise UserError(
            f"the training loss became {loss.item()} at step {step}; {saved}; "
            f"lower lr (it is {lr:g}) or clip gradients (trainer.gradient_clip_val=1.0) and train again"
        )
