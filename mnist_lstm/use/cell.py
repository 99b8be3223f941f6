"""Inside the cell: what every gate of a trained model does while it reads a digit, and which rows its answer
depends on. The readings are recorded by the plain model's own loop (`lstm_loop(..., record=)` in
mnist_lstm/model/lstm.py), not recomputed by a copy of it."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from mnist_lstm.errors import UserError
from mnist_lstm.model.lstm import RowLSTMClassifier, StackedLSTM, lstm_loop

BLANK = 0.0  # a pixel with no ink, as the model sees it (white ink on black, in [0, 1])


class CellReadings(NamedTuple):
    """What every layer computed after each row read, each field (layers, batch, rows, hidden): the input, forget
    and output gates and the candidate as applied (after their sigmoid or tanh), then the cell state c and the
    hidden state h, so that c_t = forget * c_{t-1} + input * candidate and h_t = output * tanh(c_t)."""

    input: Tensor
    forget: Tensor
    candidate: Tensor
    output: Tensor
    cell: Tensor
    hidden: Tensor


@torch.no_grad()
def read_cell(model: RowLSTMClassifier, images: Tensor) -> CellReadings:
    """images (batch, rows, columns) -> every layer's CellReadings, read as in evaluation (no dropout). The top
    layer's last hidden state is what the classifier reads: `model.classifier(readings.hidden[-1, :, -1])` are
    the model's logits."""
    if not isinstance(model.lstm, StackedLSTM):
        raise UserError(
            "the gates can be read only from this project's own LSTM (cell=custom), not from nn.LSTM (cell=torch): "
            "train with cell=custom (the default) to see them"
        )
    x, layers = images.transpose(0, 1), []  # time-major, as the model reads
    for layer in model.lstm.layers:  # each layer reads the whole output of the one below, as StackedLSTM does
        steps: list[Tensor] = []
        x, _ = layer(x, None, partial(lstm_loop, record=steps))
        layers.append(torch.stack(steps))  # (rows, 6, batch, hidden)
    return CellReadings(*torch.stack(layers).permute(2, 0, 3, 1, 4))  # 6 x (layers, batch, rows, hidden)


@torch.no_grad()
def row_importance(model: RowLSTMClassifier, image: Tensor, target: int | None = None) -> Tensor:
    """image (rows, columns) -> (rows,): how much the probability of `target` (by default the model's answer)
    falls when that one row is blanked; negative where blanking it makes the answer surer. The image and its
    copies with each row blanked are read as one batch."""
    rows = image.shape[0]
    copies = image.repeat(rows + 1, 1, 1)
    copies[torch.arange(1, rows + 1), torch.arange(rows)] = BLANK  # copy k + 1 has row k blanked
    probabilities = model(copies).float().softmax(dim=-1)
    target = int(probabilities[0].argmax()) if target is None else target
    return probabilities[0, target] - probabilities[1:, target]


def changing_units(cell: Tensor, units: int) -> Tensor:
    """cell (rows, hidden): one layer's cell state over the rows of one digit -> the indices of the `units` units
    whose cell state ranges most over the rows, ordered by their cell state after the last row, most positive
    first: units that end alike stand together."""
    chosen = (cell.amax(dim=0) - cell.amin(dim=0)).topk(min(units, cell.shape[1])).indices
    return chosen[cell[-1, chosen].argsort(descending=True, stable=True)]
