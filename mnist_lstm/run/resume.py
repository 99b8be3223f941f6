"""What lets `ckpt_path=<run>/checkpoints/last.ckpt` continue a run exactly where it stopped.

Lightning restores the weights, the optimiser and scheduler, the step counters and the callbacks. Three
things it leaves to us:

- the run itself: a checkpoint inside `<run>/checkpoints/` is resumed *into that run*, with the overrides
  that run was started with (`<run>/.hydra/overrides.yaml`, in today's spelling), so the config, the
  checkpoints and the TensorBoard curves continue in the same place (here);
- the data order (`mnist_lstm.data.ResumableShuffle`);
- the RNG that dropout draws from (`callbacks.RestoreRNG`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from mnist_lstm.checkpoint import run_dir_of
from mnist_lstm.config.renamed import translate


def run_of_checkpoint(ckpt_path: str | Path) -> Path | None:
    """The Hydra run a checkpoint was written by (run_dir_of, holding `.hydra/overrides.yaml`), or None."""
    path = Path(ckpt_path).resolve()
    run_dir = run_dir_of(path)
    return run_dir if path.parent.name == "checkpoints" and (run_dir / ".hydra" / "overrides.yaml").is_file() else None


def resume_overrides(run_dir: Path, overrides: list[str], keys: list[str]) -> list[str]:
    """The command line that continues `run_dir`: its original overrides, then the new ones (`keys` are
    the keys the new overrides set, which replace the original's), then `hydra.run.dir=<run_dir>`."""
    original = translate([str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")])
    kept = [o for o in original if _key(o) not in set(keys) | {"ckpt_path"}]
    return [*kept, *overrides, f"hydra.run.dir={run_dir}"]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")
