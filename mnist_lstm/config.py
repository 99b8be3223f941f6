"""Checks of the user-facing knobs, run right after Hydra composes the config and before any work.

Hydra already refuses unknown keys; this small schema refuses values of the wrong type or out of
range, with a message that names the key and what it accepts.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from mnist_lstm.errors import UserError

# `${min:a,b}` in the YAML files (e.g. validate at least once in a short run).
if not OmegaConf.has_resolver("min"):
    OmegaConf.register_new_resolver("min", lambda *values: min(values))


@dataclass(frozen=True)
class Rule:
    kind: type  # int or float (an int is accepted where a float is asked)
    accepts: Callable[[float], bool]
    allowed: str  # what the message says is allowed
    example: str


RULES: dict[str, Rule] = {
    "layer_num": Rule(int, lambda v: v >= 1, "an integer >= 1", "layer_num=2"),
    "hidden_size": Rule(int, lambda v: v >= 1, "an integer >= 1", "hidden_size=256"),
    "dropout": Rule(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)", "dropout=0.5"),
    "lr": Rule(float, lambda v: v > 0.0, "a number > 0", "lr=1e-3"),
    "batch_size": Rule(int, lambda v: v >= 1, "an integer >= 1", "batch_size=128"),
    "max_steps": Rule(int, lambda v: v >= 1, "an integer >= 1", "max_steps=2000"),
    "val_every": Rule(int, lambda v: v >= 1, "an integer >= 1", "val_every=500"),
    "seed": Rule(int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)", "seed=42"),
    "model.forget_bias": Rule(float, math.isfinite, "a finite number", "model.forget_bias=1.0"),
}
SWITCHES = ("model.fused", "model.compile", "model.triton", "test")  # true or false


def check_value(key: str, value: object, rule: Rule) -> None:
    """Raise UserError unless `value` has the rule's type and lies in its range."""
    numeric = (int,) if rule.kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        raise UserError(f"invalid value {key}={value!r}: {key} must be {rule.allowed} (e.g. {rule.example})")
    if not rule.accepts(value):
        raise UserError(f"{key}={value!r} is out of range: {key} must be {rule.allowed} (e.g. {rule.example})")


def validate(cfg: DictConfig) -> None:
    """Check every knob of RULES and SWITCHES present in `cfg`, and the model's cell choice."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None:
            check_value(key, value, rule)
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise UserError(f"invalid value {key}={value!r}: {key} must be true or false")
    on_device = OmegaConf.select(cfg, "data.on_device")
    if on_device is not None and on_device not in (True, False, "auto"):
        raise UserError(
            f"invalid value data.on_device={on_device!r}: data.on_device must be auto (on the GPU when the run is), "
            "true or false"
        )
    _check_cuda_graph(cfg)
    cell = OmegaConf.select(cfg, "model.cell")
    if cell is not None and cell not in ("custom", "torch"):
        raise UserError(f"invalid value model.cell={cell!r}: model.cell must be 'custom' (ours) or 'torch' (nn.LSTM)")
    if OmegaConf.select(cfg, "model.triton") is True:
        _check_triton(cell, OmegaConf.select(cfg, "model.fused"))


def _check_cuda_graph(cfg: DictConfig) -> None:
    """model.cuda_graph: false, true (the forward and backward graphed) or step (the whole step), and what
    each does not combine with."""
    value = OmegaConf.select(cfg, "model.cuda_graph")
    if value is not None and not (isinstance(value, bool) or value == "step"):
        raise UserError(
            f"invalid value model.cuda_graph={value!r}: model.cuda_graph must be false, true (the forward and "
            "backward in a CUDA graph) or step (the whole training step in one)"
        )
    if not value:
        return
    name = f"model.cuda_graph={str(value).lower()}"
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32"))
    if "mixed" in precision:
        raise UserError(
            f"{name} does not combine with trainer.precision={precision} (autocast); "
            "use trainer.precision=32-true or model.cuda_graph=false"
        )
    if OmegaConf.select(cfg, "model.compile") is True:
        raise UserError(
            f"{name} and model.compile=true are not supported together (untested; torch.compile's "
            "own CUDA graphs are its mode='reduce-overhead'); choose one"
        )
    if value == "step":
        refusal = whole_step_refusal(
            OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1),
            OmegaConf.select(cfg, "model.scheduler") is not None,
        )
        if refusal:
            raise UserError(refusal)


def whole_step_refusal(accumulate_grad_batches: int | None, scheduler: bool) -> str | None:
    """Why a run cannot train with model.cuda_graph=step (the optimiser's update inside the graph), or None.
    (An accumulation of None or 1 accumulates nothing.)"""
    if (accumulate_grad_batches or 1) != 1:
        return (
            "model.cuda_graph=step updates the weights at every batch, so it cannot accumulate gradients; "
            "use trainer.accumulate_grad_batches=1 or model.cuda_graph=true"
        )
    if scheduler:
        return (
            "model.cuda_graph=step replays the learning rate it captured, which a scheduler could not change; "
            "use model.scheduler=null or model.cuda_graph=true"
        )
    return None


def _check_triton(cell: str | None, fused: bool | None) -> None:
    """model.triton=true runs the custom cell's fused loop as Triton kernels: it needs both, and triton."""
    if cell == "torch" or fused is False:
        raise UserError(
            "model.triton=true applies to our fused loop, not to "
            + ("nn.LSTM (model.cell=torch)" if cell == "torch" else "the plain loop (model.fused=false)")
            + "; use model.cell=custom model.fused=true, or model.triton=false"
        )
    if importlib.util.find_spec("triton") is None:
        raise UserError(
            "model.triton=true needs the triton package, which PyTorch's CUDA builds for Linux install; "
            "pip install triton, or use model.triton=false"
        )
