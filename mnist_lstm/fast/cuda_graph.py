"""CUDA graphs for the training step (speed.cuda_graph): its launches captured once, replayed with one call, as
the LSTM's few small kernels per timestep and layer can take the CPU longer to launch than the GPU to run.

Each setting (forward_backward, whole_step) is a subclass of RowLSTMModule that the run builds instead of it
(`mnist_lstm.fast.module_class`), since only the LightningModule's own hooks can replace what Lightning's loop does
around `training_step` (zeroing the gradients, backward, the optimiser step): a callback cannot, and a strategy
would take over device placement and DDP too. They take RowLSTMModule's arguments, so their checkpoints are its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from mnist_lstm.errors import UserError
from mnist_lstm.model.module import Batch, RowLSTMModule


def cuda_graph_refusal(
    setting: str,
    precision: str = "32-true",
    compile: bool = False,
    processes: int = 1,
    accumulate_grad_batches: int = 1,
    scheduler: bool = False,
) -> str | None:
    """Why a run cannot train with speed.cuda_graph=`setting`, or None: the one place that decides, asked by the
    dry run before anything is written and by the graphed modules when a fit starts."""
    if setting == "none":
        return None
    if "mixed" in precision or precision in ("16", "bf16"):  # (Lightning reads "16" and "bf16" as mixed)
        return (
            f"speed.cuda_graph={setting} does not combine with trainer.precision={precision} (autocast); "
            "use trainer.precision=32-true or speed.cuda_graph=none"
        )
    if compile:
        return (
            f"speed.cuda_graph={setting} and speed.compile=true are not supported together (untested; "
            "torch.compile's own CUDA graphs are its mode='reduce-overhead'); choose one"
        )
    if processes > 1:
        return (
            f"speed.cuda_graph={setting} is for one GPU, and this run has {processes} processes; "
            "use speed.cuda_graph=none with several devices"
        )
    if setting == "whole_step" and (accumulate_grad_batches or 1) != 1:
        return (
            "speed.cuda_graph=whole_step updates the weights at every batch, so it cannot accumulate gradients; "
            "use trainer.accumulate_grad_batches=1 or speed.cuda_graph=forward_backward"
        )
    if setting == "whole_step" and scheduler:
        return (
            "speed.cuda_graph=whole_step replays the learning rate it captured, which a scheduler could not change; "
            "use model.scheduler=null or speed.cuda_graph=forward_backward"
        )
    return None


class GraphedTraining:
    """`net` in training mode, replayed from a CUDA graph for batches shaped like the largest one it has seen
    (captured again if a larger batch comes later: a run resumed just before an epoch's last, smaller batch sees
    that one first). Other shapes, and eval mode, run the network itself."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.graphed: nn.Module | None = None
        self.shape: torch.Size | None = None

    def __call__(self, images: Tensor) -> Tensor:
        if not (self.net.training and images.is_cuda and torch.is_grad_enabled()):
            return self.net(images)
        if self.graphed is None or len(images) > self.shape[0]:
            if torch.is_autocast_enabled("cuda"):
                raise UserError(cuda_graph_refusal("forward_backward", precision="*-mixed"))
            self.shape = images.shape
            # make_graphed_callables replaces the forward of the module it is given: here a wrapper, so that the
            # network itself stays untouched, for other shapes and eval mode. Captured on a copy: the graph's input
            # lives at a fixed address that each replay copies into.
            self.graphed = torch.cuda.make_graphed_callables(nn.Sequential(self.net), (images.detach().clone(),))
        return self.graphed(images) if images.shape == self.shape else self.net(images)


class GraphedStep:
    """A whole training step replayed from one CUDA graph, for batches shaped like the largest seen before the capture.
    `step(images, labels) -> (loss, logits)` sets the gradients to None, then runs the forward, the loss, the
    backward and the optimiser's update. On a GPU the first `warmup` batches of that shape run it on a side stream,
    as torch.cuda.graph asks (creating Adam's state and cuBLAS' workspace, compiling Triton's kernels); the next one
    captures it; a larger batch before then restarts the warm-up (Triton compiles anew for other sizes). The
    gradients are None at the capture, so the graph allocates them and each replay writes them afresh. A batch of
    another shape runs `step` op by op (as every step on the CPU does) into gradients of its own, copied then into
    the graph's, where `param.grad` points again: the hooks read the last step's.
    """

    def __init__(
        self, step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], parameters: Iterable[Tensor], warmup: int = 3
    ) -> None:
        self.step = step
        self.parameters = list(parameters)
        self.warmup_steps = warmup
        self.warmup = warmup  # warm-up steps still to run before the capture
        self.shape: torch.Size | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream: torch.cuda.Stream | None = None  # the side stream of the warm-up and the capture
        self.inputs: tuple[Tensor, Tensor] | None = None  # where each replay reads its batch
        self.outputs: tuple[Tensor, Tensor] | None = None  # where each replay writes its loss and logits
        self.grads: list[tuple[Tensor, Tensor]] = []  # (parameter, where each replay writes its gradient)

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Train on the batch; its loss (a tensor of its own) and its logits (on a replay, the graph's own
        tensor: read it before the next call)."""
        if not images.is_cuda:
            return self.step(images, labels)
        if self.graph is None and (self.shape is None or len(images) > self.shape[0]):
            self.shape, self.warmup = images.shape, self.warmup_steps
        if images.shape != self.shape:
            outputs = self._step_outside_the_graph(images, labels)
            for param, grad in self.grads:
                if param.grad is not None:
                    grad.copy_(param.grad)
                param.grad = grad
            return outputs
        if self.graph is None and self.warmup > 0:
            self.warmup -= 1
            # On the stream the capture runs on, so that what the libraries set up per stream on first use (e.g.
            # cuBLAS' workspace) is set up here, not during the capture (PyTorch's make_graphed_callables does so).
            self.stream = self.stream or torch.cuda.Stream()
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                outputs = self._step_outside_the_graph(images, labels)
            torch.cuda.current_stream().wait_stream(self.stream)
            return outputs
        if self.graph is None:  # one step recorded on copies of this batch (inputs at fixed addresses): none runs
            if torch.is_autocast_enabled("cuda"):
                raise UserError(cuda_graph_refusal("whole_step", precision="*-mixed"))
            self.inputs = (images.clone(), labels.clone())
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self.outputs = self.step(*self.inputs)
            self.grads = [(p, p.grad) for p in self.parameters if p.grad is not None]
        else:
            self.inputs[0].copy_(images)
            self.inputs[1].copy_(labels)
        self.graph.replay()
        loss, logits = self.outputs
        return loss.clone(), logits

    def _step_outside_the_graph(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """`step`, without torch.optim's warning that a capturable optimiser steps outside a graph: this one does,
        on purpose (a replay enters no context)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
            return self.step(images, labels)


