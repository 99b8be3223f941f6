"""Inside the cell (mnist_lstm/use/cell.py): the recorded gates are the ones the model computed, and the rows
marked important are the ones the answer depends on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_lstm.checkpoint import load_model
from mnist_lstm.data import load_mnist
from mnist_lstm.errors import UserError
from mnist_lstm.model.lstm import RowLSTMClassifier
from mnist_lstm.use.cell import BLANK, read_cell, row_importance


@pytest.fixture(scope="module")
def trained(tiny_run: tuple[Path, str]) -> RowLSTMClassifier:
    """The tiny run's model: 3 layers of 64, trained 40 steps (it reads about half the digits right)."""
    return load_model(tiny_run[0] / "checkpoints" / "last.ckpt").net.requires_grad_(False)


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_mnist(mnist_dir, train=False)
    return images[:64], labels[:64]


def test_the_recorded_gates_rebuild_the_recorded_states_and_the_answer(trained, digits) -> None:
    images = digits[0][:16]
    readings = read_cell(trained, images)
    layers, rows, hidden = len(trained.lstm.layers), 28, trained.lstm.hidden_size
    for field in readings:
        assert field.shape == (layers, 16, rows, hidden)
    i, f, g, o, c, h = readings
    assert float(i.min()) >= 0 and float(i.max()) <= 1 and float(f.min()) >= 0 and float(f.max()) <= 1
    assert float(g.min()) >= -1 and float(g.max()) <= 1
    # c_t = f_t * c_{t-1} + i_t * g_t from a zero state, and h_t = o_t * tanh(c_t), in every layer at every row.
    previous = torch.cat([torch.zeros_like(c[:, :, :1]), c[:, :, :-1]], dim=2)
    assert (f * previous + i * g - c).abs().max() < 1e-6
    assert (o * torch.tanh(c) - h).abs().max() < 1e-6
    # The top layer's last h is what the classifier reads: the model's own logits (its fast inference loop).
    assert (trained.classifier(h[-1, :, -1]) - trained(images)).abs().max() < 1e-5
    # ... and the whole top layer is its per-row answer.
    assert (trained.classifier(h[-1]) - trained.per_row_logits(images)).abs().max() < 1e-5


def test_the_recorded_gates_are_the_lstm_equations_of_the_weights() -> None:
    """Independently of the loop: each layer's gates from its fused weight, its input and the recorded h_{t-1}."""
    torch.manual_seed(0)
    model = RowLSTMClassifier(hidden_size=8, layer_num=2, forget_bias=1.0).double().eval()
    images = torch.rand(3, 28, 28, dtype=torch.double)
    i, f, g, o, c, h = read_cell(model, images)
    below = images  # (batch, rows, columns): what layer 0 reads
    for k, layer in enumerate(model.lstm.layers):
        previous = torch.cat([torch.zeros_like(h[k, :, :1]), h[k, :, :-1]], dim=1)
        gates = torch.cat([below, previous], dim=2) @ layer.gates.weight.T + layer.gates.bias
        gi, gf, gg, go = gates.chunk(4, dim=2)
        assert torch.allclose(i[k], torch.sigmoid(gi)) and torch.allclose(f[k], torch.sigmoid(gf + 1.0))
        assert torch.allclose(g[k], torch.tanh(gg)) and torch.allclose(o[k], torch.sigmoid(go))
        below = h[k]


def test_nn_lstm_has_no_gates_to_read() -> None:
    with pytest.raises(UserError, match="cell=custom"):
        read_cell(RowLSTMClassifier(hidden_size=8, layer_num=1, cell="torch"), torch.rand(1, 28, 28))


def test_row_importance_is_the_fall_when_each_row_is_blanked(trained, digits) -> None:
    image = digits[0][0]
    importance = row_importance(trained, image)
    assert importance.shape == (28,)
    answer = int(trained(image[None]).argmax())
    for row in (0, 9, 14, 27):  # the batched reading against one row blanked at a time
        blanked = image.clone()
        blanked[row] = BLANK
        fall = trained(image[None]).softmax(-1)[0, answer] - trained(blanked[None]).softmax(-1)[0, answer]
        assert abs(float(importance[row] - fall)) < 1e-5
    # A blank row changes nothing: the top rows of an MNIST digit hold no ink.
    assert float(image[0].abs().max()) == 0 and float(importance[0]) == 0


def test_blanking_the_important_rows_changes_the_answer_and_the_unimportant_ones_do_not(trained, digits) -> None:
    """What a learner would check, on the digits the model reads right: blanking the 4 rows marked most important
    changes the answer far more often than blanking 4 rows with ink chosen at random; blanking the 4 rows with ink
    whose importance is nearest 0 keeps it."""
    images, labels = digits
    right = (trained(images).argmax(dim=1) == labels).nonzero().squeeze(1).tolist()
    assert len(right) >= 10
    generator = torch.Generator().manual_seed(0)
    changed_most = changed_random = kept_least = 0
    for n in right:
        image, label = images[n], int(labels[n])
        importance = row_importance(trained, image, label)
        inked = (image.amax(dim=1) > BLANK).nonzero().squeeze(1)
        least = inked[importance[inked].abs().argsort()[:4]]
        chosen = inked[torch.randperm(len(inked), generator=generator)[:4]]
        blanked = image.repeat(3, 1, 1)
        for copy, rows in enumerate((importance.argsort(descending=True)[:4], least, chosen)):
            blanked[copy, rows] = BLANK
        most, least, random_rows = trained(blanked).argmax(dim=1).tolist()
        changed_most += most != label
        kept_least += least == label
        changed_random += random_rows != label
    assert kept_least >= 0.95 * len(right), (kept_least, len(right))
    assert changed_most >= max(0.25 * len(right), 3 * changed_random), (changed_most, changed_random, len(right))
