"""A callback that puts the test's pictures in TensorBoard's Images tab: how the model reads a few fixed
test digits row by row, and the confusion matrix of the whole test."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lstm.use.figures import confusion_figure, per_row_probabilities, reading_figure

log = logging.getLogger(__name__)

# A figure to draw: (TensorBoard tag, the function that builds it, its arguments, all on the CPU).
FigureJob = tuple[str, Callable[..., Figure], tuple[Any, ...]]


class TestFigures(L.Callback):
    """During `trainer.test`, count (true, predicted) pairs; at its end, log `test/confusion_matrix` and
    `test/reading_<index>` for each of `digits` (indices into the test set) to every TensorBoard logger."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, digits: Sequence[int] = (0, 1, 2), num_classes: int = 10, processes: int | None = None) -> None:
        self.digits = list(digits)
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.processes = processes

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = self.confusion.to(pl_module.device)
        self.confusion.reset()

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        self.confusion.update(outputs, batch[1])  # outputs: the predictions RowLSTMModule.test_step returns

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not writers or trainer.sanity_checking:
            return
        jobs: list[FigureJob] = [("test/confusion_matrix", confusion_figure, (self.confusion.compute().cpu(), "test"))]
        dataset = trainer.test_dataloaders.dataset
        digits = [i for i in self.digits if 0 <= i < len(dataset)]
        if digits:
            images, labels = dataset[digits]
            probabilities = per_row_probabilities(pl_module.net, images.to(pl_module.device)).cpu()
            for i, image, label, probs in zip(digits, images.cpu(), labels.tolist(), probabilities, strict=True):
                jobs.append((f"test/reading_{i:05d}", reading_figure, (image, probs, label, f"test digit #{i}")))
        # Each figure's PNG compression lets go of the GIL: in a thread as soon as it is drawn.
        logged, step = [], trainer.global_step
        with ThreadPoolExecutor() as compressor:
            for tag, pixels in draw(jobs, self.processes):
                for writer in writers:
                    logged.append(compressor.submit(writer.add_image, tag, pixels, step, dataformats="HWC"))
        for done in logged:
            done.result()  # raises what a thread raised


def draw(jobs: list[FigureJob], processes: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(tag, the figure drawn as (height, width, 3) bytes) for each job, in order.

    matplotlib holds the GIL while it draws, so threads would take turns: the figures are drawn at once in
    `processes` forked processes (default: one per figure, up to this process's CPUs), sent only the numbers to
    show. Off Linux (fork not assumed safe), with one process, or in a daemonic one, they are drawn here; so are
    the rest if the processes cannot start or one dies: figures are not worth failing a run that has trained.
    """
    if processes is None:
        processes = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    processes = min(processes, len(jobs))
    # (A daemonic process, e.g. a multiprocessing.Pool's worker running train(), may not start processes.)
    if processes <= 1 or not sys.platform.startswith("linux") or multiprocessing.current_process().daemon:
        yield from map(_draw, jobs)
        return
    drawn = 0
    try:
        fork = multiprocessing.get_context("fork")
        # torch computes on one thread in each (as DataLoader's workers do): OpenMP's pool does not survive a fork.
        with ProcessPoolExecutor(processes, fork, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for result in pool.map(_draw, jobs):
                yield result
                drawn += 1
    except (OSError, BrokenProcessPool) as err:  # no fork (memory), or a process killed (e.g. out of memory)
        log.warning(f"drawing the figures in {processes} processes failed ({err!r}); drawing the rest here")
        yield from map(_draw, jobs[drawn:])


def _draw(job: FigureJob) -> tuple[str, np.ndarray]:
    tag, build, arguments = job
    canvas = FigureCanvasAgg(build(*arguments))
    canvas.draw()
    return tag, np.array(canvas.buffer_rgba())[..., :3]
