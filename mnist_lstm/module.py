"""The LightningModule: the row-by-row LSTM classifier, its loss, metrics and optimiser."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_accuracy

from mnist_lstm.config import whole_step_refusal
from mnist_lstm.cuda_graph import GraphedStep, GraphedTraining
from mnist_lstm.errors import UserError
from mnist_lstm.lstm import RowLSTMClassifier

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class RowLSTMModule(L.LightningModule):
    """Trains RowLSTMClassifier with cross-entropy and logs slash-named metrics.

    The architecture arguments are saved in the checkpoint (`hparams`), so a checkpoint rebuilds
    its own model; the optimiser and scheduler are partials completed in configure_optimizers.
    `cuda_graph`: False, True (the forward and backward replayed from a CUDA graph) or "step" (the whole step).
    """

    def __init__(
        self,
        hidden_size: int = 256,
        layer_num: int = 2,
        dropout: float = 0.5,
        forget_bias: float = 1.0,
        cell: str = "custom",
        input_size: int = 28,
        num_classes: int = 10,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        fused: bool = True,
        compile: bool = False,
        cuda_graph: bool | str = False,
        triton: bool = False,
    ) -> None:
        super().__init__()
        if cuda_graph not in (False, True, "step"):
            raise ValueError(f"cuda_graph must be False, True or 'step', not {cuda_graph!r}")
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.net = RowLSTMClassifier(
            input_size, hidden_size, layer_num, num_classes, dropout, forget_bias, cell, fused=fused, triton=triton
        )
        if compile:
            # In place (nn.Module.compile), the LSTM only: the state-dict keys stay free of torch.compile's
            # `_orig_mod.` prefix, so a compiled run's checkpoint loads into an uncompiled model.
            self.net.lstm.compile()
        self._new_graphs()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # validate_args=False: predictions come from argmax and labels from MNIST, always in range, and the
        # check (torch.unique) would make the CPU wait for the GPU at every step.
        self.accuracy_options = {"num_classes": num_classes, "average": "micro", "validate_args": False}
        self.val_acc = MulticlassAccuracy(**self.accuracy_options)
        self.test_acc = MulticlassAccuracy(**self.accuracy_options)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in the checkpoint, so a resumed run keeps its best so far

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def on_fit_start(self) -> None:
        for option in ("cuda_graph", "triton"):
            value = self.hparams.get(option)
            if value and self.device.type != "cuda":
                rank_zero_warn(
                    f"model.{option}={str(value).lower()} applies to CUDA runs only; this run is on the "
                    f"{self.device.type}"
                )
        cuda_graph, trainer = self.hparams.get("cuda_graph"), self.trainer
        if cuda_graph and trainer.world_size > 1:
            raise UserError(
                f"model.cuda_graph={str(cuda_graph).lower()} is for one GPU, and this run has {trainer.world_size} "
                "processes; use model.cuda_graph=false with several devices"
            )
        if self.graphed_step is not None:  # (on the CPU too: the step is written out there, as on a GPU)
            refusal = whole_step_refusal(trainer.accumulate_grad_batches, self.scheduler_factory is not None)
            if refusal:
                raise UserError(refusal)
        # A CUDA graph replays the addresses of the weights (and optimiser state) it was captured with, and after
        # a fit Lightning moves the weights to the CPU (and each fit builds its optimiser anew): each fit captures
        # its own graph.
        self._new_graphs()

    def _new_graphs(self) -> None:
        """Training batches on a GPU replay one CUDA graph (mnist_lstm/cuda_graph.py), not captured yet: of the
        forward and backward (cuda_graph=True), or of the whole step (cuda_graph="step": training_step then updates
        the weights itself). (Plain objects, not submodules: the checkpoint's keys stay those of self.net.)"""
        cuda_graph = self.hparams.cuda_graph
        self.graphed_training = GraphedTraining(self.net) if cuda_graph is True else None
        self.graphed_step = GraphedStep(self._whole_step, self.parameters()) if cuda_graph == "step" else None

    def _step(
        self, batch: tuple[Tensor, Tensor], net: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The batch's loss, logits and labels."""
        images, labels = batch
        logits = (net or self.net)(images)
        return F.cross_entropy(logits, labels), logits, labels

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.graphed_step is not None:  # the whole step: the weights are updated when it returns
            (loss, logits), labels = self.graphed_step(*batch), batch[1]
        else:
            loss, logits, labels = self._step(batch, self.graphed_training)
        if self._logger_writes_this_step():
            # Logged as numbers on the CPU, copied there once, on a step the logger writes (it waits for the
            # device then anyway): Lightning reads the progress bar's values at every step (.item()), and for
            # tensors on a GPU each read makes the CPU wait for the GPU, twice a step.
            # The batch's accuracy alone: functional (torchmetrics' module form would keep a running state no one
            # reads, at ~4x the CPU time per call); its argmax only here too, one launch fewer on the other steps.
            acc = multiclass_accuracy(logits.argmax(dim=1), labels, **self.accuracy_options)
            loss_now, acc_now = torch.stack([loss.detach().float(), acc.float()]).cpu()
            self.log("train/loss", loss_now, prog_bar=True)
            self.log("train/acc", acc_now, prog_bar=True)
        return loss

    def _whole_step(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """One training step written out, as one function a CUDA graph can capture (model.cuda_graph=step): what
        Lightning's loop does around training_step (gradients to None, backward, `trainer.gradient_clip_val`'s
        clipping, the optimiser's update), in the same order, so that it trains exactly as the loop does.
        Returns the loss and the logits."""
        trainer = self.trainer
        optimizer = trainer.optimizers[0]
        optimizer.zero_grad(set_to_none=True)
        loss, logits, _ = self._step((images, labels))
        loss.backward()
        # (Clipping by norm or value is device work only: no wait for the GPU, so the graph holds it too.)
        self.configure_gradient_clipping(optimizer, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)
        optimizer.step()
        return loss.detach(), logits.detach()

    # With model.cuda_graph=step, training_step has already run the backward pass and the optimiser's update:
    # these three hooks, which Lightning's loop calls around it, then leave that work done. Lightning still
    # counts the step, logs, and calls the other hooks (on_before_backward and on_after_backward after the
    # fact), except on_before_optimizer_step, which it calls from inside optimizer.step.
    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        if self.graphed_step is None:
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        if self.graphed_step is None:
            super().backward(loss, *args, **kwargs)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: torch.optim.Optimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        if self.graphed_step is None:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        elif optimizer_closure is not None:
            optimizer_closure()  # training_step and the hooks around it; the optimiser steps inside training_step

    def _logger_writes_this_step(self) -> bool:
        """Whether Lightning writes step metrics after this step: every `trainer.log_every_n_steps` steps
        (with 0 it writes none, and the progress bar still shows them: every step).

        The batch's accuracy and the two `self.log` calls cost ~1 ms of CPU per step (Lightning moves its
        record of a logged value to the device at every call): a fifth of a small model's step, and CPU
        time a CUDA-graphed GPU step cannot hide. Done only when written, they draw the same curves.
        """
        every = self.trainer.log_every_n_steps
        return every <= 0 or (self.trainer.global_step + 1) % every == 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_acc.update(logits.argmax(dim=1), labels)
        self.log("val/loss", loss, batch_size=len(labels), sync_dist=True)  # averaged over DDP processes
        self.log("val/acc", self.val_acc, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check must not count as the best validation accuracy
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits, labels = self._step(batch)
        preds = logits.argmax(dim=1)
        self.test_acc.update(preds, labels)
        self.log("test/loss", loss, batch_size=len(labels), sync_dist=True)
        self.log("test/acc", self.test_acc)
        return preds  # for callbacks (TestFigures' confusion matrix), so they need not predict again

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("RowLSTMModule was built without an optimizer: it can predict but not train")
        if self._graph_holds_the_optimizer():
            optimizer = self._capturable_optimizer()
        else:
            optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # Schedules here are in optimiser steps (the budget is max_steps), not epochs.
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _graph_holds_the_optimizer(self) -> bool:
        """model.cuda_graph=step on a GPU: the optimiser's update is captured with the rest of the step."""
        trainer = self._trainer  # (None when load_from_checkpoint calls on_load_checkpoint)
        return self.graphed_step is not None and trainer is not None and trainer.strategy.root_device.type == "cuda"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming with model.cuda_graph=step a run saved without it: torch's Optimizer.load_state_dict takes each
        # group's options from the checkpoint, whose capturable=False the graph's capture would refuse. Made
        # capturable before Lightning loads them, the step counts load onto the GPU too.
        if self._graph_holds_the_optimizer():
            for state in checkpoint.get("optimizer_states", []):
                for group in state["param_groups"]:
                    if "capturable" in group:
                        group["capturable"] = True

    def _capturable_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser for model.cuda_graph=step on a GPU: capturable (its step count on the GPU), as a graph
        that holds its update needs."""
        try:
            return self.optimizer_factory(self.parameters(), capturable=True)
        except TypeError as err:
            raise UserError(
                "model.cuda_graph=step captures the optimiser's update, which needs an optimiser that takes "
                f"capturable=True (Adam, AdamW and others do; this one: {err}); use model.cuda_graph=true"
            ) from err
