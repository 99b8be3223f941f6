"""Speed, apart from the model: faster loops, and the training step replayed from CUDA graphs (docs/model.md).

Nothing here changes what the model computes: each loop is tested against lstm_loop and nn.LSTM (outputs and
gradients, in float64). A run picks them with its speed settings (conf/speed/), which checkpoints never hold.
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
    """fused_loop with TritonLSTMLoop for training on a GPU, in the precisions its kernels have."""
    if not (x.is_cuda and x.dtype in (torch.float32, torch.float64)):
        return fused_loop(x, weight, bias, h, c)
    from mnist_lstm.fast.triton import TritonLSTMLoop  # here: only PyTorch's CUDA builds bring triton

    return fused_loop(x, weight, bias, h, c, TritonLSTMLoop)


# speed.loop's choices (RowLSTMClassifier.use).
IMPLEMENTATIONS: dict[str, Implementation] = {
    "plain": PLAIN,
    "fused": Implementation(fused_loop, uniform_dropout),
    "triton": Implementation(triton_loop, uniform_dropout),
}


def module_class(cuda_graph: str) -> type[RowLSTMModule]:
    """RowLSTMModule, or its subclass that replays training from a CUDA graph (same arguments and checkpoints)."""
    if cuda_graph == "none":
        return RowLSTMModule
    from mnist_lstm.fast.cuda_graph import ForwardBackwardGraphModule, WholeStepGraphModule

    return {"forward_backward": ForwardBackwardGraphModule, "whole_step": WholeStepGraphModule}[cuda_graph]


def speed_up(module: RowLSTMModule, loop: str, compile: bool = False, device: torch.device | None = None) -> None:
    """Make `module` compute with IMPLEMENTATIONS[loop], compiled if asked; warn where `device` cannot apply it."""
    skip_the_nvml_check_without_nvml()  # spares every Adam step a failed load of NVML
    module.net.use(IMPLEMENTATIONS[loop])
    if loop == "triton" and device is not None and device.type != "cuda":
        rank_zero_warn(f"speed.loop=triton applies to CUDA runs only; this run is on the {device.type}")
    if compile:
        # In place, the LSTM only: no `_orig_mod.` prefix in the state dict, so the checkpoint loads uncompiled.
        module.net.lstm.compile()
