"""The checks derived from the declarations, run on a composed config before any work.

OmegaConf has already refused unknown keys and values of the wrong type for the schema's knobs
(mnist_lstm/config/schema.py) while composing. Here: each knob's range or choices; every key of every object the
config builds (`_target_`: the Trainer, the optimiser, callbacks...) against the types its target declares, and the
Trainer's against TRAINER_LIMITS; and the rules that involve several keys. Every refusal is a UserError of one line
that names the key, what it accepts, and how to fix it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from mnist_lstm.config import schema as schema_module
from mnist_lstm.config.annotations import describe, matches
from mnist_lstm.config.schema import TRAINER_LIMITS, fields_of
from mnist_lstm.errors import UserError

_NUMBERS = {int: "an integer", float: "a number"}


class Knob(NamedTuple):
    """A declared key: its knob(...) metadata (help, limits, hparam, architecture), its type, whether null fits."""

    meta: Mapping[str, Any]
    kind: Any
    nullable: bool


def knobs(schema: type) -> dict[str, Knob]:
    """dotted key -> Knob, for every knob of `schema`."""
    found = {}
    for key, f in fields_of(schema):
        owner = schema
        for part in key.split(".")[:-1]:
            owner = next(g.default_factory for g in dataclasses.fields(owner) if g.name == part)
        kind = typing.get_type_hints(owner, vars(schema_module))[f.name]
        args = typing.get_args(kind)
        nullable = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args
        found[key] = Knob(f.metadata, next(a for a in args if a is not type(None)) if nullable else kind, nullable)
    return found


def allowed(knob: Knob) -> str:
    """What a knob accepts, in words: "an integer >= 1", "a number in [0, 1)", "one of custom, torch"."""
    meta, kind = knob.meta, knob.kind
    if meta.get("choices"):
        text = "one of " + ", ".join(str(c) for c in meta["choices"])
    elif kind is bool:
        text = "true or false"
    elif kind in _NUMBERS:
        text = _number_range(_NUMBERS[kind], meta)
    elif kind is str:
        text = "a string"
    else:
        text = "a value"
    return f"{text} or null" if knob.nullable else text


def _number_range(noun: str, meta: Mapping[str, Any]) -> str:
    low = (">=", meta["at_least"]) if meta.get("at_least") is not None else (">", meta.get("above"))
    high = ("<=", meta["at_most"]) if meta.get("at_most") is not None else ("<", meta.get("below"))
    if low[1] is not None and high[1] is not None:
        opening, closing = "[" if low[0] == ">=" else "(", "]" if high[0] == "<=" else ")"
        return f"{noun} in {opening}{low[1]:g}, {high[1]:g}{closing}"
    if low[1] is not None:
        return f"{noun} {low[0]} {low[1]:g}"
    if high[1] is not None:
        return f"{noun} {high[0]} {high[1]:g}"
    return "a finite number" if noun == "a number" else noun


def must_be(key: str, knob: Knob) -> str:
    example = knob.meta.get("example")
    return f"{key} must be {allowed(knob)}" + (f" (e.g. {example})" if example else "")


def _within(value: Any, meta: Mapping[str, Any]) -> bool:
    """Whether a number lies in the range `meta` declares (and is finite)."""
    return (
        math.isfinite(value)
        and (meta.get("at_least") is None or value >= meta["at_least"])
        and (meta.get("above") is None or value > meta["above"])
        and (meta.get("below") is None or value < meta["below"])
        and (meta.get("at_most") is None or value <= meta["at_most"])
    )


def check_value(key: str, value: Any, knob: Knob) -> None:
    """Raise UserError unless `value` has the knob's type and lies in its range (or among its choices)."""
    if value is None:
        if not knob.nullable:
            raise UserError(f"invalid value {key}=null: {must_be(key, knob)}")
        return
    if knob.kind in _NUMBERS:
        numeric = (int,) if knob.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise UserError(f"invalid value {key}={value!r}: {must_be(key, knob)}")
        if not _within(value, knob.meta):
            raise UserError(f"{key}={value!r} is out of range: {must_be(key, knob)}")
    elif knob.kind is bool and not isinstance(value, bool):
        raise UserError(f"invalid value {key}={value!r}: {must_be(key, knob)}")
    choices = knob.meta.get("choices")
    if choices and value not in choices:
        raise UserError(f"invalid value {key}={value!r}: {must_be(key, knob)}")


def check(cfg: DictConfig, schema: type) -> None:
    """Every knob of `schema` in its range, every object's keys of the types its target declares, and (train.py's
    config) the rules across keys. `cfg` must resolve (a run's own directory: a placeholder)."""
    unset = sorted(OmegaConf.missing_keys(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])))
    if unset:
        group = unset[0].split(".")[0]
        raise UserError(
            f"{unset[0]} has no value (the config leaves it ???): set it, e.g. {unset[0]}=<value>"
            + (f", or choose one of conf/{group}/ with {group}=<name>" if "." not in unset[0] else "")
        )
    for key, knob in knobs(schema).items():
        if knob.kind in _NUMBERS or knob.kind is bool or knob.meta.get("choices"):
            check_value(key, OmegaConf.select(cfg, key), knob)
    check_objects({key: _resolved(cfg, key) for key in cfg if key != "hydra"})  # (Hydra's own: Hydra checks)
    if schema is schema_module.TrainConfig:
        for rule in RULES:
            rule(cfg)


