"""Augmentation of the training images, on whole batches where they are (the GPU when the data is kept there)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift(images: Tensor, pixels: int) -> Tensor:
    """Each image (batch, 28, 28) moved by its own random whole number of pixels, from -`pixels` to `pixels` along
    each axis; what comes in at the edges is black (MNIST's background). One gather for the whole batch."""
    if pixels <= 0:
        return images
    batch, height, width = images.shape
    padded = F.pad(images, (pixels, pixels, pixels, pixels))
    top = torch.randint(0, 2 * pixels + 1, (batch, 1, 1), device=images.device)
    left = torch.randint(0, 2 * pixels + 1, (batch, 1, 1), device=images.device)
    rows = top + torch.arange(height, device=images.device).view(1, height, 1)
    columns = left + torch.arange(width, device=images.device).view(1, 1, width)
    return padded[torch.arange(batch, device=images.device).view(batch, 1, 1), rows, columns]
