"""Every user-facing key of the scripts' configs, declared once: its type, its range and what it does.

These dataclasses are Hydra structured configs: each script's YAML (conf/train.yaml...) starts its defaults list
with its schema (`train_schema`...), so OmegaConf refuses a value of the wrong type and a key that does not exist
while the config is composed, and the values themselves stay in the YAML files. What a type cannot say (a range,
a set of choices) is each field's `knob(...)` metadata, which `mnist_lstm.config.checks` reads: the one-line
refusals, the did-you-mean, TensorBoard's hparams and the resume check all come from here.

Groups without a schema of their own here (trainer, callbacks, logger, and the optimiser and scheduler partials)
hold objects built by `hydra.utils.instantiate`, whose own signatures check them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def limits(
    *,
    at_least: float | None = None,
    above: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    choices: tuple[Any, ...] | None = None,
    example: str | None = None,
) -> dict[str, Any]:
    """What a value must be beyond its type: its range or its choices (numbers must also be finite)."""
    return {"at_least": at_least, "above": above, "below": below, "at_most": at_most, "choices": choices,
            "example": example}  # fmt: skip


def knob(help: str, *, hparam: bool = False, architecture: bool = False, **limit: Any) -> Any:
    """A schema field (its value comes from the YAML files): what it is for, and what it accepts (`limits`).

    `hparam`: logged to TensorBoard's HPARAMS tab. `architecture`: part of what a checkpoint is (a resumed run
    must match it).
    """
    return field(default=MISSING, metadata={"help": help, "hparam": hparam, "architecture": architecture,
                                            **limits(**limit)})  # fmt: skip


def named_objects(help: str) -> Any:
    """A mapping of objects by name, which may be empty."""
    return field(default_factory=dict, metadata={"help": help, "hparam": False, "architecture": False, **limits()})


def group(node: type) -> Any:
    return field(default_factory=node)


@dataclass
class PathsConfig:
    data_dir: str = knob(
        "where MNIST/raw/ is (downloaded there when missing and online); relative to the directory you run from"
    )
    log_dir: str = knob("where runs write their directories (logs/<task_name>/runs/<date>_<time>)")
    output_dir: str = knob("this run's own directory (set by Hydra)")


@dataclass
class DataConfig:
    _target_: str = "mnist_lstm.data.MNISTDataModule"
    data_dir: str = knob("the folder holding MNIST/raw/*.gz (downloaded there when missing and online)")
    batch_size: int = knob("training batch", at_least=1, example="data.batch_size=128")
    eval_batch_size: int = knob("validation and test batch (no sample is ever dropped)", at_least=1)
    val_size: int = knob("validation images taken from the 60,000 official training images", at_least=1, below=60_000)
    split_seed: int = knob("seeds the train/validation split (fixed: the same split for every run)", at_least=0)
    download: bool = knob("download MNIST when it is missing")
    num_workers: int = knob("DataLoader worker processes (the data is already in memory as tensors)", at_least=0)
    pin_memory: bool = knob("DataLoader pin_memory")
    shift: int = knob(
        "augmentation: each training image moved by up to this many pixels each way (0: none)",
        at_least=0,
        at_most=8,
        example="data.shift=2",
    )
    rotate: float = knob(
        "augmentation: each training image rotated by up to this many degrees each way (0: none)",
        at_least=0.0,
        at_most=45.0,
        example="data.rotate=10",
    )
    elastic: float = knob(
        "augmentation: each training image distorted elastically, pixels moved by this many pixels (std; 0: none)",
        at_least=0.0,
        at_most=4.0,
        example="data.elastic=1.0",
    )
    on_device: bool | None = knob(
        "keep all of MNIST on the GPU and gather batches there (null: when the run is on a GPU)"
    )


@dataclass
class ModelConfig:
    _target_: str = "mnist_lstm.model.module.RowLSTMModule"
    layer_num: int = knob("stacked LSTM layers", at_least=1, architecture=True)
    hidden_size: int = knob("units per layer", at_least=1, architecture=True)
    dropout: float = knob("dropout on every layer's output in training", at_least=0.0, below=1.0)
    forget_bias: float = knob(
        "added to the forget gate's pre-activation (TensorFlow's BasicLSTMCell)",
        example="model.forget_bias=1.0",
        hparam=True,
        architecture=True,
    )
    cell: str = knob(
        "custom: our explicitly unrolled LSTM; torch: nn.LSTM (cuDNN / oneDNN), the reference",
        choices=("custom", "torch"),
        hparam=True,
        architecture=True,
    )
    label_smoothing: float = knob(
        "training targets of 1 - s on the label and s / 10 elsewhere (validation and test: the plain loss)",
        at_least=0.0,
        below=1.0,
        example="model.label_smoothing=0.1",
    )
    recurrent_init: str = knob(
        "uniform: nn.LSTM's initialisation; orthogonal: each gate's recurrent weight an orthogonal matrix",
        choices=("uniform", "orthogonal"),
    )
    optimizer: Any = knob("the optimiser, a partial completed with the parameters (torch.optim.Adam by default)")
    scheduler: Any = knob("a learning-rate schedule stepped every step, a partial (e.g. OneCycleLR), or null")


@dataclass
class SpeedConfig:
    """How fast the run computes, never what: each choice computes the same model (mnist_lstm/fast/)."""

    loop: str = knob(
        "plain: the model's loop, differentiated op by op by autograd; fused: the same with its backward written "
        "out (and a no-gradient loop for evaluation); triton: fused, each timestep's elementwise work as one "
        "Triton kernel on a GPU",
        choices=("plain", "fused", "triton"),
    )
    compile: bool = knob("torch.compile the LSTM (the plain loop, which the compiler fuses)")
    cuda_graph: str = knob(
        "one GPU: none; forward_backward: replay the training forward and backward from a CUDA graph; "
        "whole_step: the whole step, optimiser included (no gradient accumulation or scheduler)",
        choices=("none", "forward_backward", "whole_step"),
    )


@dataclass
class TrainConfig:
    layer_num: int = knob("stacked LSTM layers", at_least=1, example="layer_num=2", hparam=True)
    hidden_size: int = knob("units per layer", at_least=1, example="hidden_size=256", hparam=True)
    dropout: float = knob(
        "dropout on every layer's output in training (the tutorial's 1 - keep_prob)",
        at_least=0.0,
        below=1.0,
        example="dropout=0.5",
        hparam=True,
    )
    lr: float = knob("the optimiser's learning rate (a schedule's peak)", above=0.0, example="lr=1e-3", hparam=True)
    batch_size: int = knob("training batch", at_least=1, example="batch_size=128", hparam=True)
    max_steps: int = knob("optimiser steps", at_least=1, example="max_steps=2000", hparam=True)
    val_every: int = knob(
        "validate every this many steps (and at the end of a shorter run)", at_least=1, example="val_every=500"
    )
    seed: int = knob("seeds torch, numpy and Python", at_least=0, below=2**32, example="seed=42", hparam=True)
    test: bool = knob("after training, test the best checkpoint on the official 10,000 test images")
    ckpt_path: str | None = knob("a checkpoint to resume (<run>/checkpoints/last.ckpt continues that run)")
    optimized_metric: str = knob("the metric train.py returns, which sweepers optimise")
    task_name: str = knob("names the folder of the runs: logs/<task_name>/")
    data: DataConfig = group(DataConfig)
    model: ModelConfig = group(ModelConfig)
    speed: SpeedConfig = group(SpeedConfig)
    paths: PathsConfig = group(PathsConfig)
    trainer: Any = knob("lightning.pytorch.Trainer's arguments (conf/trainer/)")
    callbacks: Any = named_objects("Lightning callbacks by name (conf/callbacks/; callbacks=[]: none)")
    logger: Any = named_objects("Lightning loggers by name (conf/logger/; logger=[]: none)")


@dataclass
class EvalConfig:
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py (this or onnx)")
    onnx: str | None = knob("a .onnx written by scripts/export.py (this or ckpt_path)")
    out: str | None = knob("the folder for the JSON and the PNG; null: <run dir of the checkpoint>/eval")
    device: str = knob("auto (cuda when present, else cpu), cpu, cuda or cuda:<index>")
    data: DataConfig = group(DataConfig)
    paths: PathsConfig = group(PathsConfig)


@dataclass
class PredictConfig:
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py (this or onnx)")
    onnx: str | None = knob("a .onnx written by scripts/export.py (this or ckpt_path)")
    image: str | None = knob("the picture of one digit, PNG or JPEG (required)")
    explain: bool = knob("also write the figure of how the model reads the (converted) image, row by row")
    out: str | None = knob("where explain=true writes its PNG; null: <image folder>/<image name>_reading.png")
    dpi: int = knob("the figure's resolution", at_least=10, at_most=1000, example="dpi=100")
    device: str = knob("auto (cuda when present, else cpu), cpu, cuda or cuda:<index>")


@dataclass
class VisualizeConfig:
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py (required)")
    split: str = knob("test or train: the official 10,000 test or 60,000 training images", choices=("test", "train"))
    index: Any = knob("an index into the split, or a list of them: index=[4,7,11]")
    wrong: int = knob("N > 0: instead of index, the N digits the model gets wrong most confidently", at_least=0)
    out: str | None = knob("the folder for the PNGs; null: <run dir of the checkpoint>/figures")
    dpi: int = knob("the figures' resolution", at_least=10, at_most=1000, example="dpi=100")
    device: str = knob("auto (cuda when present, else cpu), cpu, cuda or cuda:<index>")
    data: DataConfig = group(DataConfig)
    paths: PathsConfig = group(PathsConfig)


@dataclass
class ExportConfig:
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py (required)")
    out: str | None = knob("the folder for the .onnx and .json; null: <run dir of the checkpoint>/export")
    per_row: bool = knob("also answer the logits after every row (batch, 28, 10)")
    overwrite: bool = knob("replace existing files")


@dataclass
class DemoConfig:
    ckpt_path: str | None = knob("a .ckpt written by scripts/train.py; null: the newest run's best under log_dir")
    onnx: str | None = knob("a .onnx written by scripts/export.py with per_row=true (instead of ckpt_path)")
    host: str = knob("the address to serve on: 127.0.0.1 this machine only, 0.0.0.0 every network")
    port: int = knob("the port to serve on (0: any free one)", at_least=0, at_most=65535, example="port=8000")
    data_dir: str = knob("the folder holding MNIST/raw/, for the official test digits (the page works without)")
    download: bool = knob("download MNIST into data_dir when it is missing")
    log_dir: str = knob("where ckpt_path=null looks for the newest run (train.py's paths.log_dir)")
    device: str = knob("auto (cuda when present, else cpu), cpu, cuda or cuda:<index>")


# Lightning's Trainer declares the types of its arguments in its own signature, which the checks read
# (mnist_lstm/config/annotations.py); what a type cannot say, here.
TRAINER_LIMITS: dict[str, dict[str, Any]] = {
    "max_steps": limits(at_least=-1),
    "max_epochs": limits(at_least=-1),
    "min_steps": limits(at_least=0),
    "min_epochs": limits(at_least=0),
    "num_nodes": limits(at_least=1),
    "accumulate_grad_batches": limits(at_least=1),
    "log_every_n_steps": limits(at_least=0),
    "num_sanity_val_steps": limits(at_least=-1),
    "check_val_every_n_epoch": limits(at_least=1),
    "val_check_interval": limits(above=0),
    "gradient_clip_val": limits(at_least=0),
    "gradient_clip_algorithm": limits(choices=("norm", "value")),
    "limit_train_batches": limits(at_least=0),
    "limit_val_batches": limits(at_least=0),
    "limit_test_batches": limits(at_least=0),
    "limit_predict_batches": limits(at_least=0),
    "overfit_batches": limits(at_least=0),
    "fast_dev_run": limits(at_least=0),
    "reload_dataloaders_every_n_epochs": limits(at_least=0),
}


# config name (conf/<name>.yaml) -> its schema; each YAML names `<name>_schema` first in its defaults list.
SCHEMAS: dict[str, type] = {
    "train": TrainConfig,
    "eval": EvalConfig,
    "predict": PredictConfig,
    "visualize": VisualizeConfig,
    "export": ExportConfig,
    "demo": DemoConfig,
}


def fields_of(schema: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every knob of `schema`, nested groups flattened (their keys under theirs)."""
    found = []
    for f in dataclasses.fields(schema):
        if f.name.startswith("_"):
            continue
        node = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if isinstance(node, type) and dataclasses.is_dataclass(node):
            found += fields_of(node, f"{prefix}{f.name}.")
        else:
            found.append((f"{prefix}{f.name}", f))
    return found


def register() -> None:
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=f"{name}_schema", node=schema)


register()
