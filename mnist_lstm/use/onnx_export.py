"""A trained model as ONNX (torch.onnx.export's dynamo exporter), beside a sidecar JSON that says how to feed it,
proven equal to the model it came from. The graph is the plain model's loop over the 28 rows, unrolled, with a
dynamic batch: `logits` (batch, 10) and, unless `per_row=false`, `per_row_logits` (batch, 28, 10)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from mnist_lstm.checkpoint import load_checkpoint, load_model, run_dir_of
from mnist_lstm.errors import UserError
from mnist_lstm.model.lstm import RowLSTMClassifier
from mnist_lstm.quiet import quiet
from mnist_lstm.use.models import INSTALL, OnnxModel

log = logging.getLogger(__name__)

OPSET = 18  # the ONNX operator set written (onnxruntime >= 1.14 runs it)
ROWS, COLUMNS, CLASSES = 28, 28, 10
INPUT_LAYOUT = (
    "float32 (batch, 28, 28): 28 rows of 28 pixels, read top to bottom; values in [0, 1]; a white digit on black, "
    "scaled to fit 20x20 and centred by its centre of mass in the 28x28 field, as MNIST's digits are "
    "(mnist_lstm/use/images.py brings any picture there)"
)
TOLERANCE = 1e-4  # the largest difference of a logit from PyTorch's that the export accepts


class RowReader(nn.Module):
    """What the exported graph computes, in one pass of the LSTM: images -> logits (and per-row logits)."""

    def __init__(self, net: RowLSTMClassifier, per_row: bool = True) -> None:
        super().__init__()
        self.net, self.per_row = net, per_row

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        outputs, _ = self.net.lstm(images.transpose(0, 1))  # time-major: (rows, batch, columns)
        if not self.per_row:
            return self.net.classifier(outputs[-1])
        per_row = self.net.classifier(outputs).transpose(0, 1)  # (batch, rows, classes)
        return per_row[:, -1], per_row


def export(cfg: DictConfig) -> Path:
    """Run export.py's config: write `<out>/<checkpoint>.onnx` and its `.json`; return the ONNX file's path."""
    ckpt = Path(cfg.ckpt_path).expanduser() if cfg.ckpt_path else None
    checkpoint = load_checkpoint(ckpt)  # (refuses a missing, foreign or damaged checkpoint in one line)
    out = Path(cfg.out).expanduser() if cfg.out else run_dir_of(ckpt) / "export"
    if out.suffix.lower() in (".onnx", ".json"):  # a file's name where a folder is meant: not a folder named so
        raise UserError(
            f"out={cfg.out} names a file; out is the folder for <checkpoint>.onnx and .json: pass out=<dir>"
        )
    target, sidecar = out / f"{ckpt.stem}.onnx", out / f"{ckpt.stem}.json"
    for path in (target, sidecar):
        if path.exists() and not cfg.overwrite:
            raise UserError(f"{path} already exists and is never overwritten: pass overwrite=true, or out=<dir>")
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"exporting to ONNX needs {' and '.join(missing)}, not installed: {INSTALL}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder {out} ({err.strerror}); pass out=<a writable dir>") from err
    if not os.access(out, os.W_OK):
        raise UserError(f"cannot write into {out} (permission denied); pass out=<a writable dir>")

    model = load_model(ckpt, "cpu", loop="plain").net  # the plain loop: what the graph holds, unrolled
    reader = RowReader(model, per_row=cfg.per_row).eval()
    # Both files are written beside their targets and renamed into place once complete: never half of one.
    temporaries = [path.with_name(f".{path.name}.{os.getpid()}.tmp") for path in (target, sidecar)]
    try:
        write_onnx(reader, temporaries[0])
        parity = _parity(reader, temporaries[0])
        info = sidecar_info(ckpt, checkpoint, cfg.per_row, parity)
        temporaries[1].write_text(json.dumps(info, indent=2) + "\n")
        for temporary, path in zip(temporaries, (target, sidecar), strict=True):
            os.replace(temporary, path)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    size = target.stat().st_size / 2**20
    log.info(f"Wrote {target} ({size:.1f} MiB, ONNX opset {OPSET}, dynamic batch) and {sidecar}")
    if parity:
        log.info(
            f"onnxruntime against PyTorch on {parity['images']} images: largest |logit difference| "
            f"{parity['max_abs_logit_difference']:.2e}, the same answer for all of them"
        )
    log.info(f"Predict with it: python scripts/predict.py onnx={target} image=<picture>")
    return target


def write_onnx(reader: RowReader, path: Path) -> None:
    """torch.onnx.export (dynamo) to `path`, weights inside the file, its progress kept out of the log; checked."""
    import onnx

    with warnings.catch_warnings(), quiet("onnxscript", "onnx_ir", level=logging.ERROR):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            reader,
            (torch.rand(2, ROWS, COLUMNS),),
            str(path),
            verbose=False,
            dynamo=True,
            input_names=["images"],
            output_names=["logits", "per_row_logits"] if reader.per_row else ["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=OPSET,
            external_data=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def _parity(reader: RowReader, path: Path, images: int = 256) -> dict[str, Any] | None:
    """The exported file run by onnxruntime against PyTorch on random images, or None without onnxruntime (the
    tests hold it to PyTorch on the official test set). Raises if they differ by more than TOLERANCE."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    batch = torch.rand(images, ROWS, COLUMNS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reader(batch)
    expected = expected[0] if isinstance(expected, tuple) else expected
    got = OnnxModel(path)(batch)
    difference = float((got - expected).abs().max())
    same = bool(torch.equal(got.argmax(dim=1), expected.argmax(dim=1)))
    if difference > TOLERANCE or not same:
        raise UserError(
            f"the exported model differs from PyTorch's (largest |logit difference| {difference:.2e}, same answers: "
            f"{same}); nothing was written: report it, with your torch and onnxruntime versions"
        )
    return {"images": images, "max_abs_logit_difference": difference, "same_answers": same, "inputs": "uniform random"}


def sidecar_info(ckpt: Path, checkpoint: dict, per_row: bool, parity: dict | None) -> dict[str, Any]:
    """The sidecar JSON: how to feed the model, what it answers, where it came from."""
    outputs = {"logits": "float32 (batch, 10): the class scores after the last row; softmax for probabilities"}
    if per_row:
        outputs["per_row_logits"] = "float32 (batch, 28, 10): the class scores after each row read"
    return {
        "format": "onnx",
        "opset": OPSET,
        "input": {"images": INPUT_LAYOUT},
        "outputs": outputs,
        "classes": [str(k) for k in range(CLASSES)],
        "checkpoint": str(ckpt.resolve()),
        "global_step": int(checkpoint.get("global_step", 0)),
        "hyper_parameters": {
            k: v for k, v in checkpoint["hyper_parameters"].items() if isinstance(v, bool | int | float | str | None)
        },
        "exported_with": {"torch": torch.__version__},
        "parity": parity,
    }
