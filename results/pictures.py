"""Digits as users present them, read through predict.py's own preparation: accuracy per case beside the clean test's.

    pip install -e ".[pictures]"     # scikit-learn (its 8x8 digits) and scikit-image (a pen's skeleton)
    python results/pictures.py --ckpt <run>/checkpoints/last.ckpt --data-dir data   # -> results/pictures.csv
    python results/pictures.py --ckpt ... --data-dir ... --figure docs/pictures.png  # ... and the examples' figure
    python results/pictures.py --ckpt ... --data-dir ... --limit 1000 --cases photo   # a quick look at one case

Every case but the last is made from the official MNIST test digits (never trained on), one picture per digit, as a
user would photograph or scan it: a PNG (a JPEG for the photo) of its own size, decoded by `decode_image` and
prepared by `digit_of`, exactly what predict.py and the demo do with a file. The last, `sklearn 8x8`, is the 1,797
handwritten digits scikit-learn ships (UCI's optdigits, other writers, 8x8 pixels of 17 grey levels). Random
choices (pen, light, angle) are seeded: the same command makes the same pictures.
"""

from __future__ import annotations

import argparse
import csv
import io
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # (run from anywhere, as `python results/pictures.py`)

from mnist_lstm.checkpoint import load_model  # noqa: E402
from mnist_lstm.data import load_mnist  # noqa: E402
from mnist_lstm.errors import UserError  # noqa: E402
from mnist_lstm.use.images import decode_image, digit_of  # noqa: E402

SCALE = 5  # a test digit's 28 pixels become 140: a picture's size, not a thumbnail's
FIELDS = ["case", "digits", "accuracy", "clean_accuracy", "gap", "refused", "what", "checkpoint", "machine"]


def ink_of(digit: np.ndarray, scale: int = SCALE) -> Image.Image:
    """A (28, 28) digit in [0, 1] enlarged `scale` times (bilinear): white ink on black, 8-bit."""
    image = Image.fromarray(np.uint8(np.round(255 * digit)), "L")
    return image.resize((28 * scale, 28 * scale), Image.BILINEAR)


def on_paper(ink: Image.Image) -> Image.Image:
    """White ink on black -> dark ink on white paper, in colour (as a phone or a scanner saves it)."""
    return Image.eval(ink, lambda v: 255 - v).convert("RGB")


