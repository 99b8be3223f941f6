"""The figure of inside the cell (mnist_lstm/use/figures.py cell_figure): it draws the recorded gates, cell state
and row importance it is given, on one row axis; and `visualize.py cell=true` writes it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_lstm.checkpoint import load_model
from mnist_lstm.data import load_mnist
from mnist_lstm.model.lstm import RowLSTMClassifier
from mnist_lstm.use.cell import read_cell, row_importance
from mnist_lstm.use.figures import cell_figure, per_row_probabilities
from tests.helpers import run_in_process, run_script


@pytest.fixture(scope="module")
def trained(tiny_run: tuple[Path, str]) -> RowLSTMClassifier:
    return load_model(tiny_run[0] / "checkpoints" / "last.ckpt").net  # 3 layers of 64


def test_the_figure_shows_the_recorded_cells_of_the_units_that_change_most(trained, mnist_dir: Path) -> None:
    images, labels = load_mnist(mnist_dir, train=False)
    image, label, layer, units = images[0], int(labels[0]), 1, 8  # the middle layer: not the default, the top
    readings = read_cell(trained, image[None])
    probabilities = per_row_probabilities(trained, image[None])[0]
    importance = row_importance(trained, image)
    figure = cell_figure(image, probabilities, readings, importance, label, layer=layer, units=units, title="#0")
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_title()}
    forget, write, cell = panels["forget gate f"], panels["input gate i"], panels["cell state c"]

    # The units: the `units` whose cell state ranges most over the rows, by their cell state after row 28.
    c = readings.cell[layer, 0]
    shown = [int(tick.get_text()) for tick in cell.get_xticklabels()]
    assert set(shown) == set((c.amax(dim=0) - c.amin(dim=0)).argsort(descending=True)[:units].tolist())
    assert c[-1, shown].tolist() == sorted(c[-1, shown].tolist(), reverse=True)
    for ax, recorded in ((forget, readings.forget), (write, readings.input), (cell, readings.cell)):
        assert [int(tick.get_text()) for tick in ax.get_xticklabels()] == shown
        np.testing.assert_array_equal(ax.images[0].get_array(), recorded[layer, 0][:, shown].numpy())
        assert ax.get_xlabel() == "unit of layer 2 of 3"
    # Colour scales that mean something: gates 0..1, the cell state symmetric around 0.
    assert forget.images[0].get_clim() == write.images[0].get_clim() == (0, 1)
    extreme = float(c[:, shown].abs().max())
    assert cell.images[0].get_clim() == pytest.approx((-extreme, extreme))
    colorbars = {ax.get_xlabel() for ax in figure.axes if not ax.get_title() and ax.get_xlabel()}
    assert {"probability", "gate: 0 shut, 1 open", "memory c (0: none)"} <= colorbars

    # The digit, the answer after each row, and each row's importance, all on one row axis, row 1 at the top.
    digit = panels[f"true {label}, predicted {int(probabilities[-1].argmax())} ({probabilities[-1].max():.0%})"]
    np.testing.assert_array_equal(digit.images[0].get_array(), image.numpy())
    np.testing.assert_array_equal(panels["answer after the row"].images[0].get_array(), probabilities.numpy())
    bars = panels["row importance"].patches
    assert [bar.get_y() + bar.get_height() / 2 for bar in bars] == pytest.approx(range(1, 29))
    assert [bar.get_width() for bar in bars] == pytest.approx(importance.tolist())
    for ax in panels.values():
        assert ax.get_ylim() == (28.5, 0.5)
    assert digit.get_ylabel().startswith("row read") and panels["row importance"].get_xlabel().startswith("fall of P(")
    assert "the 8 whose cell state ranges most" in figure.get_supxlabel() and figure.get_suptitle() == "#0"


def test_visualize_cell_true_writes_the_cell_figure(tiny_run: tuple[Path, str], mnist_dir: Path, tmp_path: Path):
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    out = tmp_path / "figures"
    result = run_script(
        "visualize.py", f"ckpt_path={ckpt}", "index=[3]", "cell=true", "layer=0", "dpi=40", f"out={out}",
        f"data.data_dir={mnist_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == ["cell_test_00003.png"]  # instead of the reading figure
    with Image.open(io.BytesIO((out / "cell_test_00003.png").read_bytes())) as png:
        assert png.size == (15 * 40, 7.5 * 40)
    assert "test #3: true " in result.stdout


def test_a_layer_the_checkpoint_lacks_is_one_line(tiny_run: tuple[Path, str], tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    status, stderr = run_in_process("visualize.py", f"ckpt_path={ckpt}", "cell=true", "layer=3", f"out={tmp_path}")
    assert status == 1 and stderr.strip().splitlines() == [
        "error: layer=3 is out of range: this checkpoint's model has 3 layers, so layer must be in [-3, 2] "
        "(e.g. layer=-1, the top one)"
    ]
    assert list(tmp_path.iterdir()) == []
