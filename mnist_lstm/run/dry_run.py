"""Everything a training run will build, built once before Hydra writes anything: what only a library can judge
(Lightning refusing a combination of Trainer options, torch an optimiser's arguments) ends in one line with nothing
on disk, and a run too large for the machine is refused before it allocates: the model is built on PyTorch's "meta"
device (shapes without memory), the optimiser on one stand-in parameter, and the memory is estimated from sizes.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import typing
from collections.abc import Callable
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pydantic import ConfigDict, TypeAdapter, ValidationError

from mnist_lstm.errors import UserError
from mnist_lstm.fast.cuda_graph import cuda_graph_refusal
from mnist_lstm.model.lstm import RowLSTMClassifier
from mnist_lstm.quiet import quiet
from mnist_lstm.run.train import build_model, trainer_arguments

GIB = 2**30
ROWS, COLUMNS, CLASSES = 28, 28, 10
TRAINING_IMAGES = 60_000  # the official training set, split into training and validation images
MAX_VALIDATIONS = 1_000  # more, and a run spends its time validating: each reads every validation image
MNIST_BYTES = (60_000 + 10_000) * ROWS * COLUMNS * (4 + 1)  # float32 in memory, and the uint8 it is read from
PROCESS_BYTES = 1 * GIB  # Python, torch and Lightning themselves, before any tensor


# Keys train.py sets from a top-level knob (build_model, trainer_arguments): given too, they would be overridden.
PASSED_ON = {"model.optimizer.lr": "lr", "trainer.max_steps": "max_steps", "trainer.val_check_interval": "val_every"}


def check_rules(cfg: DictConfig) -> None:
    """What involves several keys of train.py's config (each key alone: mnist_lstm/config/schema.py)."""
    for key, knob in PASSED_ON.items():
        if OmegaConf.select(cfg, key) is not None:
            raise UserError(f"{key} is set from {knob}: write {knob}=<value> instead of {key}")
    _check_targets(cfg)
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
    if cfg.speed.loop == "triton":
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


def _check_targets(node: typing.Any, path: str = "") -> None:
    """Every `_target_` names something importable (the data and loggers are built only once the run starts)."""
    items = enumerate(node) if OmegaConf.is_list(node) else node.items() if OmegaConf.is_dict(node) else ()
    for key, value in items:
        if key == "_target_":
            try:
                hydra.utils.get_object(value)
            except Exception as err:  # (hydra raises ImportError, or others from the module imported)
                raise UserError(f"{path}._target_={value!r} names nothing importable; check its spelling") from err
        else:
            _check_targets(value, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip("."))


def dry_run(cfg: DictConfig) -> None:
    """Build train.py's objects from `cfg` (resolved: mnist_lstm.cli.as_one_job) without training or writing
    anything; raise UserError, one line, for what they refuse or a run that cannot fit."""
    with quiet("lightning.pytorch", "lightning.fabric"):  # (its lines about the devices: the run says them)
        callbacks = [_made(f"callbacks.{k}", instantiate, c) for k, c in (cfg.get("callbacks") or {}).items() if c]
        make_trainer = _made(
            "trainer", instantiate, cfg.trainer, _partial_=True, _convert_="all", callbacks=callbacks, logger=False,
            **trainer_arguments(cfg),
        )  # fmt: skip
        _check_types(make_trainer.keywords)
        trainer = _made("trainer", make_trainer, refusals=Exception)  # (Lightning raises many kinds)
    refusal = cuda_graph_refusal(
        cfg.speed.cuda_graph,
        precision=str(trainer.precision),
        compile=cfg.speed.compile,
        processes=trainer.world_size,
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        scheduler=cfg.model.scheduler is not None,
    )
    if refusal:
        raise UserError(refusal)
    device = trainer.strategy.root_device
    _check_memory(cfg, device)
    # The optimiser and the schedule on one stand-in parameter (torch checks their arguments), the optimiser as
    # speed.cuda_graph=whole_step builds it on a GPU (WholeStepGraphModule.configure_optimizers).
    capturable = {"capturable": True} if cfg.speed.cuda_graph == "whole_step" and device.type == "cuda" else {}
    make_optimizer = _made("model.optimizer", instantiate, cfg.model.optimizer, lr=cfg.lr, **capturable)
    optimizer = _made("model.optimizer", make_optimizer, [torch.zeros(1, requires_grad=True)])
    if cfg.model.scheduler is not None:
        _made("model.scheduler", _made("model.scheduler", instantiate, cfg.model.scheduler), optimizer)
    with torch.device("meta"):  # the model's shapes, no memory
        _made("model", build_model, cfg)