def picture(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(np.uint8(np.round(255 * digit)), "L")


def paper(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    return on_paper(ink_of(digit))


def tight_crop(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    rows, cols = np.nonzero(digit > 0.2)
    crop = digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    image = Image.fromarray(np.uint8(np.round(255 * crop)), "L")
    return on_paper(image.resize((crop.shape[1] * 6, crop.shape[0] * 6), Image.BILINEAR))


def thick_pen(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A felt pen: every stroke grown by 6 to 8 pixels a side at 140 pixels (+2.4 to 3.2 pixels of MNIST width)."""
    return on_paper(ink_of(digit).filter(ImageFilter.MaxFilter(int(rng.choice([13, 15, 17])))))


def thin_pen(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A ballpoint: the digit's skeleton drawn 3 pixels wide at 140 pixels (0.6 pixels of MNIST width)."""
    from skimage.morphology import skeletonize

    skeleton = skeletonize(np.asarray(ink_of(digit)) > 76)
    line = Image.fromarray(np.uint8(255 * skeleton), "L").filter(ImageFilter.MaxFilter(3))
    return on_paper(line.filter(ImageFilter.GaussianBlur(0.7)))


def low_resolution(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Scanned at half MNIST's resolution (14 x 14, the digit about 10 pixels tall), then enlarged by the viewer."""
    small = Image.fromarray(np.uint8(np.round(255 * digit)), "L").resize((14, 14), Image.BOX)
    return on_paper(small.resize((140, 140), Image.BICUBIC))


def blurred(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Out of focus: a Gaussian blur of 1 to 1.5 MNIST pixels."""
    return on_paper(ink_of(digit).filter(ImageFilter.GaussianBlur(SCALE * rng.uniform(1.0, 1.5))))


def photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A phone photo of paper: light falling off across the page (a shadow: the far side at 40-60% of the near), grey
    ink, paper grain, sensor noise, a warm tint, saved as JPEG."""
    ink = np.asarray(ink_of(digit), dtype=np.float32) / 255
    size = ink.shape[0]
    grain = np.asarray(
        Image.fromarray(np.uint8(np.clip(128 + 40 * rng.standard_normal((size, size)), 0, 255)), "L").filter(
            ImageFilter.GaussianBlur(1.5)
        ),
        dtype=np.float32,
    )
    paper_albedo = 0.88 + 0.25 * (grain / 255 - 0.5)
    reflectance = paper_albedo * (1 - ink) + rng.uniform(0.12, 0.3) * ink
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    along = (np.cos(angle) * x + np.sin(angle) * y) / np.sqrt(0.5)  # -1 .. 1 across the picture
    far = rng.uniform(0.4, 0.6)
    light = 1 - (1 - far) * (along + 1) / 2
    grey = light * reflectance + 0.02 * rng.standard_normal((size, size))
    rgb = np.clip(255 * grey[..., None] * np.array([1.0, 0.95, 0.85]), 0, 255)
    return Image.fromarray(np.uint8(rgb), "RGB")


def rotated(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Paper turned by 5 to 15 degrees either way."""
    angle = rng.uniform(5, 15) * rng.choice([-1, 1])
    return on_paper(ink_of(digit).rotate(angle, Image.BILINEAR, fillcolor=0))


CASES: dict[str, tuple[Callable[[np.ndarray, np.random.Generator], Image.Image], str]] = {
    "picture": (picture, "the test digit saved as it is, a 28 x 28 PNG, white on black"),
    "paper": (paper, "dark on white paper, 140 x 140, in colour"),
    "tight crop": (tight_crop, "cut to its strokes (they touch all four edges), x6, on paper"),
    "thick pen": (thick_pen, "strokes 2.4-3.2 px (of 28) thicker, on paper"),
    "thin pen": (thin_pen, "its skeleton drawn 0.6 px (of 28) wide, on paper"),
    "low resolution": (low_resolution, "scanned at 14 x 14, enlarged to 140 (bicubic), on paper"),
    "blurred": (blurred, "Gaussian blur of 1-1.5 px (of 28), on paper"),
    "photo": (photo, "light falling to 40-60% across the page, grey ink, grain, noise, JPEG"),
    "rotated": (rotated, "turned 5-15 degrees either way, on paper"),
}
SKLEARN = "sklearn 8x8"


def prepared(image: Image.Image, jpeg: bool) -> torch.Tensor | None:
    """predict.py's preparation of the picture saved as a file (decode_image, then digit_of), or None where it
    refuses the picture (as blank), which counts as a wrong answer."""
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80) if jpeg else image.save(out, "PNG")
    try:
        return digit_of(decode_image(out.getvalue()))
    except UserError:
        return None


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as (N, 8, 8) in [0, 1], white on black as they come, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images / 16.0, digits.target


def accuracy(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, found: list[bool] | None = None
) -> float:
    """The fraction of `images` the model reads as their label; a picture not `found` (refused) is a wrong answer."""
    with torch.no_grad():
        answers = torch.cat([model(batch).argmax(dim=1) for batch in images.split(1000)])
    right = answers == labels
    if found is not None:
        right &= torch.tensor(found)
    return float(right.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoint written by scripts/train.py")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="a folder holding MNIST/raw/")
    parser.add_argument("--cases", nargs="+", default=[*CASES, SKLEARN], choices=[*CASES, SKLEARN])
    parser.add_argument("--limit", type=int, default=None, help="only the first N test digits (a quick look)")
    parser.add_argument("--csv", type=Path, default=Path(__file__).with_name("pictures.csv"))
    parser.add_argument("--figure", type=Path, default=None, help="also draw examples of each case here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="what the checkpoint is, for the csv (default: its path)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    model = load_model(args.ckpt, "cpu").net.eval()
    images, labels = load_mnist(args.data_dir, train=False)
    images, labels = images[: args.limit], labels[: args.limit]
    clean = accuracy(model, images, labels)
    print(f"clean test digits: {100 * clean:.2f}% of {len(labels)}")
    rows, examples = [], {}
    for case in args.cases:
        if case == SKLEARN:
            digits, truth = sklearn_digits()
            pictures = [Image.fromarray(np.uint8(np.round(255 * d)), "L") for d in digits]
            truth, what = torch.from_numpy(truth).long(), "scikit-learn's load_digits: 8 x 8, white on black"
        else:
            make, what = CASES[case]
            rng = np.random.default_rng([args.seed, list(CASES).index(case)])
            pictures, truth = [make(d, rng) for d in images.numpy()], labels
        seen = [prepared(p, jpeg=case == "photo") for p in pictures]
        found = [s is not None for s in seen]
        seen = torch.stack([torch.zeros(28, 28) if s is None else s for s in seen])
        right = accuracy(model, seen, truth, found)
        rows.append({
            "case": case, "digits": len(truth), "accuracy": round(right, 4), "clean_accuracy": round(clean, 4),
            "gap": round(clean - right, 4), "refused": found.count(False), "what": what,
            "checkpoint": args.model or str(args.ckpt),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}, torch {torch.__version__}",
        })  # fmt: skip
        examples[case] = (pictures[:4], seen[:4])
        gap, refused = 100 * (clean - right), found.count(False)
        print(
            f"{case:>15}: {100 * right:6.2f}%  (gap {gap:5.2f} points, {refused} refused)  {what}",
            flush=True,
        )
    with args.csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"Wrote {args.csv}")
    if args.figure:
        draw(examples, args.figure)
        print(f"Wrote {args.figure}")


def draw(examples: dict[str, tuple[list[Image.Image], torch.Tensor]], out: Path) -> None:
    """One row per case: four pictures as the user gives them, each followed by what the model sees."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 8, figsize=(8 * 1.1, len(examples) * 1.2))
    for row, (case, (pictures, seen)) in zip(axes, examples.items(), strict=True):
        for k, (raw, digit) in enumerate(zip(pictures, seen, strict=True)):
            row[2 * k].imshow(raw.convert("RGB"))
            row[2 * k + 1].imshow(digit, cmap="gray", vmin=0, vmax=1)
        row[0].set_ylabel(case, rotation=0, ha="right", va="center", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for k in range(4):
        axes[0, 2 * k].set_title("picture", fontsize=8)
        axes[0, 2 * k + 1].set_title("model sees", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main()
