"""Loggers held to a higher level for a moment: a library's chatter kept out of what the user reads."""

from __future__ import annotations

import contextlib
import logging
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
