"""What every entry point shares: turning a UserError into one line on stderr, leaving no empty run."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from mnist_lstm.errors import UserError

T = TypeVar("T")


def _discard_if_empty(output_dir: Path) -> None:
    """Remove a run directory that holds nothing but Hydra's own files, so a refused run leaves no trace."""
    if not output_dir.is_dir():
        return
    leftovers = [p for p in output_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if not leftovers:
        shutil.rmtree(output_dir, ignore_errors=True)


def reports_user_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Wrap a Hydra task so that a UserError ends the run with `error: <message>` and exit status 1.

    In a multirun the error is re-raised instead, so Hydra records that job as failed and the
    sweep goes on with the others.
    """

    @functools.wraps(task)
    def wrapper(*args, **kwargs) -> T:
        try:
            return task(*args, **kwargs)
        except UserError as err:
            hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
            if hydra_cfg is not None:
                _discard_if_empty(Path(hydra_cfg.runtime.output_dir))
                if hydra_cfg.mode == RunMode.MULTIRUN:
                    raise
            sys.exit(f"error: {err}")

    return wrapper
