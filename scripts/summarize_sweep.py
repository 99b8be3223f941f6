"""Rebuild the summary of a finished (or interrupted) sweep from its directory:

    python scripts/summarize_sweep.py logs/train/multiruns/2024-05-01_12-00-00 [--metric val/acc_best] [--mode max]

writes summary.csv, summary.md and summary.png into that directory and prints the Markdown table.
"""

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from mnist_lstm.cli import reports_user_errors
from mnist_lstm.errors import UserError
from mnist_lstm.run.sweep import read_sweep, summarize


def sweep_metric(sweep_dir: Path, default: str = "val/acc_best") -> str:
    """The metric the sweep optimised (`optimized_metric` of its config), or `default`."""
    for path in [sweep_dir / "multirun.yaml", *sorted(sweep_dir.glob("*/.hydra/config.yaml"))]:
        if path.is_file() and OmegaConf.load(path).get("optimized_metric"):
            return str(OmegaConf.load(path).optimized_metric)
    return default


@reports_user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the directory a multirun printed (hydra.sweep.dir)")
    parser.add_argument("--metric", help="the metric to rank by (default: the sweep's optimized_metric)")
    parser.add_argument("--mode", choices=["max", "min"], default="max", help="whether higher or lower is better")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir() or read_sweep(args.sweep_dir).jobs.empty:
        raise UserError(
            f"{args.sweep_dir} holds no sweep jobs (sub-directories with .hydra/overrides.yaml): "
            "pass the directory a multirun printed, e.g. logs/train/multiruns/<date>_<time>"
        )
    print(summarize(args.sweep_dir, args.metric or sweep_metric(args.sweep_dir), args.mode))
    print(f"Summary written to {args.sweep_dir}/summary.{{csv,md,png}}")


if __name__ == "__main__":
    main()