REFUSALS = (InstantiationException, ImportError, ValueError, TypeError, KeyError)


def _made(key: str, make: Callable[..., Any], *args: Any, refusals: Any = REFUSALS, **kwargs: Any) -> Any:
    """`make(*args, **kwargs)`; what it refuses (a requirement not met, torch's ValueError...) said in one line that
    names the config keys to change. Other errors are bugs, not options: they stay tracebacks."""
    try:
        return make(*args, **kwargs)
    except UserError:
        raise
    except refusals as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        what = "the Trainer" if key == "trainer" else key
        change = {"trainer": "trainer=... or trainer.* overrides", "model": "model.* overrides"}.get(
            key, f"{key}.* (--cfg job prints them)"
        )
        raise UserError(f"{what} refused its options: {reason}; change {change}") from err


def _check_types(arguments: dict[str, object]) -> None:
    """The Trainer's arguments against the types its signature declares (it checks few of them itself)."""
    hints = typing.get_type_hints(L.Trainer.__init__)
    strict = ConfigDict(strict=True, arbitrary_types_allowed=True)
    for key, value in arguments.items():
        if key not in hints:
            continue
        try:
            TypeAdapter(hints[key], config=strict).validate_python(value)
        except ValidationError as err:  # (a union: what each of its members wants)
            wants = dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in err.errors())
            reason = f"trainer.{key} should be {' or '.join(wants)} (Lightning's Trainer)"
            raise UserError(f"invalid value trainer.{key}={value!r}: {reason}") from None


def _check_memory(cfg: DictConfig, device: torch.device) -> None:
    """Refuse a run larger than the memory free for it: at its peak the weights, their gradients and Adam's two
    moments (float32), one batch's activations through time (the fused loop keeps about 14 numbers per cell and
    timestep, autograd's plain loop about twice that), an evaluation chunk's, MNIST and the process. (Counted from
    the sizes: with layer_num in the millions even a build on the meta device would take long.)"""
    hidden, layers = cfg.hidden_size, cfg.layer_num
    lstm = sum(4 * hidden * ((COLUMNS if k == 0 else hidden) + hidden) + 4 * hidden for k in range(layers))
    activations = layers * ROWS * cfg.batch_size * hidden * (24 if cfg.speed.loop == "plain" else 14) * 4
    chunk = min(cfg.data.eval_batch_size, RowLSTMClassifier.inference_chunk)
    evaluation = layers * chunk * hidden * 8 * 4 + ROWS * chunk * hidden * 4
    needed = 16 * (lstm + CLASSES * hidden + CLASSES) + activations + evaluation + MNIST_BYTES + PROCESS_BYTES
    available, where = _available_bytes(device, str(cfg.trainer.get("strategy", "")))
    if available is not None and needed > available:
        raise UserError(
            f"this run needs about {needed / GIB:.1f} GiB ({where}: parameters, their gradients and Adam's state, "
            f"one batch's activations, MNIST) and {available / GIB:.1f} GiB is available: lower hidden_size, "
            "layer_num or batch_size"
        )


def _available_bytes(device: torch.device, strategy: str) -> tuple[int | None, str]:
    """(the memory free for a run on `device`, where), or (None, ...) where it cannot be known without harm."""
    if device.type == "cuda":
        if "fork" in strategy or "notebook" in strategy:
            return None, "GPU"  # CUDA must not start in this process before the strategy forks it
        free, _ = torch.cuda.mem_get_info(device)
        return free + PROCESS_BYTES, f"GPU {device}"  # (the process's own memory is on the host)
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024, "memory"
    except (OSError, KeyError, ValueError):
        if hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "memory"
        return None, sys.platform
