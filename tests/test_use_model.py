"""The scripts that use a trained model, run as a user runs them, on the tiny run's checkpoints:
scripts/eval.py, scripts/visualize.py and scripts/predict.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from mnist_lstm.checkpoint import load_model
from mnist_lstm.data import load_mnist
from mnist_lstm.errors import UserError
from mnist_lstm.use.figures import per_row_probabilities
from mnist_lstm.use.images import to_mnist
from tests.helpers import run_script, tight_crop_on_paper


def best_checkpoint(run_dir: Path) -> Path:
    (best,) = (run_dir / "checkpoints").glob("step*.ckpt")
    return best


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_eval_restores_the_architecture_and_reproduces_the_training_test(
    tiny_run: tuple[Path, str], mnist_dir: Path, tmp_path: Path
) -> None:
    run_dir, _ = tiny_run
    ckpt = best_checkpoint(run_dir)
    # No layer_num/hidden_size overrides although the run used 3 x 64; run from an empty directory.
    result = run_script("eval.py", f"ckpt_path={ckpt}", f"data.data_dir={mnist_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # nothing left where it ran: no outputs/, .hydra/ or log

    report = json.loads((run_dir / "eval" / f"{ckpt.stem}.json").read_text())
    trained = OmegaConf.load(run_dir / "metrics.yaml")  # train.py tested this best checkpoint on the same images
    assert report["images"] == 10_000
    assert report["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert report["test/loss"] == pytest.approx(trained["test/loss"], abs=1e-4)
    assert report["hyper_parameters"]["layer_num"] == 3 and report["hyper_parameters"]["hidden_size"] == 64
    confusion = torch.tensor(report["confusion_matrix"])
    assert confusion.sum() == 10_000 and confusion.diag().sum() / 10_000 == pytest.approx(report["test/acc"])
    per_class = report["test/acc_per_class"]
    assert list(per_class) == [str(k) for k in range(10)]
    assert per_class["1"] == pytest.approx(float(confusion[1, 1] / confusion[1].sum()), abs=1e-6)
    assert png_size(run_dir / "eval" / f"{ckpt.stem}_confusion.png") == (850, 750)
    assert f"test/acc {report['test/acc']:.4f}" in result.stdout
    assert re.search(rf"\n\s+1\s+{100 * per_class['1']:.2f}%\s+{int(confusion[1].sum())}\n", result.stdout)


def test_visualize_writes_one_figure_per_digit(tiny_run: tuple[Path, str], mnist_dir: Path, tmp_path: Path) -> None:
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    out = tmp_path / "figures"
    result = run_script(
        "visualize.py", f"ckpt_path={ckpt}", "index=[4,7]", "split=train", "dpi=40", f"out={out}",
        f"data.data_dir={mnist_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["reading_train_00004.png", "reading_train_00007.png"]
    assert all(png_size(p) == (16 * 40, 17 * 40) for p in out.iterdir())
    labels = load_mnist(mnist_dir, train=True)[1]
    assert f"train #4: true {int(labels[4])}, predicted " in result.stdout


@pytest.mark.slow
def test_visualize_the_most_confidently_wrong(tiny_run: tuple[Path, str], mnist_dir: Path, tmp_path: Path) -> None:
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    result = run_script("visualize.py", f"ckpt_path={ckpt}", "wrong=2", "dpi=40", f"out={tmp_path}",
                        f"data.data_dir={mnist_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    indices = [int(i) for i in re.search(r"wrong most confidently: \[(\d+), (\d+)\]", result.stdout).groups()]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"reading_test_{i:05d}.png" for i in sorted(indices)]


@pytest.fixture(scope="module")
def a_clear_test_digit(tiny_run: tuple[Path, str], mnist_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, the model's class probabilities) of the first test digit the tiny model is sure of (>= 80%)
    and that MNIST's convention leaves unchanged."""
    model = load_model(tiny_run[0] / "checkpoints" / "last.ckpt")
    images = load_mnist(mnist_dir, train=False)[0][:500]
    final = per_row_probabilities(model.net, images)[:, -1]
    for image, probabilities in zip(images, final, strict=True):
        if probabilities.max() >= 0.8 and torch.equal(to_mnist(image), image / image.max()):
            return image, probabilities
    raise AssertionError("the tiny model is sure of none of the first 500 test digits")


