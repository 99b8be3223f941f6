"""What every entry point shares: turning a UserError into one line on stderr, leaving no empty run."""

from __future__ import annotations

import atexit
import functools
import gc
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_lstm.cli.command_line import prepare_command_line
from mnist_lstm.errors import UserError

T = TypeVar("T")


def _discard_if_empty(output_dir: Path) -> None:
    """Remove a run directory that holds nothing but Hydra's own files, so a refused run leaves no trace."""
    if not output_dir.is_dir() or output_dir.resolve() == Path.cwd().resolve():
        return  # scripts that only read a checkpoint run in the current directory: never remove it
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


def hydra_main(config_name: str, config_path: str = "../conf", resumable: bool = False) -> Callable:
    """`@hydra.main` for this project's scripts, with `reports_user_errors` applied to the task.

    Before Hydra runs, the command line is checked against the composed config (`command_line.py`): a typo
    in a key, an unknown config choice, a bad value or an existing run directory end in one line, with
    nothing written. `resumable`: `ckpt_path=<run>/checkpoints/x.ckpt` continues that run (train.py).
    Ctrl-C outside of training ends with status 130 and one line instead of a traceback.
    """

    def decorator(task: Callable[[DictConfig], T]) -> Callable[[], T | None]:
        script = Path(sys.modules[task.__module__].__file__ or ".").resolve()
        config_dir = (script.parent / config_path).resolve()
        run = hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(
            reports_user_errors(task)
        )

        @functools.wraps(task)
        def main() -> T | None:
            # The scripts import with Python's cyclic garbage collector off: torch, Lightning, matplotlib and the
            # rest make ~470,000 long-lived objects and no garbage to speak of, and the collector's full passes
            # over them, as they accumulated, took 0.7-0.8 s of every start here. Imported, they are frozen: no
            # later pass scans them again (e.g. the one the test figures' garbage sets off, 0.27 s), and the
            # collector is back on for the run's own objects.
            gc.freeze()
            gc.enable()
            # At exit, Python's teardown would run the collector over what the run made: frozen too. (No file
            # waits on that collection: checkpoints and TensorBoard events are closed by then, the log by
            # logging's own exit handler, which still runs.)
            atexit.register(gc.freeze)
            try:
                sys.argv[1:] = prepare_command_line(config_dir, config_name, sys.argv[1:], resumable)
                return run()
            except UserError as err:
                sys.exit(f"error: {err}")
            except KeyboardInterrupt:
                print("error: interrupted (Ctrl-C)", file=sys.stderr)
                sys.exit(130)

        return main

    return decorator
