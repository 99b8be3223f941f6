"""CUDA graphs for the training step: the forward and backward of the network captured once, replayed.

Our LSTM launches a few small kernels per timestep and layer, about a thousand per training step; on a GPU
the CPU can then spend longer launching them than the GPU spends running them. A CUDA graph records the
launches of one forward and one backward once and replays them with a single call. The optimiser step, the
loss and the metrics stay outside the graph (torch.cuda.make_graphed_callables), so Lightning, gradient
clipping and learning-rate schedules work unchanged.

A graph replays fixed shapes: it serves the batches of the shape it was captured with (every full training
batch); the last, smaller batch of an epoch, validation and test run the network as usual.
"""

from __future__ import annotations

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
    """`net` in training mode, replayed from a CUDA graph for batches shaped like the first one it sees."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.graphed: nn.Module | None = None
        self.shape: torch.Size | None = None

    def __call__(self, images: Tensor) -> Tensor:
        if not (self.net.training and images.is_cuda and torch.is_grad_enabled()):
            return self.net(images)
        if self.graphed is None:
            if torch.is_autocast_enabled("cuda"):
                raise RuntimeError(
                    "model.cuda_graph=true does not combine with mixed precision (autocast); "
                    "use trainer.precision=32-true or model.cuda_graph=false"
                )
            self.shape = images.shape
            # Captured on a copy: the graph's input lives at a fixed address that each replay copies into.
            self.graphed = torch.cuda.make_graphed_callables(_Forward(self.net), (images.detach().clone(),))
        return self.graphed(images) if images.shape == self.shape else self.net(images)
