"""What the suite's timings share (benchmarks/run.py, and alone.py's fresh processes): one training step as
train.py takes it, and the implementations of the levers the suite times that mnist_lstm does not register."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

import mnist_lstm.fast  # noqa: F401  (registers "fused", train.py's default, and "triton")
from mnist_lstm.fast.cuda_graph import GraphedTraining
from mnist_lstm.fast.fused import fused_loop, uniform_dropout
from mnist_lstm.model.lstm import IMPLEMENTATIONS, Implementation, lstm_loop

# The levers timed against the default implementation ("fused": the loop's backward written by hand, the CPU's
# uniform dropout), each changing one of its two parts. Registered only while `levers()` holds.
LEVERS = {
    # "ours, autograd loop": the plain loop, differentiated op by op by autograd; the default's dropout
    "autograd loop": Implementation(lstm_loop, uniform_dropout),
    # "ours, F.dropout": the default's loop; F.dropout's mask (bernoulli, drawn element by element on the CPU)
    "fused, F.dropout": Implementation(fused_loop, F.dropout),
}


@contextlib.contextmanager
def levers() -> Iterator[None]:
    """mnist_lstm's registry of implementations with LEVERS in it, while inside; afterwards as it was (the
    package's own tests may share this process)."""
    added = [name for name in LEVERS if name not in IMPLEMENTATIONS]
    IMPLEMENTATIONS.update({name: LEVERS[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            del IMPLEMENTATIONS[name]


def train_step(
    model: torch.nn.Module, batch: int, device: torch.device, bf16: bool, cuda_graph: bool = False
) -> Callable[[], None]:
    """One optimiser step (forward, backward, Adam) on a fixed random batch, as train.py takes it."""
    images = torch.rand(batch, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # (as conf/model/lstm.yaml)
    model.train()
    net = GraphedTraining(model) if cuda_graph else model

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step
