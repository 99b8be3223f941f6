"""A library's chatter kept out of what the user reads: loggers held to a higher level for a moment, and two known
lines dropped for good (each matched by its own text, so every other warning is still shown)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(*loggers: str, level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, the named loggers say only what is at `level` or above."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, previous in levels.items():
            logging.getLogger(name).setLevel(previous)


def drop_known_chatter() -> None:
    """Lightning's advertisement for its cloud logger at every fit, and the FutureWarning torch raises at Lightning's
    own use of torch's LeafSpec (Lightning's code, not ours: Lightning-AI/pytorch-lightning issue 21326)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in str(record.msg)
    )
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
