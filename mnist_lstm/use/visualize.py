"""See how a trained model reads MNIST digits row by row: one figure per chosen digit, the reading figure or (with
cell=true) the figure of what its cells do."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, ListConfig
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from mnist_lstm.checkpoint import load_model, run_dir_of
from mnist_lstm.data import ensure_mnist, load_mnist
from mnist_lstm.errors import UserError
from mnist_lstm.model.module import RowLSTMModule
from mnist_lstm.use.cell import CellReadings, read_cell, row_importance
from mnist_lstm.use.evaluate import all_logits
from mnist_lstm.use.figures import cell_figure, per_row_probabilities, reading_figure

log = logging.getLogger(__name__)


def chosen_indices(index: object, size: int) -> list[int]:
    """`index=4` or `index=[4,7,11]` as a list of valid indices into a split of `size` images."""
    indices = list(index) if isinstance(index, ListConfig | list | tuple) else [index]
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < size:
            raise UserError(
                f"invalid value index={i!r}: index must be an integer in [0, {size - 1}] or a list of them "
                "(e.g. index=4 or index=[4,7,11])"
            )
    if not indices:
        raise UserError("index=[] chooses no digit: give at least one (e.g. index=4) or wrong=<N>")
    return indices


def most_confidently_wrong(model: RowLSTMModule, images: Tensor, labels: Tensor, n: int, batch_size: int) -> list[int]:
    """Indices of the (at most) `n` images the model gets wrong with the highest probability on its answer."""
    logits, _ = all_logits(model, DataLoader(TensorDataset(images, labels), batch_size=batch_size))
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    wrong = (predicted != labels).nonzero().squeeze(1)
    return wrong[confidence[wrong].argsort(descending=True)[:n]].tolist()


def visualize(cfg: DictConfig) -> list[Path]:
    """Run visualize.py's config: write `<out>/reading_<split>_<index>.png` for each chosen digit, or with cell=true
    `<out>/cell_<split>_<index>.png`."""
    model = load_model(cfg.ckpt_path, cfg.device)
    layers = model.hparams.layer_num
    if cfg.cell and not -layers <= cfg.layer < layers:
        raise UserError(
            f"layer={cfg.layer} is out of range: this checkpoint's model has {layers} layers, so layer must be in "
            f"[{-layers}, {layers - 1}] (e.g. layer=-1, the top one)"
        )
    ensure_mnist(cfg.data.data_dir, cfg.data.download)
    images, labels = load_mnist(cfg.data.data_dir, train=cfg.split == "train")  # the official files

    if cfg.wrong:
        indices = most_confidently_wrong(model, images, labels, cfg.wrong, cfg.data.eval_batch_size)
        log.info(f"The {len(indices)} {cfg.split} digits the model gets wrong most confidently: {indices}")
    else:
        indices = chosen_indices(cfg.index, len(images))
    chosen = images[indices].to(model.device)
    probabilities = per_row_probabilities(model.net, chosen).cpu()
    readings = read_cell(model.net, chosen) if cfg.cell else None  # (nn.LSTM's cells: refused before any file)

    out = Path(cfg.out) if cfg.out else run_dir_of(cfg.ckpt_path) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (i, probs) in enumerate(zip(indices, probabilities, strict=True)):
        label, name = int(labels[i]), f"{cfg.split} digit #{i}"
        if readings is not None:
            one = CellReadings(*(field[:, k : k + 1] for field in readings))  # a batch of this one digit
            importance = row_importance(model.net, chosen[k])
            figure = cell_figure(images[i], probs, one, importance, label, cfg.layer, title=f"{name}: inside the cell")
        else:
            figure = reading_figure(images[i], probs, label, f"{name}: how the model reads it, row by row")
        path = out / f"{'cell' if cfg.cell else 'reading'}_{cfg.split}_{i:05d}.png"
        figure.savefig(path, dpi=cfg.dpi)
        answer = int(probs[-1].argmax())
        log.info(f"{cfg.split} #{i}: true {label}, predicted {answer} ({probs[-1, answer]:.1%}) -> {path}")
        written.append(path)
    return written
