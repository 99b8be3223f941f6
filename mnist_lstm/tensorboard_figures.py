"""A callback that puts the test's pictures in TensorBoard's Images tab: how the model reads a few fixed
test digits row by row, and the confusion matrix of the whole test."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lstm.figures import confusion_figure, per_row_probabilities, reading_figure


class TestFigures(L.Callback):
    """During `trainer.test` (train.py tests the best checkpoint after fitting), count (true, predicted)
    pairs; at its end, log `test/confusion_matrix` and `test/reading_<index>` for each of `digits`
    (indices into the test set) to every TensorBoard logger."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, digits: Sequence[int] = (0, 1, 2), num_classes: int = 10) -> None:
        self.digits = list(digits)
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = self.confusion.to(pl_module.device)
        self.confusion.reset()

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        _, labels = batch
        self.confusion.update(outputs, labels)  # outputs: the predictions RowLSTMModule.test_step returns

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not writers or trainer.sanity_checking:
            return
        # The figures are drawn here one after another (matplotlib holds the GIL); the PNG compression of each
        # (about a third of a figure's cost), which lets go of the GIL, runs in a thread meanwhile.
        logged, step = [], trainer.global_step
        with ThreadPoolExecutor() as compressor:
            for tag, figure in self._figures(trainer, pl_module):
                pixels = _rgb(figure)
                for writer in writers:
                    logged.append(compressor.submit(writer.add_image, tag, pixels, step, dataformats="HWC"))
        for done in logged:
            done.result()  # raises what a thread raised

    def _figures(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Iterator[tuple[str, Figure]]:
        """(tag, figure): the confusion matrix, then how the model reads each of `digits`, built one at a time."""
        yield "test/confusion_matrix", confusion_figure(self.confusion.compute(), "test")
        dataset = trainer.test_dataloaders.dataset
        digits = [i for i in self.digits if 0 <= i < len(dataset)]
        if not digits:
            return
        images, labels = dataset[digits]
        probabilities = per_row_probabilities(pl_module.net, images.to(pl_module.device))
        for index, image, label, probs in zip(digits, images, labels, probabilities, strict=True):
            yield f"test/reading_{index:05d}", reading_figure(image, probs, int(label), title=f"test digit #{index}")


def _rgb(figure: Figure) -> np.ndarray:
    """The figure drawn, as (height, width, 3) bytes."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]
