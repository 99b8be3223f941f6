"""Per-row probabilities, the figures, pictures brought to MNIST's convention, and the figures in TensorBoard."""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lstm.checkpoint import load_model
from mnist_lstm.data import load_mnist
from mnist_lstm.errors import UserError
from mnist_lstm.model.module import RowLSTMModule
from mnist_lstm.use.figures import OTHER, TRUE, WRONG, confusion_figure, per_row_probabilities, reading_figure
from mnist_lstm.use.images import load_digit, to_mnist
from mnist_lstm.use.tensorboard_figures import draw
from mnist_lstm.use.visualize import most_confidently_wrong


@pytest.fixture(scope="module")
def model(tiny_run: tuple[Path, str]) -> RowLSTMModule:
    return load_model(tiny_run[0] / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def test_images(mnist_dir: Path, tiny_run: tuple[Path, str]) -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist(mnist_dir, train=False)  # prepared (extracted) by the tiny run


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
        return Image.open(io.BytesIO(data)).size


def test_per_row_probabilities_end_in_the_models_answer(model: RowLSTMModule, test_images) -> None:
    images = test_images[0][:32]
    probabilities = per_row_probabilities(model.net, images)
    assert probabilities.shape == (32, 28, 10)
    assert torch.allclose(probabilities.sum(dim=-1), torch.ones(32, 28), atol=1e-5)
    with torch.no_grad():
        logits = model(images)
    assert torch.allclose(probabilities[:, -1], logits.softmax(dim=-1), atol=1e-5)
    assert torch.equal(probabilities[:, -1].argmax(dim=-1), logits.argmax(dim=-1))
    assert not torch.allclose(probabilities[:, 0], probabilities[:, -1], atol=1e-2)  # the answer forms as rows come


def test_figures_are_images_of_the_expected_size(model: RowLSTMModule, test_images) -> None:
    images, labels = test_images
    probabilities = per_row_probabilities(model.net, images[:1])[0]
    buffer = io.BytesIO()
    reading_figure(images[0], probabilities, int(labels[0]), "test digit #0").savefig(buffer, format="png", dpi=40)
    assert png_size(buffer.getvalue()) == (16 * 40, 17 * 40)
    buffer = io.BytesIO()
    confusion = torch.tensor([[5, 1], [0, 4]])
    confusion_figure(confusion).savefig(buffer, format="png", dpi=40)
    assert png_size(buffer.getvalue()) == (340, 300)


def test_reading_figure_shows_every_row_read_with_its_probabilities() -> None:
    """The 28 panels of the row grid: the digit after each row (rows not read yet veiled), and bars whose
    heights are that row's probabilities, the true class green and a wrong answer red."""
    torch.manual_seed(0)
    probabilities = torch.rand(28, 10).softmax(dim=-1)
    probabilities[27] = torch.nn.functional.one_hot(torch.tensor(4), 10).float()
    figure = reading_figure(torch.rand(28, 28), probabilities, label=3)
    grid = next(ax for ax in figure.axes if len(ax.images) == 28)  # one digit per row read
    bars = next(c for c in grid.collections if len(c.get_paths()) == 280)  # 10 per row read
    extents = [path.get_extents() for path in bars.get_paths()]
    heights = torch.tensor([box.height for box in extents], dtype=torch.float32).view(28, 10)
    torch.testing.assert_close(heights / heights[27].max(), probabilities)  # the scale: a full bar is 1
    assert [box.x0 for box in extents[:10]] == sorted(box.x0 for box in extents[:10])  # classes left to right
    colours = [to_hex(colour) for colour in bars.get_facecolors()]
    for t in range(28):
        predicted = int(probabilities[t].argmax())
        assert colours[10 * t + 3] == TRUE
        assert colours[10 * t + predicted] == (TRUE if predicted == 3 else WRONG)
        assert {colours[10 * t + k] for k in range(10) if k not in (3, predicted)} <= {OTHER}
    titles = [text.get_text() for text in grid.texts if text.get_text().startswith("row ")]
    assert titles[0] == f"row 1: {int(probabilities[0].argmax())} ({probabilities[0].max():.0%})"
    assert titles[-1] == "row 28: 4 (100%)" and len(titles) == 28
    veils = next(c for c in grid.collections if len(c.get_paths()) == 27)  # row 28 has nothing left to veil
    assert [round(path.get_extents().height) for path in veils.get_paths()] == list(range(27, 0, -1))


def test_most_confidently_wrong_are_wrong_and_sorted(model: RowLSTMModule, test_images) -> None:
    images, labels = test_images[0][:200], test_images[1][:200]
    chosen = most_confidently_wrong(model, images, labels, 3, batch_size=100)
    probabilities = per_row_probabilities(model.net, images)[:, -1]
    confidence, predicted = probabilities.max(dim=1)
    assert len(chosen) == 3 and all(predicted[i] != labels[i] for i in chosen)
    assert confidence[chosen].tolist() == sorted(confidence[chosen].tolist(), reverse=True)
    wrong = predicted != labels
    assert confidence[chosen[-1]] >= confidence[wrong].sort(descending=True).values[2] - 1e-6


def test_mnist_digits_come_back_unchanged_in_either_polarity(test_images) -> None:
    images = test_images[0][:300]
    normalised = images / images.amax(dim=(1, 2), keepdim=True)
    unchanged = [
        torch.equal(to_mnist(x), n) and torch.allclose(to_mnist(1 - x), n, atol=1e-6)
        for x, n in zip(images, normalised, strict=True)
    ]
    assert sum(unchanged) >= 0.97 * len(images)  # the rest differ by a one-pixel centring or a 19-pixel box


def test_a_large_colour_photo_of_dark_ink_on_paper_becomes_the_mnist_digit(test_images, tmp_path: Path) -> None:
    digit = test_images[0][0]
    ink = torch.zeros(330, 400)  # a 10x larger digit, off-centre on a wider sheet
    ink[30:310, 20:300] = torch.nn.functional.interpolate(digit[None, None], size=(280, 280), mode="bilinear")[0, 0]
    paper, pen = torch.tensor([250.0, 246.0, 235.0]), torch.tensor([20.0, 25.0, 60.0])  # off-white, blue-black
    rgb = paper * (1 - ink[..., None]) + pen * ink[..., None]
    Image.fromarray(rgb.round().byte().numpy(), "RGB").save(tmp_path / "digit.jpg", quality=90)
    converted = load_digit(tmp_path / "digit.jpg")
    assert converted.shape == (28, 28) and converted.min() >= 0 and converted.max() == 1
    assert torch.nn.functional.cosine_similarity(converted.flatten(), digit.flatten(), dim=0) > 0.8
    rows = torch.arange(28.0)
    mass = converted.sum()
    assert abs(float((converted.sum(1) * rows).sum() / mass) - 14) <= 0.5
    assert abs(float((converted.sum(0) * rows).sum() / mass) - 14) <= 0.5


def test_transparent_background_is_taken_as_paper(test_images, tmp_path: Path) -> None:
    digit = test_images[0][0]
    rgba = torch.zeros(28, 28, 4, dtype=torch.uint8)
    rgba[..., 3] = (digit * 255).byte()  # black ink, drawn only through its alpha
    Image.fromarray(rgba.numpy(), "RGBA").save(tmp_path / "drawn.png")
    converted = load_digit(tmp_path / "drawn.png")
    assert (converted - digit / digit.max()).abs().max() < 0.02


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.png", None, "image not found: "),
        ("empty.png", b"", "is empty (0 bytes)"),
        ("notes.png", b"a shopping list, not a picture\n", ": not an image Pillow can read"),
        ("blank.png", "blank", "no digit found: the image is blank"),
        ("cut.png", "truncated", ": the image is damaged or truncated"),
        ("huge.png", "huge", ": the image is 8000x6000 pixels (48.0 megapixels), over the limit of 40 megapixels"),
    ],
)
def test_bad_pictures_are_one_line_errors(tmp_path: Path, name: str, content, message: str) -> None:
    path = tmp_path / name
    if content == "blank":
        Image.new("L", (50, 40), 255).save(path)
    elif content == "huge":  # a small file (blank: it compresses well) of a huge picture, refused before decoding
        Image.new("L", (8000, 6000), 255).save(path)
    elif content == "truncated":
        buffer = io.BytesIO()
        Image.effect_noise((64, 64), 64).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_digit(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_training_logs_the_confusion_matrix_and_reading_figures_to_tensorboard(tiny_run: tuple[Path, str]) -> None:
    events = EventAccumulator(str(tiny_run[0] / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert "test/confusion_matrix" in tags
    assert {"test/reading_00000", "test/reading_00001", "test/reading_00002"} <= set(tags)
    for tag in tags:
        (image,) = events.Images(tag)
        assert image.step == 40
        assert png_size(image.encoded_image_string) == (image.width, image.height)
        assert image.width >= 600 and image.height >= 600


def test_figures_drawn_in_forked_processes_are_those_drawn_here() -> None:
    torch.manual_seed(0)
    confusion = torch.randint(0, 30, (10, 10)) + 500 * torch.eye(10, dtype=torch.long)
    jobs = [("confusion", confusion_figure, (confusion, "test"))]
    jobs += [(f"reading {k}", reading_figure, (torch.rand(28, 28), torch.rand(28, 10).softmax(-1), k)) for k in (3, 7)]
    here, forked = list(draw(jobs, processes=1)), list(draw(jobs, processes=3))
    assert [tag for tag, _ in forked] == [tag for tag, _ in here] == ["confusion", "reading 3", "reading 7"]
    for (_, pixels), (_, expected) in zip(forked, here, strict=True):
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        assert np.array_equal(pixels, expected)


def _fails_where_it_is_drawn() -> Figure:
    raise ValueError(f"no figure: drawn in process {os.getpid()}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="figures are drawn in forked processes on Linux only")
def test_a_figure_that_fails_in_a_forked_process_fails_the_drawing_with_its_error() -> None:
    jobs = [("good", confusion_figure, (torch.eye(10, dtype=torch.long),)), ("bad", _fails_where_it_is_drawn, ())]
    with pytest.raises(ValueError, match="no figure: drawn in process") as err:
        list(draw(jobs, processes=2))
    assert f"process {os.getpid()}" not in str(err.value)  # it was drawn in another process


TEST_PROCESS = os.getpid()


def _dies_unless_drawn_here() -> Figure:
    if os.getpid() != TEST_PROCESS:
        os._exit(1)  # as a process killed while drawing (e.g. out of memory)
    return confusion_figure(torch.eye(10, dtype=torch.long))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="figures are drawn in forked processes on Linux only")
def test_figures_are_drawn_here_when_a_drawing_process_dies(caplog: pytest.LogCaptureFixture) -> None:
    jobs = [("first", _dies_unless_drawn_here, ()), ("second", _dies_unless_drawn_here, ())]
    drawn = list(draw(jobs, processes=2))
    assert [tag for tag, _ in drawn] == ["first", "second"]
    assert np.array_equal(drawn[0][1], drawn[1][1])
    assert "drawing the rest here" in caplog.text and "BrokenProcessPool" in caplog.text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="figures are drawn in forked processes on Linux only")
def test_figures_are_drawn_here_when_no_process_can_be_forked(monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    def no_memory_to_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_memory_to_fork)
    jobs = [(f"confusion {k}", confusion_figure, (torch.eye(10, dtype=torch.long) * k,)) for k in (1, 2)]
    assert [tag for tag, _ in draw(jobs, processes=2)] == ["confusion 1", "confusion 2"]
    assert "Cannot allocate memory" in caplog.text and "drawing the rest here" in caplog.text


def test_a_daemonic_process_draws_the_figures_itself(monkeypatch) -> None:
    """A multiprocessing.Pool's worker (daemonic) may not start processes of its own."""
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True)
    with pytest.raises(ValueError, match=f"drawn in process {os.getpid()}"):
        list(draw([("bad", _fails_where_it_is_drawn, ()), ("also", _fails_where_it_is_drawn, ())], processes=2))
