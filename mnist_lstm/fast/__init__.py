"""Speed, as a layer of its own: the model's loop made fast, and the training step replayed from CUDA graphs.

Nothing here changes what the model computes: every implementation is tested against the plain loop of
mnist_lstm/model/lstm.py and against nn.LSTM (outputs and gradients, in float64). A run picks one by name from
IMPLEMENTATIONS, and a CUDA graph, with its speed setting (conf/speed/, `speed_up`), which checkpoints never hold.

    fused.py       "fused": FusedLSTMLoop for training (the backward written by hand), the CPU's faster dropout
    inference.py   what "fused" runs without gradients: the loop in the fewest passes over memory
    triton.py      "triton": FusedLSTMLoop with each timestep's elementwise work as one Triton kernel (a GPU)
    cuda_graph.py  the training forward and backward, or the whole step, replayed from one CUDA graph
    nvml.py        Lightning's NVML-based CUDA check turned off where NVML cannot load
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from mnist_lstm.fast.fused import fused_loop, uniform_dropout
from mnist_lstm.fast.nvml import skip_the_nvml_check_without_nvml
from mnist_lstm.model.lstm import PLAIN, Implementation, State
from mnist_lstm.model.module import RowLSTMModule


def triton_loop(x: Tensor, weight: Tensor, bias: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, State]:
    """fused_loop with TritonLSTMLoop for training on a GPU (float32 or float64: its kernels' precisions)."""
    if not (x.is_cuda and x.dtype in (torch.float32, torch.float64)):
        return fused_loop(x, weight, bias, h, c)
    from mnist_lstm.fast.triton import TritonLSTMLoop  # here: triton comes with PyTorch's CUDA builds only

    return fused_loop(x, weight, bias, h, c, TritonLSTMLoop)


# speed.loop's choices: how the model computes (RowLSTMClassifier.use).
IMPLEMENTATIONS: dict[str, Implementation] = {
    "plain": PLAIN,
    "fused": Implementation(fused_loop, uniform_dropout),
    "triton": Implementation(triton_loop, uniform_dropout),
}


def module_class(cuda_graph: str) -> type[RowLSTMModule]:
    """The LightningModule a run with `speed.cuda_graph=<cuda_graph>` trains: RowLSTMModule, or a subclass that
    replays its training from a CUDA graph (same arguments, same checkpoints)."""
    if cuda_graph == "none":
        return RowLSTMModule
    from mnist_lstm.fast.cuda_graph import ForwardBackwardGraphModule, WholeStepGraphModule

    return {"forward_backward": ForwardBackwardGraphModule, "whole_step": WholeStepGraphModule}[cuda_graph]


def speed_up(module: RowLSTMModule, loop: str, compile: bool = False, device: torch.device | None = None) -> None:
    """Make `module` compute with IMPLEMENTATIONS[loop], compiled if asked; say so where a setting cannot apply on
    `device`. Also spares every Adam step a failed load of NVML (nvml.py)."""
    skip_the_nvml_check_without_nvml()
    module.net.use(IMPLEMENTATIONS[loop])
    if loop == "triton" and device is not None and device.type != "cuda":
        rank_zero_warn(f"speed.loop=triton applies to CUDA runs only; this run is on the {device.type}")
    if compile:
        # In place (nn.Module.compile), the LSTM only: the state-dict keys stay free of torch.compile's
        # `_orig_mod.` prefix, so a compiled run's checkpoint loads into an uncompiled model.
        module.net.lstm.compile()
