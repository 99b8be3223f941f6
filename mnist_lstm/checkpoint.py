"""Reading a checkpoint safely, and rebuilding the model it holds from its own hyper_parameters.

A `.ckpt` is a pickle, and unpickling can run any code the file asks for. Ours hold only tensors and plain values,
which torch's weights-only unpickler accepts: a file that asks for anything else is refused before anything runs.
"""

from __future__ import annotations

import inspect
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mnist_lstm import fast
from mnist_lstm.errors import UserError
from mnist_lstm.model.module import RowLSTMModule

HOW_TO = "pass ckpt_path=<run dir>/checkpoints/last.ckpt (or a step*.ckpt) written by scripts/train.py"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save has written zip archives since PyTorch 1.6


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The training run a checkpoint (or its export) belongs to: `<run>/checkpoints/x.ckpt` and
    `<run>/export/x.onnx` -> `<run>`; else its folder."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name in ("checkpoints", "export") else path.parent


def load_checkpoint(path: str | Path | None) -> dict[str, Any]:
    """The checkpoint's contents on the CPU, loaded weights-only; a one-line UserError for anything else: no path,
    a missing, empty, truncated or non-checkpoint file, one that tries to run code, or another model's."""
    if path is None or not str(path):
        raise UserError(f"no checkpoint given: {HOW_TO}")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}; {HOW_TO}")
    if path.is_dir():
        found = sorted(path.glob("**/*.ckpt"))
        hint = f"e.g. ckpt_path={found[-1]}" if found else HOW_TO
        raise UserError(f"ckpt_path={path} is a directory, not a checkpoint file; {hint}")
    try:
        with path.open("rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError as err:
        raise UserError(f"cannot read checkpoint {path}: {err.strerror}; check the path and its permissions") from err
    if not head:
        raise UserError(f"checkpoint {path} is empty (0 bytes): it was not saved completely; use another checkpoint")
    if head != ZIP_MAGIC:
        raise UserError(f"{path} is not a PyTorch checkpoint (those are zip archives); {HOW_TO}")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"checkpoint {path} is truncated or corrupted (an incomplete zip archive): it was not saved or copied "
            "completely; copy it again or use another checkpoint of the run"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        if unsafe:
            raise UserError(
                f"refused to load {path}: it asks to run code when loaded ({', '.join(unsafe)}), which a checkpoint "
                "of this project never does; do not use this file unless you know exactly where it came from"
            ) from err
        raise UserError(f"{path} holds data a checkpoint of this project never holds; {HOW_TO}") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(
            f"checkpoint {path} is corrupted and cannot be read; use another checkpoint of the run"
        ) from err
    if not (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("hyper_parameters"), dict)
        and isinstance(checkpoint.get("state_dict"), dict)
    ):
        raise UserError(f"{path} is a PyTorch file but not a checkpoint of this project's model; {HOW_TO}")
    return checkpoint


def device_named(name: str) -> torch.device:
    """`auto`: CUDA when present, else the CPU; otherwise the torch device of that name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UserError(f"invalid value device={name!r}: device must be auto, cpu, cuda or cuda:<index>") from err


def load_model(path: str | Path | None, device: str = "cpu", loop: str = "fused") -> RowLSTMModule:
    """The RowLSTMModule a checkpoint holds, built from its own hyper_parameters, in eval mode on `device`, computing
    with `loop` (mnist_lstm/fast/). Saved values that are not the model's arguments (the speed switches older
    checkpoints hold: fused, compile, cuda_graph, triton) are left out, so those still load."""
    checkpoint = load_checkpoint(path)
    path = Path(str(path)).expanduser()
    accepted = inspect.signature(RowLSTMModule).parameters
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted}
    try:
        model = RowLSTMModule(**hparams)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise UserError(
            f"{path} does not fit this project's model (its weights do not match its hyper_parameters "
            f"{checkpoint['hyper_parameters']}); {HOW_TO}"
        ) from err
    fast.speed_up(model, loop)
    return model.eval().to(device_named(device))
