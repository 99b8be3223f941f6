"""CUDA graphs for the training step: its launches captured once, replayed with one call.

Our LSTM launches a few small kernels per timestep and layer, about a thousand per training step; on a GPU
the CPU can then spend longer launching them than the GPU spends running them. A CUDA graph records the
launches once and replays them with a single call. Two ways:

- `GraphedTraining` (model.cuda_graph=true) graphs the network's forward and backward
  (torch.cuda.make_graphed_callables). The loss, the optimiser step and the metrics stay outside, so
  Lightning, gradient clipping and learning-rate schedules work unchanged.
- `GraphedStep` (model.cuda_graph=step) graphs the whole step: forward, loss, backward and the optimiser's
  update (with gradient clipping, if asked). The CPU then launches one graph per step and runs no autograd or
  optimiser code, at the price of what a replay cannot change: no gradient accumulation, no learning-rate
  schedule.

A graph replays fixed shapes: it serves the batches of the shape it was captured with (every full training
batch); the last, smaller batch of an epoch, validation and test run as usual. Both capture the largest batch
they have seen: a run resumed just before an epoch's last batch sees that smaller one first.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn


class _Forward(nn.Module):
    """Holds the network for make_graphed_callables, which replaces the forward of the module it is given:
    the network itself stays untouched, to run batches of other shapes and in eval mode."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class GraphedTraining:
    """`net` in training mode, replayed from a CUDA graph for batches shaped like the largest one it has seen
    (captured again if a larger batch comes later)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.graphed: nn.Module | None = None
        self.shape: torch.Size | None = None

    def __call__(self, images: Tensor) -> Tensor:
        if not (self.net.training and images.is_cuda and torch.is_grad_enabled()):
            return self.net(images)
        if self.graphed is None or len(images) > self.shape[0]:
            _refuse_autocast("true")
            self.shape = images.shape
            # Captured on a copy: the graph's input lives at a fixed address that each replay copies into.
            self.graphed = torch.cuda.make_graphed_callables(_Forward(self.net), (images.detach().clone(),))
        return self.graphed(images) if images.shape == self.shape else self.net(images)


class GraphedStep:
    """A whole training step, replayed from one CUDA graph for batches shaped like the largest one it has seen
    before the capture.

    `step(images, labels) -> (loss, logits)` is the step written out op by op: it sets the gradients to None,
    then runs the forward, the loss, the backward pass and the optimiser's update. On a GPU the first `warmup`
    batches of that shape run it as it is, on a side stream, as torch.cuda.graph asks (they create Adam's state
    and cuBLAS' workspace, and compile Triton's kernels); the next one captures it. A larger batch before the
    capture starts the warm-up again with its shape (Triton compiles its kernels anew for other sizes). From
    then on a batch is two copies into the graph's inputs and one replay. The gradients are None when it is
    captured, so they are allocated in the graph and each replay writes them afresh. A batch of another shape
    runs `step` op by op (as every step on the CPU does), into gradients of its own: those of `parameters` are
    then copied to the graph's, and `param.grad` points there again, so that it always holds the last step's
    gradients (for the hooks that read them).
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
            with _stepping_outside_the_graph():
                outputs = self.step(images, labels)
            self._gradients_back_into_the_graph()
            return outputs
        if self.graph is None and self.warmup > 0:
            self.warmup -= 1
            with _stepping_outside_the_graph():
                return self._on_side_stream(images, labels)
        if self.graph is None:
            self._capture(images, labels)
        else:
            self.inputs[0].copy_(images)
            self.inputs[1].copy_(labels)
        self.graph.replay()
        loss, logits = self.outputs
        return loss.clone(), logits

    def _on_side_stream(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        # The capture runs on the same stream, so that what the libraries set up per stream on first use (e.g.
        # cuBLAS' workspace) is set up here, not during the capture (PyTorch's make_graphed_callables does so).
        self.stream = self.stream or torch.cuda.Stream()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            outputs = self.step(images, labels)
        torch.cuda.current_stream().wait_stream(self.stream)
        return outputs

    def _capture(self, images: Tensor, labels: Tensor) -> None:
        """Record one step on copies of this batch (the graph's inputs, at fixed addresses); nothing runs yet."""
        _refuse_autocast("step")
        self.inputs = (images.clone(), labels.clone())
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.outputs = self.step(*self.inputs)
        self.grads = [(p, p.grad) for p in self.parameters if p.grad is not None]

    def _gradients_back_into_the_graph(self) -> None:
        """After a step outside the graph, which allocated gradients of its own: they are copied to where the
        replays write theirs, and `param.grad` points there again."""
        for param, grad in self.grads:
            if param.grad is not None:
                grad.copy_(param.grad)
            param.grad = grad


@contextlib.contextmanager
def _stepping_outside_the_graph() -> Iterator[None]:
    """torch.optim warns once that a capturable optimiser steps outside a graph: these steps do, on purpose.
    (Only around those steps: a replay, every step, enters no context.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
        yield


def _refuse_autocast(value: str) -> None:
    if torch.is_autocast_enabled("cuda"):
        raise RuntimeError(
            f"model.cuda_graph={value} does not combine with mixed precision (autocast); "
            "use trainer.precision=32-true or model.cuda_graph=false"
        )
