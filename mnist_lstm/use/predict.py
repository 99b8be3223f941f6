"""Predict the digit in your own picture with a trained model, and optionally show how it read it."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from mnist_lstm.errors import UserError
from mnist_lstm.use.figures import per_row_probabilities, reading_figure
from mnist_lstm.use.images import load_digit
from mnist_lstm.use.models import device_of, open_model

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> int:
    """Run predict.py's config: log the predicted digit and every class's probability; with `explain`, write the
    reading figure of the converted 28x28 image to `out` (default `<image stem>_reading.png` beside it)."""
    if cfg.image is None:
        raise UserError("no image given: pass image=<a PNG or JPEG file of one digit>")
    image = Path(cfg.image).expanduser()
    digit = load_digit(image)  # (before the model: a bad picture is said at once)
    model, _, _ = open_model(cfg.ckpt_path, cfg.onnx, cfg.device)
    images = digit[None].to(device_of(model))
    with torch.no_grad():
        final = model(images).softmax(dim=-1)[0].cpu()  # after the last row: the model's answer
    answer = int(final.argmax())

    log.info(f"{image}: predicted digit {answer} ({final[answer]:.1%})")
    for k, p in enumerate(final.tolist()):
        log.info(f"  {k}  {p:6.1%}  {'#' * round(40 * p)}")
    if cfg.explain:
        out = Path(cfg.out) if cfg.out else image.with_name(f"{image.stem}_reading.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        title = f"{image.name}, as MNIST: how the model reads it, row by row"
        probabilities = per_row_probabilities(model, images)[0].cpu()
        reading_figure(digit, probabilities, title=title).savefig(out, dpi=cfg.dpi)
        log.info(f"Wrote {out}")
    return answer
