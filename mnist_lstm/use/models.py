"""What the scripts predict with: a checkpoint's model, or a model exported to ONNX and run by onnxruntime. Both
answer alike: images (batch, 28, 28) -> logits (batch, 10); `per_row_logits(images)` -> (batch, 28, 10)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mnist_lstm.checkpoint import device_named, load_model
from mnist_lstm.errors import UserError
from mnist_lstm.model.lstm import RowLSTMClassifier
from mnist_lstm.use.images import first_line

INSTALL = 'pip install -e ".[export]"'


class OnnxModel:
    """A model written by scripts/export.py, run by onnxruntime on the CPU. Refuses, in one line, a file that is
    not an ONNX model of this project (it must read (batch, 28, 28) images and answer (batch, 10) logits)."""

    device = torch.device("cpu")

    def __init__(self, path: str | Path) -> None:
        try:
            import onnxruntime
        except ImportError as err:
            raise UserError(f"running an exported model needs onnxruntime, not installed: {INSTALL}") from err
        self.path = path = Path(path).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "not found"
            raise UserError(f"exported model {path} {what}; pass onnx=<a .onnx file written by scripts/export.py>")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own classes (InvalidProtobuf, Fail...) for a bad file
            reason = first_line(err)
            raise UserError(f"{path} is not an ONNX model onnxruntime can load ({reason}); {self._how_to}") from err
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shapes = [list(o.shape) for o in outputs]
        images = [[list(i.shape)[1:], i.type] for i in inputs] == [[[28, 28], "tensor(float)"]]
        if not images or [shape[1:] for shape in shapes] not in ([[10]], [[10], [28, 10]]):
            found = f"input {[list(i.shape) for i in inputs]}, outputs {shapes}"
            raise UserError(f"{path} is an ONNX model, but not one of this project's ({found}); {self._how_to}")
        self.input = inputs[0].name
        self.has_per_row = len(outputs) == 2

    _how_to = "export one with: python scripts/export.py ckpt_path=<checkpoint>"

    def _run(self, images: Tensor) -> list[Any]:
        return self.session.run(None, {self.input: images.detach().to("cpu", torch.float32).contiguous().numpy()})

    def __call__(self, images: Tensor) -> Tensor:
        return torch.from_numpy(self._run(images)[0])

    def per_row_logits(self, images: Tensor) -> Tensor:
        if not self.has_per_row:
            raise UserError(
                f"{self.path} has no per-row logits (exported with per_row=false): export it again with "
                "python scripts/export.py ckpt_path=<checkpoint> (per_row=true is the default)"
            )
        return torch.from_numpy(self._run(images)[1])


Reader = RowLSTMClassifier | OnnxModel


def open_model(ckpt_path: str | None, onnx_path: str | None, device: str = "auto") -> tuple[Reader, dict, Path]:
    """The model a script reads, from a checkpoint (ckpt_path=) or an exported ONNX file (onnx=): exactly one.
    Returns it, its hyperparameters, and the file it came from."""
    if bool(ckpt_path) == bool(onnx_path):
        given = "both" if ckpt_path else "neither"
        raise UserError(
            f"{given} of ckpt_path= and onnx= given: pass one, ckpt_path=<a .ckpt written by scripts/train.py> "
            "or onnx=<a .onnx written by scripts/export.py>"
        )
    if onnx_path:
        onnx = OnnxModel(onnx_path)
        if device not in ("auto", "cpu"):
            device_named(device)  # (refuses a malformed name)
        try:  # the sidecar JSON written beside it by scripts/export.py, if there is one
            hyper_parameters = json.loads(onnx.path.with_suffix(".json").read_text()).get("hyper_parameters", {})
        except (OSError, ValueError):
            hyper_parameters = {}
        return onnx, hyper_parameters, onnx.path
    module = load_model(ckpt_path, device)
    return module.net, dict(module.hparams), Path(ckpt_path).expanduser()


def device_of(model: Reader) -> torch.device:
    """Where `model` reads its images from."""
    return model.device if isinstance(model, OnnxModel) else next(model.parameters()).device