class _GraphedModule(RowLSTMModule):
    """What both graphed modules share: one GPU, graphs captured anew for each fit, a warning off a GPU."""

    setting = ""  # speed.cuda_graph's value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._new_graphs()

    def _new_graphs(self) -> None:
        """Graphs not captured yet (plain objects, not submodules: the checkpoint's keys stay those of self.net)."""

    def on_fit_start(self) -> None:
        if self.device.type != "cuda":
            rank_zero_warn(
                f"speed.cuda_graph={self.setting} applies to CUDA runs only; this run is on the {self.device.type}"
            )
        trainer = self.trainer
        refusal = cuda_graph_refusal(
            self.setting,
            precision=str(trainer.precision),
            processes=trainer.world_size,
            accumulate_grad_batches=trainer.accumulate_grad_batches,
            scheduler=self.scheduler_factory is not None,
        )
        if refusal:
            raise UserError(refusal)
        # A graph replays the addresses of the weights (and optimiser state) it was captured with, and after a fit
        # Lightning moves the weights to the CPU (and each fit builds its optimiser anew): each fit captures its own.
        self._new_graphs()


class ForwardBackwardGraphModule(_GraphedModule):
    """RowLSTMModule whose training forward and backward on a GPU replay one CUDA graph (GraphedTraining): the
    loss, the optimiser step and the metrics stay outside, so Lightning, clipping and schedules work unchanged."""

    setting = "forward_backward"

    def _new_graphs(self) -> None:
        self.graphed = GraphedTraining(self.net)

    def forward(self, images: Tensor) -> Tensor:
        return self.graphed(images)  # (the network itself outside training, off a GPU, and for other shapes)


class WholeStepGraphModule(_GraphedModule):
    """RowLSTMModule whose whole training step on a GPU replays one CUDA graph (GraphedStep): `training_step`
    updates the weights itself, and the hooks Lightning's loop calls around it leave that work done.

    Lightning still counts the step, logs, and calls the other hooks (on_before_backward and on_after_backward
    after the fact), except on_before_optimizer_step, which it calls from inside optimizer.step. On the CPU the
    same step runs op by op.
    """

    setting = "whole_step"

    def _new_graphs(self) -> None:
        self.graphed_step = GraphedStep(self.whole_step, self.parameters())

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, labels = batch
        loss, logits = self.graphed_step(images, labels)  # the weights are updated when it returns
        self.log_training_metrics(loss, logits, labels)
        return loss

    def whole_step(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """One training step as one function a CUDA graph can capture: what Lightning's loop does around
        training_step (gradients to None, backward, clipping, the optimiser's update), in the same order, so it
        trains exactly as the loop does. Returns the loss and the logits."""
        trainer = self.trainer
        optimizer = trainer.optimizers[0]
        optimizer.zero_grad(set_to_none=True)
        loss, logits, _ = self.model_step((images, labels), self.hparams.label_smoothing)
        loss.backward()
        # (Clipping by norm or value is device work only: no wait for the GPU, so the graph holds it too.)
        self.configure_gradient_clipping(optimizer, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)
        optimizer.step()
        return loss.detach(), logits.detach()

    # training_step has already run the backward pass and the optimiser's update: these leave that work done.
    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        pass

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        pass

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer, optimizer_closure: Callable | None = None
    ) -> None:
        if optimizer_closure is not None:
            optimizer_closure()  # training_step and the hooks around it; the optimiser steps inside training_step

    def configure_optimizers(self) -> Any:
        if not self._graph_holds_the_optimizer():
            return super().configure_optimizers()
        # Capturable: its step count on the GPU, as a graph that holds its update needs.
        try:
            return self.optimizer_factory(self.parameters(), capturable=True)
        except TypeError as err:
            raise UserError(
                "speed.cuda_graph=whole_step captures the optimiser's update, which needs an optimiser that takes "
                f"capturable=True (Adam, AdamW and others do; this one: {err}); use speed.cuda_graph=forward_backward"
            ) from err

    def _graph_holds_the_optimizer(self) -> bool:
        """On a GPU the optimiser's update is captured with the rest of the step."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to one: load_from_checkpoint calling on_load_checkpoint
            return False
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming on a GPU a run saved without the whole-step graph: torch's Optimizer.load_state_dict takes each
        # group's options from the checkpoint, whose capturable=False the capture would refuse. Made capturable
        # before Lightning loads them, the step counts load onto the GPU too.
        if self._graph_holds_the_optimizer():
            for state in checkpoint.get("optimizer_states", []):
                for group in state["param_groups"]:
                    if "capturable" in group:
                        group["capturable"] = True
