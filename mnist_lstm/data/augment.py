"""Augmentation of the training images, on whole batches where they are (the GPU when the data is kept there)."""

from __future__ import annotations

import functools

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


def random_warp(images: Tensor, degrees: float = 0.0, elastic: float = 0.0, smoothness: float = 4.0) -> Tensor:
    """Each image (batch, 28, 28) rotated about its centre by its own random angle in [-`degrees`, `degrees`]
    and distorted elastically (Simard et al. 2003, https://doi.org/10.1109/ICDAR.2003.1227801): every pixel
    moved by a random field smoothed over `smoothness` pixels, scaled so that the moves' standard deviation
    is `elastic` pixels. Both make one sampling grid; one bilinear `grid_sample` for the whole batch."""
    if degrees <= 0 and elastic <= 0:
        return images
    batch, height, width = images.shape
    angle = torch.deg2rad((torch.rand(batch, device=images.device) * 2 - 1) * degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)  # (batch, h, w, 2) in [-1, 1]
    if elastic > 0:
        field = torch.rand(batch, 2, height, width, device=images.device) * 2 - 1
        field = _blur_matrix(height, smoothness, images.device) @ field  # blurred down each column
        field = field @ _blur_matrix(width, smoothness, images.device).T  # and along each row
        field = field * (elastic / field.std().clamp_min(1e-12))  # in pixels
        scale = torch.tensor([2 / width, 2 / height], device=images.device)  # pixels -> grid units
        grid = grid + field.permute(0, 2, 3, 1) * scale
    warped = F.grid_sample(images.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.squeeze(1)


@functools.lru_cache(maxsize=8)  # the same few matrices at every training step: built once
def _blur_matrix(size: int, sigma: float, device: torch.device) -> Tensor:
    """The (size, size) matrix B for which B @ x blurs x along its first axis with a Gaussian of `sigma`,
    edges reflected: what torchvision's `gaussian_blur` does (kernel of 4 sigma each side), as one small
    matmul per axis instead of a convolution with a wide kernel, which is slow on a CPU at this size."""
    radius = min(int(4 * sigma), size - 1)
    offsets = torch.arange(-radius, radius + 1, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = (torch.arange(size, device=device).view(-1, 1) + offsets).abs()  # reflected at 0 ...
    taps = torch.where(taps > size - 1, 2 * (size - 1) - taps, taps)  # ... and at size - 1
    return torch.zeros(size, size, device=device).scatter_add_(1, taps, (kernel / kernel.sum()).expand(size, -1))
