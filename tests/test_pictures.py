"""Real pictures, read well (mnist_lstm/use/images.py): a digit cropped tight or written with a felt pen is
accepted and read right by predict.py and by the demo's API; and each step of the preparation does its job, on
pictures made here from MNIST test digits: strokes brought to MNIST's width, a blurred digit sharpened, uneven light
removed, MNIST's own digits left exactly as they are. The benchmark of all the cases: results/pictures.py."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter
from torchvision.transforms.functional import to_tensor

from mnist_lstm.checkpoint import load_model
from mnist_lstm.data import ensure_mnist, load_mnist
from mnist_lstm.demo.app import DigitReader, OfficialDigits, create_app
from mnist_lstm.use.figures import per_row_probabilities
from mnist_lstm.use.images import (
    BLUR,
    STROKE,
    NoDigit,
    cropped,
    enlarged,
    paper_level,
    strokes,
    to_mnist,
)
from tests.helpers import run_script, thick_pen_on_paper, tight_crop_on_paper


def grey_of(picture: Image.Image) -> torch.Tensor:
    return to_tensor(picture.convert("L"))[0]


def ballpoint_on_paper(image: torch.Tensor) -> torch.Tensor:
    """An MNIST digit enlarged 5 times with every stroke thinned by 6 pixels (to about 0.8 of MNIST's pixels), dark
    on white: grey levels."""
    large = F.interpolate(image[None, None], scale_factor=5, mode="bilinear")
    return 1 - (-F.max_pool2d(-large, 7, stride=1, padding=3))[0, 0]


def measured(field: torch.Tensor) -> tuple[float, float]:
    """(width, blur) of a (28, 28) digit's strokes, measured as the preparation measures them."""
    return strokes(enlarged(cropped(field)))


@pytest.fixture(scope="module")
def test_digits(mnist_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    ensure_mnist(mnist_dir, download=False)  # (extracted, as a training run would: these tests may run alone)
    images, labels = load_mnist(mnist_dir, train=False)
    return images[:200], labels[:200]


@pytest.fixture(scope="module")
def ckpt(tiny_run: tuple[Path, str]) -> Path:
    return tiny_run[0] / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def sure_digits(ckpt: Path, test_digits) -> list[int]:
    """Indices of the test digits the tiny model reads right, and sure (>= 80%), as MNIST gives them: a weak model
    (40 steps), so a picture of one of these read wrong is the preparation's fault, not the model's."""
    model = load_model(ckpt, "cpu").net
    final = per_row_probabilities(model, test_digits[0])[:, -1]
    sure = (final.argmax(dim=1) == test_digits[1]) & (final.max(dim=1).values >= 0.8)
    assert sure.sum() >= 20, "the tiny model is sure of fewer than 20 of the first 200 test digits"
    return sure.nonzero().flatten().tolist()


def pictures_of(index: int, test_digits) -> dict[str, Image.Image]:
    image = test_digits[0][index]
    return {"tight crop": tight_crop_on_paper(image), "thick pen": thick_pen_on_paper(image)}


def png(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


# ---------------------------------------------------------------- read right, by predict.py and the demo


@pytest.mark.parametrize("case", ["tight crop", "thick pen"])
def test_predict_reads_a_real_picture_right(ckpt: Path, test_digits, sure_digits, case: str, tmp_path: Path) -> None:
    index = sure_digits[0]
    picture = tmp_path / "digit.png"
    pictures_of(index, test_digits)[case].save(picture)
    if case == "tight crop":  # its strokes touch all four edges
        ink = grey_of(Image.open(picture)) < 0.8
        assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()
    result = run_script("predict.py", f"ckpt_path={ckpt}", f"image={picture}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{picture}: predicted digit {int(test_digits[1][index])} " in result.stdout


def test_the_demo_reads_real_pictures_right(ckpt: Path, mnist_dir: Path, test_digits, sure_digits) -> None:
    """Ten digits the model is sure of, each cropped tight and written thick, sent to POST /api/read: read right,
    all but two at most (a tight crop of a 1 that is more ink than paper is still refused as blank, a 400)."""
    model = load_model(ckpt, "cpu").net
    app = create_app(DigitReader(model), OfficialDigits.load(mnist_dir, download=False))
    right = 0
    with TestClient(app) as client:
        for index in sure_digits[:10]:
            for picture in pictures_of(index, test_digits).values():
                response = client.post("/api/read", content=png(picture), headers={"Content-Type": "image/png"})
                assert response.status_code in (200, 400), response.text
                right += response.status_code == 200 and response.json()["answer"] == int(test_digits[1][index])
    assert right >= 18


# ---------------------------------------------------------------- each step of the preparation


def test_mnist_digits_come_back_exactly_as_they_are(test_digits) -> None:
    for image in test_digits[0]:
        assert torch.equal(to_mnist(image), image / image.max())


def test_a_felt_pen_and_a_ballpoint_are_brought_to_mnist_stroke_width(test_digits) -> None:
    """Each brought to the nearer of MNIST's 5th and 95th percentile widths (measured again after the last scaling,
    a little above it); test_a_thick_digit_unmended_is_far_thicker_than_mnist shows how far they start."""
    thick, thin = [], []
    for image in test_digits[0][:30]:
        thick.append(measured(to_mnist(grey_of(thick_pen_on_paper(image))))[0])
        thin.append(measured(to_mnist(ballpoint_on_paper(image)))[0])
    assert sorted(thick)[15] <= STROKE[1] + 0.4, thick
    assert sorted(thin)[15] >= STROKE[0] - 0.2 and min(thin) >= STROKE[0] - 0.5, thin


def test_a_thick_digit_unmended_is_far_thicker_than_mnist(test_digits) -> None:
    """(What the test above guards against: the felt pen's strokes, as drawn, are far outside MNIST's range.)"""
    widths = [measured(F.max_pool2d(image[None, None], 3, 1, 1)[0, 0])[0] for image in test_digits[0][:30]]
    assert sorted(widths)[len(widths) // 2] > STROKE[1]


def test_a_blurred_digit_is_sharpened(test_digits) -> None:
    """Out of focus (a blur of 1.2 MNIST pixels): the grey spreads less far beyond the strokes than it does in the
    picture, into MNIST's range on the whole."""
    blur, before = [], []
    for image in test_digits[0][:30]:
        picture = Image.fromarray((255 * image).round().byte().numpy(), "L").resize((140, 140), Image.BILINEAR)
        blurred = grey_of(picture.filter(ImageFilter.GaussianBlur(6)))
        blur.append(measured(to_mnist(blurred))[1])
        before.append(measured(blurred)[1])
    assert sum(b < a for a, b in zip(before, blur, strict=True)) >= 27
    assert sorted(blur)[15] <= BLUR + 0.1 < sorted(before)[15]


def test_uneven_light_is_removed(test_digits) -> None:
    """A page lit from one side (the far side at 45%), with its grain: the paper's estimate follows the light, so
    that the paper comes out near black (short of it at the darkest edge: docs/pictures.md) and the ink bright."""
    grain = 0.02 * torch.randn(140, 140, generator=torch.Generator().manual_seed(0))
    for image in test_digits[0][:30]:
        ink = F.interpolate(image[None, None], scale_factor=5, mode="bilinear")[0, 0]
        paper = 0.9 * (1 - ink) + 0.2 * ink + grain
        page = torch.linspace(1.0, 0.45, 140).expand_as(ink) * paper
        flat = (1 - page) - paper_level(1 - page)
        assert flat[ink < 0.05].abs().median() < 0.05 < 0.3 < flat[ink > 0.9].median()
        assert (1 - page)[ink < 0.05].median() > 0.2  # (what it took away: the shadow's level)


def test_a_digit_in_a_shadow_is_read_as_on_even_paper(test_digits) -> None:
    """Through the whole preparation: the page lit from one side, dark ink, grain. The digit comes out white on
    black (the polarity is the ink's, not the shadow's) and close to the same digit on evenly lit paper."""
    grain = 0.02 * torch.randn(140, 140, generator=torch.Generator().manual_seed(1))
    close = 0
    for image in test_digits[0][:30]:
        ink = F.interpolate(image[None, None], scale_factor=5, mode="bilinear")[0, 0]
        paper = (0.9 * (1 - ink) + 0.2 * ink + grain).clamp(0, 1)
        even = to_mnist(paper)
        shadowed = to_mnist(torch.linspace(1.0, 0.45, 140).expand_as(ink) * paper)
        assert shadowed[0].max() < 0.5 and shadowed[:, 0].max() < 0.5  # (its margin black: the polarity is right)
        close += float(F.cosine_similarity(shadowed.flatten(), even.flatten(), dim=0)) > 0.8
    assert close >= 24, close


@pytest.mark.parametrize("grain", [0.0, 0.01, 0.02])
def test_paper_alone_is_no_digit(grain: float) -> None:
    """A page with nothing on it, its grain (stretched by the uneven-light step, it must not become ink) or a
    shadow across it (falling to 55%: the paper's estimate falls short at the far edge), and a 1-pixel-high strip:
    refused in one line, never a traceback."""
    noise = grain * torch.randn(300, 400, generator=torch.Generator().manual_seed(2))
    for page in (0.9 + noise, torch.linspace(1.0, 0.55, 400).expand(300, 400) * (0.9 + noise), torch.ones(1, 128)):
        with pytest.raises(NoDigit, match="no digit found"):
            to_mnist(page.clamp(0, 1))


@pytest.mark.parametrize("shape", [(9, 640), (30, 2000), (93, 1), (1, 65)])
def test_a_picture_far_longer_than_wide_is_read_or_refused_in_one_line(shape: tuple[int, int]) -> None:
    """A strip with a stroke across it: the paper's estimate, made at most 64 pixels wide, keeps one pixel of its
    short side."""
    page = torch.ones(shape)
    page[shape[0] // 2, :] = page[:, shape[1] // 2] = 0.0
    with contextlib.suppress(NoDigit):  # (a stroke along a strip can be all there is: paper alone, then)
        assert to_mnist(page).shape == (28, 28)