# ---------------------------------------------------------------- the objects the config builds


def _resolved(cfg: DictConfig, key: str) -> Any:
    node = cfg[key]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def check_objects(node: Any, path: str = "") -> None:
    """Every mapping with a `_target_` below `node` (not Hydra's own): each of its keys is an argument its target
    takes, of the type the target declares; the Trainer's within TRAINER_LIMITS too."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_objects(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for name, value in node.items():
        if not (path == "" and name == "hydra"):
            check_objects(value, f"{path}.{name}" if path else str(name))
    target = node.get("_target_")
    if not isinstance(target, str):
        return
    try:
        built = get_object(target)
    except Exception as err:
        raise UserError(f"{path}._target_={target!r} names nothing importable ({err}); check its spelling") from err
    parameters, hints = _signature(built)
    if parameters is None:
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in node.items():
        if key.startswith("_") and key.endswith("_"):
            continue  # Hydra's own (_target_, _partial_...)
        full = f"{path}.{key}"
        if key not in parameters:
            if takes_any:
                continue
            raise UserError(f"{full} is not an argument of {target}; remove it (--cfg job prints the config)")
        if key in hints and not matches(value, hints[key]):
            raise UserError(f"invalid value {full}={value!r}: {full} must be {describe(hints[key])} ({target}'s {key})")
        limit = TRAINER_LIMITS.get(key) if target == "lightning.pytorch.Trainer" else None
        if limit and value is not None and not isinstance(value, bool):
            if limit.get("choices") and value not in limit["choices"]:
                raise UserError(f"invalid value {full}={value!r}: {full} must be one of {', '.join(limit['choices'])}")
            if isinstance(value, int | float) and not _within(value, limit):
                noun = "an integer" if isinstance(value, int) else "a number"
                raise UserError(f"{full}={value!r} is out of range: {full} must be {_number_range(noun, limit)}")


def _signature(built: Any) -> tuple[Mapping[str, inspect.Parameter] | None, dict[str, Any]]:
    """(the parameters a class or function takes, their type hints); (None, {}) where they cannot be read."""
    function = built.__init__ if isinstance(built, type) else built
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None, {}
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation naming what its module does not import at run time
        hints = {}
    return parameters, hints


# ---------------------------------------------------------------- what TensorBoard compares, what a checkpoint is


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The knobs worth comparing runs by (`hparam=True`), for TensorBoard's HPARAMS tab: name -> value."""
    return {
        key.rpartition(".")[2]: OmegaConf.select(cfg, key)
        for key, knob in knobs(schema_module.TrainConfig).items()
        if knob.meta.get("hparam")
    }


def architecture() -> list[str]:
    """The model's arguments a checkpoint must match to be resumed (`architecture=True`)."""
    return [
        key.removeprefix("model.")
        for key, knob in knobs(schema_module.TrainConfig).items()
        if key.startswith("model.") and knob.meta.get("architecture")
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

TRAINING_IMAGES = 60_000  # the official training set, split into training and validation images
MAX_VALIDATIONS = 1_000  # more, and a run spends its time validating: each reads every validation image


def _data_rules(cfg: DictConfig) -> None:
    left = TRAINING_IMAGES - cfg.data.val_size
    if cfg.batch_size > left:
        raise UserError(
            f"batch_size={cfg.batch_size} is larger than the {left:,} training images data.val_size="
            f"{cfg.data.val_size} leaves: lower batch_size, or data.val_size"
        )
    validations = cfg.max_steps // cfg.val_every
    if validations > MAX_VALIDATIONS:
        raise UserError(
            f"val_every={cfg.val_every} would validate {validations:,} times in max_steps={cfg.max_steps} (each "
            f"reads all {cfg.data.val_size:,} validation images): raise val_every to at least "
            f"{math.ceil(cfg.max_steps / MAX_VALIDATIONS)}"
        )


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
    if "mixed" in precision or precision in ("16", "bf16"):  # (Lightning reads "16" and "bf16" as mixed)
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


RULES = [_data_rules, _speed_rules]


def cuda_graph_precision_refusal(setting: str, precision: str) -> str:
    return (
        f"speed.cuda_graph={setting} does not combine with trainer.precision={precision} (autocast); "
        "use trainer.precision=32-true or speed.cuda_graph=none"
    )


def cuda_graph_world_size_refusal(setting: str, processes: int) -> str:
    return (
        f"speed.cuda_graph={setting} is for one GPU, and this run has {processes} processes; "
        "use speed.cuda_graph=none with several devices"
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
