"""Per-seed recipe results: record finished runs into recipes.csv, and print the README's table.

    python results/aggregate.py add logs/tutorial/multiruns/<date>/*   # append finished runs
    python results/aggregate.py table                                  # mean ± std per recipe

A run is read from its own files: `.hydra/config.yaml` (recipe, seed), `.hydra/overrides.yaml` (the command,
less data and log paths), `metrics.yaml` (val/test metrics of the checkpoint chosen on val/acc), and `train.log`
(wall time from its first to its last log line).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
from datetime import datetime
from pathlib import Path

import yaml

CSV = Path(__file__).with_name("recipes.csv")
FIELDS = ["recipe", "seed", "test_acc", "val_acc_best", "test_loss", "wall_s", "cell", "machine", "command"]


def _log_time(line: str) -> datetime:
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


def _recipe_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides, less where it kept its data and logs (not part of the recipe)."""
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    return [o for o in overrides if not o.split("=")[0].lstrip("+~").startswith(("data.data_dir", "paths.", "hydra."))]


def read_run(run_dir: Path) -> dict:
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    metrics = yaml.safe_load((run_dir / "metrics.yaml").read_text())
    log_lines = [line for line in (run_dir / "train.log").read_text().splitlines() if line.startswith("[20")]
    return {
        "recipe": config["task_name"],
        "seed": config["seed"],
        "test_acc": round(metrics["test/acc"], 6),
        "val_acc_best": round(metrics["val/acc_best"], 6),
        "test_loss": round(metrics["test/loss"], 6),
        "wall_s": round((_log_time(log_lines[-1]) - _log_time(log_lines[0])).total_seconds()),
        "cell": config["model"]["cell"],
        "machine": f"{platform.machine()} {len(os.sched_getaffinity(0))} cores",
        "command": " ".join(["python scripts/train.py", *_recipe_overrides(run_dir)]),
    }


def load() -> list[dict]:
    if not CSV.exists():
        return []
    with CSV.open() as f:
        return list(csv.DictReader(f))


def add(run_dirs: list[Path]) -> None:
    rows = load()
    known = {(r["recipe"], str(r["seed"])) for r in rows}
    for run_dir in run_dirs:
        if not (run_dir / "metrics.yaml").exists():
            print(f"skipped {run_dir}: no metrics.yaml (unfinished or failed run)")
            continue
        row = read_run(run_dir)
        if (row["recipe"], str(row["seed"])) not in known:
            rows.append(row)
            print(f"added {row['recipe']} seed {row['seed']}: test/acc {row['test_acc']:.4f}")
    with CSV.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def table() -> str:
    """One Markdown row per recipe: test accuracy over seeds as mean ± std, min, max; median wall time."""
    by_recipe: dict[str, list[dict]] = {}
    for row in load():
        by_recipe.setdefault(row["recipe"], []).append(row)
    lines = [
        "| recipe | seeds | test acc mean ± std | min | max | val acc best (mean) | wall time / run (median) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for recipe, rows in by_recipe.items():
        acc = [100 * float(r["test_acc"]) for r in rows]
        val = [100 * float(r["val_acc_best"]) for r in rows]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        wall = statistics.median(float(r["wall_s"]) for r in rows) / 60
        seeds = ", ".join(str(r["seed"]) for r in rows)
        lines.append(
            f"| `{recipe}` | {len(rows)} ({seeds}) | {statistics.mean(acc):.2f} ± {std:.2f}% "
            f"| {min(acc):.2f}% | {max(acc):.2f}% | {statistics.mean(val):.2f}% | {wall:.1f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("add", help="append finished run directories").add_argument("run_dirs", nargs="+", type=Path)
    sub.add_parser("table", help="print the Markdown table")
    args = parser.parse_args()
    if args.command == "add":
        add(args.run_dirs)
    print(table())


if __name__ == "__main__":
    main()
