"""Any picture of a digit -> a 28x28 image in MNIST's convention (white on black, scaled to fit a 20x20 box,
centred by its centre of mass), so the model can read it: grey levels, dark background, uneven light evened out,
ink told from background (Otsu), background level removed and contrast stretched, cropped to the digit, strokes
brought to MNIST's width and sharpness where far from them, scaled to 20 pixels on its longer side, centred by
mass. How each step pays on pictures made from MNIST's test digits: docs/pictures.md."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.functional import to_tensor

from mnist_lstm.errors import UserError

SIZE = 28  # the MNIST field
BOX = 20  # the digit's longer side in MNIST
HI = 4  # strokes are measured and thinned or thickened at 4 times the box's scale, finely enough
PAD = 3 * HI  # the room around an enlarged digit for its strokes to grow
# MNIST's strokes at the box's scale, as with_mnist_strokes measures its training digits: width's 5th and 95th
# percentiles (a pen outside is brought to the nearer), blur's 95th percentile (beyond: sharpened).
STROKE, BLUR = (1.3, 3.1), 1.8
MAX_PIXELS = 40_000_000  # 40 megapixels: a photo of a digit needs far less, and a small file can claim far more


class NotAnImage(UserError):
    """Bytes that are no image format Pillow knows (the demo answers 415)."""


class TooManyPixels(UserError):
    """An image over MAX_PIXELS, refused from its header (the demo answers 413)."""


class NoDigit(UserError):
    """A picture with no digit in it: one colour, or paper alone."""


BLANK = "no digit found: the image is blank (one colour, or paper alone); pass a picture of one digit"


def decode_image(data: bytes | BinaryIO) -> Image.Image:
    """An image file, in memory (an upload, a drawing) or open, decoded fully (refused from its header if over
    MAX_PIXELS), or a UserError."""
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise TooManyPixels(
                f"the image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), over the limit of "
                f"{MAX_PIXELS / 1e6:g} megapixels: scale it down"
            )
        image.load()  # decode now: a truncated file fails here, not later
    except UserError:
        raise
    except UnidentifiedImageError as err:
        raise NotAnImage("not an image Pillow can read: pass a PNG or JPEG file of one digit") from err
    except Image.DecompressionBombError as err:  # a header far past Pillow's own limit
        raise TooManyPixels(f"the image is too large to decode ({err})") from err
    except Exception as err:  # a damaged file: each format's reader raises its own kind of error
        raise UserError(f"the image is damaged or truncated ({first_line(err)}): save it again as PNG or JPEG") from err
    return image


def first_line(err: Exception) -> str:
    """An exception's message, short enough for a one-line refusal."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def digit_of(image: Image.Image) -> Tensor:
    """A decoded picture of one digit as a (28, 28) image in MNIST's convention: the one preparation of
    predict.py's files and the demo's drawings and uploads alike."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:  # the background: the colour ink is not
        rgba = image.convert("RGBA")
        opaque = to_tensor(rgba.getchannel("A"))[0] > 0.5
        grey = to_tensor(rgba.convert("L"))[0]
        ink_is_dark = bool(opaque.any()) and grey[opaque].mean() < 0.5
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if ink_is_dark else (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return to_mnist(to_tensor(image.convert("L"))[0])


def to_mnist(grey: Tensor) -> Tensor:
    """(H, W) grey levels in [0, 1], either polarity -> (28, 28) white digit on black, centred as MNIST's."""
    smooth = F.avg_pool2d(grey[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]  # (noise)
    if float(smooth.max() - smooth.min()) < 0.1:  # (a page's grain alone, however it were stretched, is no digit)
        raise NoDigit(BLANK)
    # The background is the class of the corners, which a digit seldom fills (a tight crop's included), told from
    # the ink by the middle of the picture's range: the ink is its far end, however unevenly the page is lit (Otsu's
    # threshold over the whole picture splits a shadow from the light instead). With two corners each way: the
    # larger class.
    middle = float(smooth.min() + smooth.max()) / 2
    k = max(1, min(grey.shape) // 8)
    corners = torch.stack(
        [grey[:k, :k].median(), grey[:k, -k:].median(), grey[-k:, :k].median(), grey[-k:, -k:].median()]
    )
    light = int((corners > middle).sum())
    dark_ink = light > 2 or (light == 2 and (grey > middle).float().mean() > 0.5)  # MNIST's ink is white
    try:
        digit = white_digit(1.0 - grey if dark_ink else grey)
    except NoDigit:  # a tight crop of a thick stroke can be more ink than paper, its corners too: the other way
        digit = white_digit(grey if dark_ink else 1.0 - grey)
    # A picture in MNIST's own layout (28 x 28, the digit's longer side the box's) is taken as it is.
    if grey.shape != (SIZE, SIZE) or max(digit.shape) != BOX:
        digit = resized(with_mnist_strokes(digit), BOX)
    field = digit.new_zeros(SIZE, SIZE)
    top, left = (_offset(digit, dim) for dim in (0, 1))
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return field


def white_digit(grey: Tensor) -> Tensor:
    """A picture of light ink on darker paper -> the ink alone, white on black, in [0, 1], cropped to it."""
    # Uneven light: the paper black all over, and the ink's contrast, which the light scales, made even (over the
    # range left above the paper: for dark ink on paper, 1 - level is the light falling there).
    level = paper_level(grey)
    above = grey - level
    # Ink stands out from the paper by more than the estimate can miss, a part of the shadow's depth: else it is a
    # shadow alone.
    if above.max() < 0.1 + (level.max() - level.min()) / 4:
        raise NoDigit(BLANK)
    grey = (above / (1.0 - level).clamp(min=0.1)).clamp(0.0, 1.0)
    # Ink and background told apart by Otsu's threshold, not by the border's level, which a tight crop touches.
    ink = grey > otsu_threshold(grey)
    background = grey[~ink] if bool((~ink).any()) else grey.flatten()
    # Paper and its noise (grain, JPEG) are black: up to 3 robust standard deviations above the background's median.
    median = background.median()
    digit = (grey - median - 3 * 1.4826 * (background - median).abs().median()).clamp(min=0.0)
    if digit.max() < 0.1:
        raise NoDigit(BLANK)
    return cropped(digit / digit.max())


def paper_level(grey: Tensor) -> Tensor:
    """The background's level at each pixel of a white-on-black picture, which light falling off across a page
    makes uneven: a grey opening (the least within a window half the picture's size, then the greatest of those),
    which no stroke or loop survives, smoothed; computed at most 64 pixels wide (light varies slowly). Where the
    light rises to the picture's edge, the rise is a peak narrower than the window there, which the opening cuts: a
    plane fitted to the paper (the pixels the opening kept) carries the light out to the edges."""
    scale = min(1.0, 64 / max(grey.shape))
    size = [max(1, round(side * scale)) for side in grey.shape]  # (a picture 100 times longer than wide too)
    small = F.interpolate(grey[None, None], size=size, mode="area")
    window = max(3, max(small.shape) // 2 | 1)
    level = F.max_pool2d(-F.max_pool2d(-small, window, 1, window // 2), window, 1, window // 2)
    level = F.avg_pool2d(level, window, 1, window // 2, count_include_pad=False)
    h, w = small.shape[-2:]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    basis = torch.stack([torch.ones_like(xs), xs, ys], dim=-1).reshape(-1, 3)
    paper = ((small - level).abs() < 0.05).reshape(-1)
    if int(paper.sum()) >= 0.25 * h * w:  # (a tight crop, mostly ink, has too little paper to fit)
        plane = (basis @ torch.linalg.lstsq(basis[paper], small.reshape(-1, 1)[paper]).solution).reshape(1, 1, h, w)
        if float(plane.max() - plane.min()) > 0.05:  # (evenly lit paper, MNIST's black included, is left as it is)
            level = torch.maximum(level, plane)
    return F.interpolate(level, size=grey.shape, mode="bilinear", align_corners=False)[0, 0]


def with_mnist_strokes(digit: Tensor) -> Tensor:
    """The digit (cropped, white on black) with strokes as wide and as sharp as MNIST's where they are far from
    them (a felt pen's or a ballpoint's, a blurred or small scan's): measured at four times the 20-pixel box's scale
    and mended there. As it is where its strokes are MNIST-like already."""
    large = enlarged(digit)
    width, blur = strokes(large)
    if STROKE[0] <= width <= STROKE[1] and blur <= BLUR:
        return digit
    if blur > BLUR:  # edges steepened about the half level (which keeps the strokes' width)
        large = ((large - 0.2) / 0.6).clamp(0.0, 1.0)
    if STROKE[0] <= width <= STROKE[1]:
        return large[PAD:-PAD, PAD:-PAD]  # (sharpened only: in the digit's own box, however faint its edges now)
    target = min(max(width, STROKE[0]), STROKE[1])  # the nearest of MNIST's widths: the least change
    k = 2 * round(abs(width - target) / 2 * HI) + 1  # a (k, k) window grows or thins a stroke by k - 1
    sign = 1.0 if width < STROKE[0] else -1.0  # dilated: the greatest within the window; eroded: the least
    return cropped(sign * F.max_pool2d(sign * large[None], k, 1, k // 2)[0])


def enlarged(digit: Tensor) -> Tensor:
    """The cropped digit at HI times the box's scale, with PAD pixels of room around it for its strokes to grow."""
    return F.pad(resized(digit, HI * BOX), (PAD,) * 4)


def strokes(large: Tensor) -> tuple[float, float]:
    """(width, blur) of an enlarged digit's strokes, in pixels of the 20-pixel box. The width: the ink's area over
    half its boundary's length (a stroke of width w and length L covers w * L pixels, and 2 * L on its two edges);
    the blur: how far the grey spreads beyond the strokes' half level."""
    ink = large > 0.5
    inner = -F.max_pool2d(-ink[None].float(), 3, 1, 1)[0] > 0.5  # (eroded by one pixel)
    width = float(2 * ink.sum() / (ink & ~inner).sum().clamp(min=1)) / HI
    return width, float((large > 0.1).sum() / ink.sum())


def cropped(digit: Tensor) -> Tensor:
    """The (H, W) image cut to its non-zero pixels."""
    rows, cols = (digit > 0).nonzero().unbind(dim=1)
    return digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def resized(digit: Tensor, box: int) -> Tensor:
    """The (H, W) image scaled so that its longer side is `box` pixels (antialiased), its maximum 1."""
    scale = box / max(digit.shape)
    size = (max(1, round(digit.shape[0] * scale)), max(1, round(digit.shape[1] * scale)))
    digit = F.interpolate(digit[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    return (digit / digit.max()).clamp(0.0, 1.0)


def otsu_threshold(grey: Tensor, bins: int = 256) -> float:
    """Otsu's threshold: the grey level that splits the pixels into the two classes of largest between-class
    variance, (total_mass * w - total * mass)^2 / (w * (total - w)) over the histogram's cumulative sums. (As
    scikit-image's threshold_otsu; seven lines here rather than that package and SciPy under it for one function.)"""
    counts = torch.histc(grey.double(), bins=bins, min=0.0, max=1.0)
    levels = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    weight, mass = counts.cumsum(0), (counts * levels).cumsum(0)
    total, total_mass = weight[-1], mass[-1]
    between = (total_mass * weight - total * mass) ** 2 / (weight * (total - weight))
    return float(levels[between.nan_to_num(nan=-1.0, posinf=-1.0).argmax()])


def _offset(digit: Tensor, dim: int) -> int:
    """Where the digit starts along `dim` so that its centre of mass lands on the field's centre (14)."""
    mass = digit.sum(dim=1 - dim)
    centre = (mass * torch.arange(len(mass), dtype=mass.dtype)).sum() / mass.sum()
    return int(min(max(round(SIZE / 2 - float(centre)), 0), SIZE - len(mass)))


def load_digit(path: str | Path) -> Tensor:
    """The picture at `path` as a (28, 28) float image in MNIST's convention, or a one-line UserError saying why not."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"image not found: {path}; pass image=<a PNG or JPEG file of one digit>")
    if path.is_dir():
        raise UserError(f"image={path} is a directory; pass image=<a PNG or JPEG file of one digit>")
    if path.stat().st_size == 0:
        raise UserError(f"image {path} is empty (0 bytes); pass image=<a PNG or JPEG file of one digit>")
    try:
        with path.open("rb") as file:
            picture = decode_image(file)
    except UserError as err:
        raise type(err)(f"{path}: {err}") from None
    except OSError as err:
        raise UserError(f"cannot read image {path} ({err.strerror}); check the path and its permissions") from err
    try:
        return digit_of(picture)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
