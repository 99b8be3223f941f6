"""Any picture of a digit -> a 28x28 image in MNIST's convention, so the model can read it.

MNIST's digits are white on black, scaled (keeping their aspect ratio) to fit a 20x20 box, and
placed in the 28x28 field so that their centre of mass is at its centre. A photo or a drawing
is brought to the same convention: grey levels, dark background, background level removed and
contrast stretched, cropped to the digit, scaled to 20 pixels on its longer side, centred by mass.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from mnist_lstm.errors import UserError

SIZE = 28  # the MNIST field
BOX = 20  # the digit's longer side in MNIST


def read_image(path: str | Path) -> Image.Image:
    """Open a PNG/JPEG/... fully, or raise a one-line UserError saying why not."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"image not found: {path}; pass image=<a PNG or JPEG file of one digit>")
    if path.is_dir():
        raise UserError(f"image={path} is a directory; pass image=<a PNG or JPEG file of one digit>")
    if path.stat().st_size == 0:
        raise UserError(f"image {path} is empty (0 bytes); pass image=<a PNG or JPEG file of one digit>")
    try:
        image = Image.open(path)
        image.load()  # decode now: a truncated file fails here, not later
    except UnidentifiedImageError as err:
        raise UserError(f"{path} is not an image Pillow can read; pass a PNG or JPEG file of one digit") from err
    except OSError as err:
        raise UserError(f"image {path} is damaged or truncated ({err}); save it again as PNG or JPEG") from err
    return image


def grey_levels(image: Image.Image) -> Tensor:
    """(H, W) float in [0, 1]; a transparent background takes the colour the ink is not."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        opaque = _as_tensor(rgba.getchannel("A")) > 0.5
        grey = _as_tensor(rgba.convert("L"))
        ink_is_dark = bool(opaque.any()) and grey[opaque].mean() < 0.5
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if ink_is_dark else (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return _as_tensor(image.convert("L"))


def _as_tensor(image: Image.Image) -> Tensor:
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(image.height, image.width).float() / 255.0


def to_mnist(grey: Tensor) -> Tensor:
    """(H, W) grey levels in [0, 1], either polarity -> (28, 28) white digit on black, centred as MNIST's."""
    border = torch.cat([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.median() > 0.5:  # dark ink on a light background: MNIST's ink is white
        grey, border = 1.0 - grey, 1.0 - border
    # The brightest of the border (bar a few outliers) is background and noise (paper, JPEG): below it is black.
    digit = (grey - border.quantile(0.98)).clamp(min=0.0)
    if digit.max() < 0.1:
        raise UserError("no digit found: the image is blank (a single colour); pass a picture of one digit")
    digit = digit / digit.max()

    rows = (digit > 0).any(dim=1).nonzero().squeeze(1)
    cols = (digit > 0).any(dim=0).nonzero().squeeze(1)
    digit = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    height, width = digit.shape
    scale = BOX / max(height, width)
    if scale != 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        digit = F.interpolate(digit[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
        digit = (digit / digit.max()).clamp(0.0, 1.0)

    field = digit.new_zeros(SIZE, SIZE)
    top, left = (_offset(digit, dim) for dim in (0, 1))
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return field


def _offset(digit: Tensor, dim: int) -> int:
    """Where the digit starts along `dim` so that its centre of mass lands on the field's centre (14)."""
    mass = digit.sum(dim=1 - dim)
    centre = (mass * torch.arange(len(mass), dtype=mass.dtype)).sum() / mass.sum()
    return int(min(max(round(SIZE / 2 - float(centre)), 0), SIZE - len(mass)))


def load_digit(path: str | Path) -> Tensor:
    """The picture at `path` as a (28, 28) float image in MNIST's convention."""
    image = read_image(path)
    try:
        return to_mnist(grey_levels(image))
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
