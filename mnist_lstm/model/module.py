"""The LightningModule: the row-by-row LSTM classifier, its loss, metrics, optimiser and scheduler."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_accuracy

from mnist_lstm.model.lstm import RowLSTMClassifier, StackedLSTM

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
Batch = tuple[Tensor, Tensor]  # images (batch, 28, 28), labels (batch,)


class RowLSTMModule(L.LightningModule):
    """Trains RowLSTMClassifier with cross-entropy and logs slash-named metrics (train/loss, val/acc_best...). The
    architecture arguments are saved in every checkpoint, so a checkpoint rebuilds its own model; the optimiser and
    scheduler are partials completed in configure_optimizers. How fast it computes is a run setting (conf/speed/)."""

    def __init__(
        self,
        hidden_size: int,
        layer_num: int,
        dropout: float = 0.5,
        forget_bias: float = 1.0,
        cell: str = "custom",
        input_size: int = 28,
        num_classes: int = 10,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        recurrent_init: str = "uniform",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.net = RowLSTMClassifier(input_size, hidden_size, layer_num, num_classes, dropout, forget_bias, cell)
        if recurrent_init == "orthogonal":
            orthogonal_recurrent_weights_(self.net)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # validate_args=False: argmax and MNIST's labels are in range, and the check makes the CPU wait for the GPU.
        self.accuracy_options = {"num_classes": num_classes, "average": "micro", "validate_args": False}
        self.val_acc = MulticlassAccuracy(**self.accuracy_options)
        self.test_acc = MulticlassAccuracy(**self.accuracy_options)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in the checkpoint, so a resumed run keeps its best so far

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def model_step(self, batch: Batch, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        """The batch's loss, logits and labels."""
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing), logits, labels

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        # Label smoothing in training only: validation and test report the plain cross-entropy.
        loss, logits, labels = self.model_step(batch, self.hparams.label_smoothing)
        self.log_training_metrics(loss, logits, labels)
        return loss

    def log_training_metrics(self, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        """train/loss and train/acc, only on the steps the logger writes (`log_every_n_steps`; 0: every step):
        `self.log` costs CPU time, and reading a value makes the CPU wait for the GPU. Copied to the CPU together,
        once, so the progress bar's `.item()` does not wait again."""
        every = self.trainer.log_every_n_steps
        if every > 0 and (self.trainer.global_step + 1) % every != 0:
            return
        acc = multiclass_accuracy(logits.argmax(dim=1), labels, **self.accuracy_options)
        loss_now, acc_now = torch.stack([loss.detach().float(), acc.float()]).cpu()
        self.log("train/loss", loss_now, prog_bar=True)
        self.log("train/acc", acc_now, prog_bar=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, logits, labels = self.model_step(batch)
        self.val_acc.update(logits.argmax(dim=1), labels)
        self.log("val/loss", loss, batch_size=len(labels), sync_dist=True)  # averaged over DDP processes
        self.log("val/acc", self.val_acc, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check must not count as the best validation accuracy
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, logits, labels = self.model_step(batch)
        predictions = logits.argmax(dim=1)
        self.test_acc.update(predictions, labels)
        self.log("test/loss", loss, batch_size=len(labels), sync_dist=True)
        self.log("test/acc", self.test_acc)
        return predictions  # for TestFigures' confusion matrix

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("RowLSTMModule was built without an optimizer: it can predict but not train")
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # In optimiser steps (the budget is max_steps), not epochs.
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def orthogonal_recurrent_weights_(net: RowLSTMClassifier) -> None:
    """Each gate's recurrent weight (hidden x hidden) orthogonal, so repeated products with it neither grow nor
    shrink the state (Saxe et al., 2014)."""
    if isinstance(net.lstm, StackedLSTM):
        recurrent = [layer.gates.weight.data[:, layer.input_size :] for layer in net.lstm.layers]  # weight_hh
    else:  # nn.LSTM's own
        recurrent = [getattr(net.lstm.lstm, f"weight_hh_l{k}").data for k in range(net.lstm.lstm.num_layers)]
    for weight in recurrent:
        for gate in weight.chunk(4, dim=0):
            torch.nn.init.orthogonal_(gate)