@pytest.mark.parametrize("polarity", ["white on black", "black on white"])
def test_predict_agrees_with_the_model_on_a_saved_mnist_digit(
    tiny_run: tuple[Path, str], a_clear_test_digit, polarity: str, tmp_path: Path
) -> None:
    image, probabilities = a_clear_test_digit
    pixels = (image * 255).round().byte()
    if polarity == "black on white":
        pixels = 255 - pixels
    picture = tmp_path / "digit.png"
    Image.fromarray(pixels.numpy(), "L").save(picture)
    explain = ["explain=true", "dpi=30"] if polarity == "black on white" else []
    result = run_script("predict.py", f"ckpt_path={tiny_run[0] / 'checkpoints' / 'last.ckpt'}",
                        f"image={picture}", *explain, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answer = int(probabilities.argmax())
    assert f"{picture}: predicted digit {answer} ({probabilities[answer]:.1%})" in result.stdout
    for k, p in enumerate(probabilities.tolist()):
        assert re.search(rf"\n\s+{k}\s+{p:6.1%}", result.stdout), (k, p, result.stdout)
    if explain:
        assert png_size(tmp_path / "digit_reading.png") == (16 * 30, 17 * 30)
    assert sorted(os.listdir(tmp_path)) == ["digit.png", "digit_reading.png"][: 1 + bool(explain)]


def test_a_digit_cropped_tight_is_read_as_the_model_reads_the_original(
    tiny_run: tuple[Path, str], a_clear_test_digit, tmp_path: Path
) -> None:
    """Its border is ink, not paper: found and read all the same (once refused as blank)."""
    image, probabilities = a_clear_test_digit
    picture = tmp_path / "tight.png"
    tight_crop_on_paper(image).save(picture)
    pixels = torch.from_numpy(np.array(Image.open(picture))) < 205  # ink of at least 0.2
    assert pixels[0].any() and pixels[-1].any() and pixels[:, 0].any() and pixels[:, -1].any()
    result = run_script("predict.py", f"ckpt_path={tiny_run[0] / 'checkpoints' / 'last.ckpt'}", f"image={picture}",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{picture}: predicted digit {int(probabilities.argmax())} " in result.stdout


def test_digits_cropped_tight_are_found(mnist_dir: Path) -> None:
    """The first 200 test digits cut to their strokes: all but a few are found (a 1 a few pixels wide is more ink
    than paper: its other polarity is tried), and nearly all come out as MNIST's own digit, near enough."""
    images = load_mnist(mnist_dir, train=False)[0][:200]
    found = []
    for image in images:
        grey = torch.from_numpy(np.array(tight_crop_on_paper(image))).float() / 255
        with contextlib.suppress(UserError):
            digit = to_mnist(grey)
            found.append(torch.nn.functional.cosine_similarity(digit.flatten(), image.flatten(), dim=0) > 0.8)
    assert len(found) >= 194 and sum(found) >= 0.95 * len(images)


def test_bad_inputs_end_in_one_line_and_touch_nothing(tiny_run: tuple[Path, str], tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("a shopping list, not a picture\n")
    before = sorted(os.listdir(tmp_path))
    result = run_script("predict.py", f"ckpt_path={tiny_run[0] / 'checkpoints' / 'last.ckpt'}", f"image={notes}",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {notes}: not an image Pillow can read: pass a PNG or JPEG file of one digit"
    ]
    # A checkpoint cut short (e.g. a copy interrupted): refused in one line; the directory stays as it was.
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((tiny_run[0] / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    result = run_script("eval.py", f"ckpt_path={truncated}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: checkpoint {truncated} is truncated or corrupted (an incomplete zip archive): it was not saved or "
        "copied completely; copy it again or use another checkpoint of the run"
    ]
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "truncated.ckpt"])
