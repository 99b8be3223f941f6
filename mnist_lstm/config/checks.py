"""The checks derived from the schema (mnist_lstm/config/schema.py), run on a composed config before any work.

OmegaConf has already refused unknown keys and values of the wrong type while composing; here each knob's range
or choices, and the rules that involve several keys. Every refusal is a UserError of one line that names the key,
what it accepts, and how to fix it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_lstm.config import schema as schema_module
from mnist_lstm.config.schema import fields_of
from mnist_lstm.errors import UserError

_NUMBERS = {int: "an integer", float: "a number"}


def _kind(schema: type, name: str) -> tuple[Any, bool]:
    """(the field's type without Optional, whether null is allowed)."""
    kind = typing.get_type_hints(schema, vars(schema_module))[name]
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return kind, False


def knobs(schema: type) -> dict[str, tuple[dataclasses.Field, Any, bool]]:
    """dotted key -> (field, its type, nullable), for every knob of `schema`."""
    found = {}
    for key, f in fields_of(schema):
        owner = _owner(schema, key)
        kind, nullable = _kind(owner, f.name)
        found[key] = (f, kind, nullable)
    return found


def _owner(schema: type, key: str) -> type:
    for part in key.split(".")[:-1]:
        schema = next(f.default_factory for f in dataclasses.fields(schema) if f.name == part)
    return schema


def allowed(f: dataclasses.Field, kind: Any, nullable: bool) -> str:
    """What a knob accepts, in words: "an integer >= 1", "a number in [0, 1)", "one of custom, torch"."""
    meta = f.metadata
    if meta.get("choices"):
        text = "one of " + ", ".join(str(c) for c in meta["choices"])
    elif kind is bool:
        text = "true or false"
    elif kind in _NUMBERS:
        low = (">=", meta["at_least"]) if meta.get("at_least") is not None else (">", meta.get("above"))
        high = ("<=", meta["at_most"]) if meta.get("at_most") is not None else ("<", meta.get("below"))
        if low[1] is not None and high[1] is not None:
            opening, closing = "[" if low[0] == ">=" else "(", "]" if high[0] == "<=" else ")"
            text = f"{_NUMBERS[kind]} in {opening}{low[1]:g}, {high[1]:g}{closing}"
        elif low[1] is not None:
            text = f"{_NUMBERS[kind]} {low[0]} {low[1]:g}"
        elif high[1] is not None:
            text = f"{_NUMBERS[kind]} {high[0]} {high[1]:g}"
        else:
            text = "a finite number" if kind is float else _NUMBERS[kind]
    elif kind is str:
        text = "a string"
    else:
        text = "a value"
    return f"{text} or null" if nullable else text


def must_be(key: str, f: dataclasses.Field, kind: Any, nullable: bool) -> str:
    example = f.metadata.get("example")
    return f"{key} must be {allowed(f, kind, nullable)}" + (f" (e.g. {example})" if example else "")


def check_value(key: str, value: Any, f: dataclasses.Field, kind: Any, nullable: bool) -> None:
    """Raise UserError unless `value` has the knob's type and lies in its range (or among its choices)."""
    if value is None:
        if not nullable:
            raise UserError(f"invalid value {key}=null: {must_be(key, f, kind, nullable)}")
        return
    if kind in _NUMBERS:
        numeric = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise UserError(f"invalid value {key}={value!r}: {must_be(key, f, kind, nullable)}")
        meta = f.metadata
        inside = (
            math.isfinite(value)
            and (meta.get("at_least") is None or value >= meta["at_least"])
            and (meta.get("above") is None or value > meta["above"])
            and (meta.get("below") is None or value < meta["below"])
            and (meta.get("at_most") is None or value <= meta["at_most"])
        )
        if not inside:
            raise UserError(f"{key}={value!r} is out of range: {must_be(key, f, kind, nullable)}")
    elif kind is bool and not isinstance(value, bool):
        raise UserError(f"invalid value {key}={value!r}: {must_be(key, f, kind, nullable)}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UserError(f"invalid value {key}={value!r}: {must_be(key, f, kind, nullable)}")


def check(cfg: DictConfig, schema: type) -> None:
    """Every knob of `schema` in `cfg` in its range, and the rules across keys (train.py's config)."""
    for key, (f, kind, nullable) in knobs(schema).items():
        if kind in _NUMBERS or kind is bool or f.metadata.get("choices"):
            check_value(key, OmegaConf.select(cfg, key), f, kind, nullable)
    if schema is schema_module.TrainConfig:
        for rule in RULES:
            rule(cfg)


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The knobs worth comparing runs by (`hparam=True`), for TensorBoard's HPARAMS tab: name -> value."""
    return {
        key.rpartition(".")[2]: OmegaConf.select(cfg, key)
        for key, (f, _, _) in knobs(schema_module.TrainConfig).items()
        if f.metadata.get("hparam")
    }


def architecture() -> list[str]:
    """The model's arguments a checkpoint must match to be resumed (`architecture=True`)."""
    return [
        key.removeprefix("model.")
        for key, (f, _, _) in knobs(schema_module.TrainConfig).items()
        if key.startswith("model.") and f.metadata.get("architecture")
    ]


def wiring(cfg: DictConfig) -> dict[str, str]:
    """Nested keys that only pass a top-level knob on (`model.layer_num: ${layer_num}`) -> that knob: a user
    sets the knob, and the nested spelling is never offered."""
    top = {key for key in knobs(schema_module.TrainConfig) if "." not in key}
    wired = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{prefix}{name}.")
        elif isinstance(node, str) and node.startswith("${") and node.endswith("}") and node[2:-1] in top:
            wired[prefix[:-1]] = node[2:-1]

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return {key: knob for key, knob in wired.items() if "." in key and not key.startswith("hydra.")}


# ---------------------------------------------------------------- rules across keys (train.py)


def _speed_rules(cfg: DictConfig) -> None:
    speed = cfg.speed
    if speed.loop == "triton":
        if cfg.model.cell == "torch":
            raise UserError(
                "speed.loop=triton runs our loop's elementwise work as Triton kernels, and model.cell=torch is "
                "nn.LSTM's own loop; use model.cell=custom, or speed.loop=fused"
            )
        if importlib.util.find_spec("triton") is None:
            raise UserError(
                "speed.loop=triton needs the triton package, which PyTorch's CUDA builds for Linux install; "
                "pip install triton, or use speed.loop=fused"
            )
    if speed.cuda_graph == "none":
        return
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32"))
    if "mixed" in precision:
        raise UserError(cuda_graph_precision_refusal(speed.cuda_graph, precision))
    if speed.compile:
        raise UserError(
            f"speed.cuda_graph={speed.cuda_graph} and speed.compile=true are not supported together (untested; "
            "torch.compile's own CUDA graphs are its mode='reduce-overhead'); choose one"
        )
    if speed.cuda_graph == "whole_step":
        refusal = whole_step_refusal(
            OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1), cfg.model.scheduler is not None
        )
        if refusal:
            raise UserError(refusal)


RULES = [_speed_rules]


def cuda_graph_precision_refusal(setting: str, precision: str) -> str:
    return (
        f"speed.cuda_graph={setting} does not combine with trainer.precision={precision} (autocast); "
        "use trainer.precision=32-true or speed.cuda_graph=none"
    )


def whole_step_refusal(accumulate_grad_batches: int | None, scheduler: bool) -> str | None:
    """Why a run cannot train with speed.cuda_graph=whole_step (the optimiser's update inside the graph), or None.
    (An accumulation of None or 1 accumulates nothing.)"""
    if (accumulate_grad_batches or 1) != 1:
        return (
            "speed.cuda_graph=whole_step updates the weights at every batch, so it cannot accumulate gradients; "
            "use trainer.accumulate_grad_batches=1 or speed.cuda_graph=forward_backward"
        )
    if scheduler:
        return (
            "speed.cuda_graph=whole_step replays the learning rate it captured, which a scheduler could not change; "
            "use model.scheduler=null or speed.cuda_graph=forward_backward"
        )
    return None
