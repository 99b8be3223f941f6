"""Every key a user sets, declared once: its type, its range and what it does (pydantic models, strict).

Hydra composes the YAML files (conf/train.yaml...) and `validate` checks the result against its script's model: a
value of the wrong type, out of range or not among its choices ends in one line that names the key. The objects the
config builds (the Trainer, the optimiser...) check their own arguments in the dry run (mnist_lstm/run/dry_run.py).
`hparam=True` marks what TensorBoard's HPARAMS tab compares runs by; `architecture=True` what a resumed run must match.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Any, Literal

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mnist_lstm.errors import UserError


def knob(help: str, *, hparam: bool = False, architecture: bool = False, example: str | None = None, **limits: Any):
    """A required field (its value comes from the YAML) with its help, and its range as pydantic's ge/gt/lt/le."""
    extra = {"hparam": hparam, "architecture": architecture, "example": example}
    return Field(description=help, json_schema_extra=extra, **limits)


class Schema(BaseModel):
    # strict: a YAML or command-line value is already typed (1 is an int, 1.0 a float, true a bool), so nothing is
    # coerced; forbid: a key no field declares is a typo.
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Paths(Schema):
    data_dir: str = knob("where MNIST/raw/ is (downloaded there when missing and online); relative to where you run")
    log_dir: str = knob("where runs write their directories (logs/<task_name>/runs/<date>_<time>)")
    output_dir: str = knob("this run's own directory (set by Hydra)")


class Data(Schema):
    target: str = Field(alias="_target_")
    data_dir: str = knob("the folder holding MNIST/raw/*.gz (downloaded there when missing and online)")
    eval_batch_size: int = knob("validation and test batch (no sample is ever dropped)", ge=1)
    val_size: int = knob("validation images taken from the 60,000 official training images", ge=1, lt=60_000)
    split_seed: int = knob("seeds the train/validation split (fixed: the same split for every run)", ge=0)
    download: bool = knob("download MNIST when it is missing")
    num_workers: int = knob("DataLoader worker processes (the data is already in memory as tensors)", ge=0)
    pin_memory: bool = knob("DataLoader pin_memory")
    shift: int = knob("augmentation: each training image moved by up to this many pixels each way", ge=0, le=8)
    rotate: float = knob("augmentation: each training image rotated by up to this many degrees", ge=0, le=45)
    elastic: float = knob("augmentation: elastic distortion, pixels moved by this many pixels (std)", ge=0, le=4)
    on_device: bool | None = knob("keep all of MNIST on the GPU and gather batches there (null: on a GPU run)")


class Model(Schema):
    # (train.py builds this module, or its CUDA-graph subclass as conf/speed/ says: no other)
    target: Literal["mnist_lstm.model.module.RowLSTMModule"] = Field(alias="_target_")
    forget_bias: float = knob(
        "added to the forget gate's pre-activation (TensorFlow's BasicLSTMCell)", hparam=True, architecture=True
    )
    cell: Literal["custom", "torch"] = knob(
        "custom: our explicitly unrolled LSTM; torch: nn.LSTM (cuDNN / oneDNN), the reference",
        hparam=True,
        architecture=True,
    )
    label_smoothing: float = knob("training targets of 1 - s on the label, s / 10 elsewhere", ge=0, lt=1)
    recurrent_init: Literal["uniform", "orthogonal"] = knob(
        "uniform: nn.LSTM's initialisation; orthogonal: each gate's recurrent weight an orthogonal matrix"
    )
    optimizer: dict[str, Any] = knob("the optimiser, a partial completed with the parameters (torch.optim.Adam)")
    scheduler: dict[str, Any] | None = knob("a learning-rate schedule stepped every step, a partial, or null")


class Speed(Schema):
    """How fast the run computes, never what: each choice computes the same model (mnist_lstm/fast/)."""

    loop: Literal["plain", "fused", "triton"] = knob(
        "plain: the model's loop, differentiated by autograd; fused: its backward written out; triton: fused, "
        "each timestep's elementwise work as one Triton kernel on a GPU"
    )
    compile: bool = knob("torch.compile the LSTM (the plain loop, which the compiler fuses)")
    cuda_graph: Literal["none", "forward_backward", "whole_step"] = knob(
        "one GPU: replay the training forward and backward (or the whole step) from a CUDA graph"
    )


