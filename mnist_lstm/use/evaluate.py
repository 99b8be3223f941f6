"""Evaluate a checkpoint on the official 10,000 test images: loss, accuracy, per-class accuracy, confusion."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mnist_lstm.checkpoint import run_dir_of
from mnist_lstm.use.figures import confusion_figure
from mnist_lstm.use.models import Reader, device_of, open_model

log = logging.getLogger(__name__)


@torch.inference_mode()
def all_logits(model: Reader, loader: DataLoader) -> tuple[Tensor, Tensor]:
    """(logits (N, classes), labels (N,)) of every (image, label) batch of `loader`, on the CPU."""
    logits, labels = [], []
    for images, targets in loader:
        logits.append(model(images.to(device_of(model))).cpu())
        labels.append(targets)
    return torch.cat(logits), torch.cat(labels)


def evaluate(cfg: DictConfig) -> dict:
    """Run eval.py's config: write `<out>/<model>.json` and `<out>/<model>_confusion.png`, log a table. The model:
    a checkpoint (ckpt_path=) or an exported ONNX file (onnx=)."""
    model, hyper_parameters, source = open_model(cfg.ckpt_path, cfg.onnx, cfg.device)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    logits, labels = all_logits(model, datamodule.test_dataloader())
    confusion = multiclass_confusion_matrix(logits.argmax(dim=1), labels, logits.shape[1])
    per_class = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
    metrics = {
        "test/loss": F.cross_entropy(logits, labels).item(),
        "test/acc": (confusion.diag().sum() / len(labels)).item(),
        "test/acc_per_class": {str(k): round(float(a), 6) for k, a in enumerate(per_class)},
        "images": len(labels),
        "confusion_matrix": confusion.tolist(),  # rows: true digit, columns: predicted digit
    }

    ckpt = source.resolve()
    out = Path(cfg.out) if cfg.out else run_dir_of(ckpt) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    name = ckpt.stem if cfg.ckpt_path else f"{ckpt.stem}-onnx"  # (a checkpoint and its export, side by side)
    report = {"checkpoint" if cfg.ckpt_path else "onnx": str(ckpt), "hyper_parameters": hyper_parameters, **metrics}
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    figure = confusion_figure(confusion, f"{ckpt.parent.parent.name}/{ckpt.name}")
    figure.savefig(out / f"{name}_confusion.png", dpi=100)

    log.info(f"{ckpt} on the {metrics['images']:,} official test images:")
    log.info(f"  test/loss {metrics['test/loss']:.4f}   test/acc {metrics['test/acc']:.4f}")
    log.info("  digit   accuracy   images")
    for (digit, acc), row in zip(metrics["test/acc_per_class"].items(), metrics["confusion_matrix"], strict=True):
        log.info(f"  {digit:>5}   {acc:8.2%}   {sum(row):6d}")
    log.info(f"Wrote {out / f'{name}.json'} and {out / f'{name}_confusion.png'}")
    return metrics