class Train(Schema):
    layer_num: int = knob("stacked LSTM layers", ge=1, example="layer_num=3", hparam=True, architecture=True)
    hidden_size: int = knob("units per layer", ge=1, example="hidden_size=128", hparam=True, architecture=True)
    dropout: float = knob("dropout on every layer's output in training", ge=0, lt=1, example="dropout=0.5", hparam=True)
    lr: float = knob("the optimiser's learning rate (a schedule's peak)", gt=0, example="lr=1e-3", hparam=True)
    batch_size: int = knob("training batch", ge=1, example="batch_size=128", hparam=True)
    max_steps: int = knob("optimiser steps", ge=1, example="max_steps=2000", hparam=True)
    val_every: int = knob("validate every this many steps (and at the end)", ge=1, example="val_every=500")
    seed: int = knob("seeds torch, numpy and Python", ge=0, lt=2**32, example="seed=42", hparam=True)
    test: bool = knob("after training, test the best checkpoint on the official 10,000 test images")
    ckpt_path: str | None = knob("a checkpoint to resume (<run>/checkpoints/last.ckpt continues that run)")
    optimized_metric: str = knob("the metric train.py returns, which sweepers optimise")
    task_name: str = knob("names the folder of the runs: logs/<task_name>/")
    data: Data
    model: Model
    speed: Speed
    paths: Paths
    trainer: dict[str, Any] = knob("lightning.pytorch.Trainer's arguments (conf/trainer/)")
    callbacks: dict[str, Any] | None = knob("Lightning callbacks by name (callbacks=[]: none)", default=None)
    logger: dict[str, Any] | None = knob("Lightning loggers by name (logger=[]: none)", default=None)


class Eval(Schema):
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py (this or onnx)")
    onnx: str | None = knob("a .onnx written by scripts/export.py (this or ckpt_path)")
    out: str | None = knob("the folder for the JSON and the PNG; null: <run dir of the checkpoint>/eval")
    device: str = knob("auto (CUDA when present, else the CPU), cpu, cuda or cuda:<index>")
    data: Data
    paths: Paths


class Predict(Schema):
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py (this or onnx)")
    onnx: str | None = knob("a .onnx written by scripts/export.py (this or ckpt_path)")
    image: str | None = knob("the picture of one digit, PNG or JPEG (required)")
    explain: bool = knob("also write the figure of how the model reads the (converted) image, row by row")
    out: str | None = knob("where explain=true writes its PNG; null: <image folder>/<image name>_reading.png")
    dpi: int = knob("the figure's resolution", ge=10, le=1000, example="dpi=100")
    device: str = knob("auto (CUDA when present, else the CPU), cpu, cuda or cuda:<index>")


class Visualize(Schema):
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py (required)")
    split: Literal["test", "train"] = knob("the official 10,000 test or 60,000 training images")
    index: int | list[int] = knob("an index into the split, or a list of them: index=[4,7,11]")
    wrong: int = knob("N > 0: instead of index, the N digits the model gets wrong most confidently", ge=0)
    cell: bool = knob("draw inside the cell instead: gates, cell state and row importance (cell_<split>_<index>.png)")
    layer: int = knob(
        "with cell=true, the layer drawn: 0 the one reading the pixels, -1 the top (checked against the checkpoint)",
        example="layer=-1",
    )
    out: str | None = knob("the folder for the PNGs; null: <run dir of the checkpoint>/figures")
    dpi: int = knob("the figures' resolution", ge=10, le=1000, example="dpi=100")
    device: str = knob("auto (CUDA when present, else the CPU), cpu, cuda or cuda:<index>")
    data: Data
    paths: Paths


class Export(Schema):
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py (required)")
    out: str | None = knob("the folder for the .onnx and .json; null: <run dir of the checkpoint>/export")
    per_row: bool = knob("also answer the logits after every row (batch, 28, 10)")
    overwrite: bool = knob("replace existing files")


class Demo(Schema):
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py; null: the newest run's best under log_dir")
    onnx: str | None = knob("a .onnx written by scripts/export.py with per_row=true (instead of ckpt_path)")
    host: str = knob("the address to serve on: 127.0.0.1 this machine only, 0.0.0.0 every network")
    port: int = knob("the port to serve on (0: any free one)", ge=0, le=65535, example="port=8000")
    data_dir: str = knob("the folder holding MNIST/raw/, for the official test digits (the page works without)")
    download: bool = knob("download MNIST into data_dir when it is missing")
    log_dir: str = knob("where ckpt_path=null looks for the newest run (train.py's paths.log_dir)")
    device: str = knob("auto (CUDA when present, else the CPU), cpu, cuda or cuda:<index>")


# config name (conf/<name>.yaml) -> its schema
SCHEMAS: dict[str, type[Schema]] = {c.__name__.lower(): c for c in (Train, Eval, Predict, Visualize, Export, Demo)}


def validate(job: dict[str, Any], config_name: str, typed: Iterable[str] = ()) -> None:
    """Raise UserError, one line, for a key of `job` (a composed, resolved config) its schema refuses: the first of
    the keys `typed` on the command line if one is refused (not a key that takes its value from it), else the first."""
    try:
        SCHEMAS[config_name].model_validate(job)
    except ValidationError as err:
        errors = err.errors()
        error = next((e for e in errors if ".".join(map(str, e["loc"])).startswith(tuple(typed))), errors[0])
        raise UserError(_message(error, config_name, job)) from None


def _message(error: dict[str, Any], config_name: str, job: dict[str, Any]) -> str:
    loc, fields = ".".join(map(str, error["loc"])), knobs(SCHEMAS[config_name])
    key = next((k for k in fields if loc == k or loc.startswith(f"{k}.")), loc)  # (past a key: a union's member)
    if error["type"] == "extra_forbidden":
        close = near(key, job)
        fix = f"did you mean {' or '.join(close)}?" if close else "remove it"
        return f"unknown key {key!r}: {fix} (--cfg job prints every key)"
    if error["type"] == "missing":
        return f"{key} has no value (the config leaves it ???): set it, e.g. {key}=<value>"
    shown = "null" if error["input"] is None else repr(error["input"])
    why = error["msg"].replace("Input should be", "must be")
    example = fields[key].json_schema_extra["example"] if key in fields else None
    example = f" (e.g. {example})" if example else ""
    if error["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"):
        return f"{key}={shown} is out of range: {key} {why}{example}"
    return f"invalid value {key}={shown}: {key} {why}{example}"


def near(key: str, cfg: dict[str, Any]) -> list[str]:
    """The keys of `cfg` a misspelt `key` may mean: the same name elsewhere (model.layer_num: layer_num), a name
    spelt alike anywhere, top level first (trainer.max_step: max_steps), or else a close spelling of the whole key."""
    keys = [k for k in _dotted(cfg) if k != key and (key.startswith("hydra.") or not k.startswith("hydra"))]
    names = {k: k.rpartition(".")[2] for k in keys}
    name = key.rpartition(".")[2]
    same = [k for k, n in names.items() if n == name]
    alike = difflib.get_close_matches(name, set(names.values()), n=3, cutoff=0.8)
    found = same or sorted((k for k, n in names.items() if n in alike), key=lambda k: k.count("."))
    return found[:3] or difflib.get_close_matches(key, keys, n=3, cutoff=0.65)


def _dotted(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    keys = []
    for name, value in node.items():
        if not str(name).startswith("_"):  # not _target_, _partial_
            keys += [f"{prefix}{name}", *_dotted(value, f"{prefix}{name}.")]
    return keys


def knobs(schema: type[Schema] = Train, prefix: str = "") -> dict[str, Any]:
    """dotted key -> pydantic field, for every declared key of `schema` (nested groups flattened)."""
    found = {}
    for name, field in schema.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Schema):
            found.update(knobs(field.annotation, f"{prefix}{name}."))
        elif field.alias is None:
            found[f"{prefix}{name}"] = field
    return found


def hyperparameters(cfg: Any) -> dict[str, Any]:
    """The knobs worth comparing runs by (`hparam=True`), for TensorBoard's HPARAMS tab: name -> value."""
    keys = [key for key, field in knobs().items() if field.json_schema_extra["hparam"]]
    return {key.rpartition(".")[2]: OmegaConf.select(cfg, key) for key in keys}


def architecture() -> list[str]:
    """The keys a checkpoint must match to be resumed (`architecture=True`), as train.py's config spells them."""
    return [key for key, field in knobs().items() if field.json_schema_extra["architecture"]]


def keys_help(config_name: str) -> str:
    """Every key of a script and what it takes, for its --help (`${keys_help:train}` in its YAML)."""
    words = {"ge": ">=", "gt": ">", "lt": "<", "le": "<="}
    lines = []
    for key, field in knobs(SCHEMAS[config_name]).items():
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else ()
        kind = "|".join(choices) or getattr(field.annotation, "__name__", str(field.annotation).replace("typing.", ""))
        bounds = " ".join(
            f"{sign} {getattr(b, k)}" for b in field.metadata for k, sign in words.items() if hasattr(b, k)
        )
        lines.append(f"  {key:<24} {kind + (' ' + bounds if bounds else ''):<28} {field.description}")
    return "\n".join(lines)
