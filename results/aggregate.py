"""Per-seed recipe results: record finished runs into a CSV (recipes.csv by default), print their table, draw them.

    python results/aggregate.py add logs/train/multiruns/<date>_<time>/*/       # append finished runs
    python results/aggregate.py add --recipe best logs/best/runs/*/             # ... under a name of your own
    python results/aggregate.py table                                       # mean ± std per recipe
    python results/aggregate.py --csv results/ablation.csv figure --out docs/ablation.png   # mean ± std, each seed

A run is read from its own files: `.hydra/config.yaml` (recipe, seed), `.hydra/overrides.yaml` (the command,
less data and log paths), `metrics.yaml` (val/test metrics of the checkpoint chosen on val/acc), and `train.log`
(wall time from its first to its last log line). A run's recipe is its task name (the experiment's) followed by
its other overrides than experiment and seed (`best data.elastic=1.0`): runs that differ in more than the seed
are other recipes. A (recipe, seed) already in the CSV is not added again.
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


def read_run(run_dir: Path, recipe: str | None = None) -> dict:
    """One CSV row from a finished run's files; `recipe`: its name instead of the one made from its command."""
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    overrides = _recipe_overrides(run_dir)
    variations = [o for o in overrides if o.split("=")[0] not in ("experiment", "seed")]
    metrics = yaml.safe_load((run_dir / "metrics.yaml").read_text())
    log_lines = [line for line in (run_dir / "train.log").read_text().splitlines() if line.startswith("[20")]
    return {
        "recipe": recipe or " ".join([config["task_name"], *variations]),
        "seed": config["seed"],
        "test_acc": round(metrics["test/acc"], 6),
        "val_acc_best": round(metrics["val/acc_best"], 6),
        "test_loss": round(metrics["test/loss"], 6),
        "wall_s": round((_log_time(log_lines[-1]) - _log_time(log_lines[0])).total_seconds()),
        "cell": config["model"]["cell"],
        "machine": f"{_cpu_name()}, {len(os.sched_getaffinity(0))} cores",
        "command": " ".join(["python scripts/train.py", *overrides]),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.machine()


def load(path: Path | None = None) -> list[dict]:
    path = path or CSV
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def add(run_dirs: list[Path], path: Path | None = None, recipe: str | None = None) -> None:
    path = path or CSV
    rows = load(path)
    known = {(r["recipe"], str(r["seed"])) for r in rows}
    finished = []
    for run_dir in (d for d in run_dirs if d.is_dir()):  # (a sweep's summary.* and multirun.yaml are no runs)
        if not (run_dir / "metrics.yaml").exists():
            print(f"skipped {run_dir}: no metrics.yaml (unfinished or failed run)")
            continue
        finished.append(read_run(run_dir, recipe))
    for row in sorted(finished, key=lambda r: (r["recipe"], int(r["seed"]))):  # in order, however the shell listed them
        if (row["recipe"], str(row["seed"])) not in known:
            rows.append(row)
            print(f"added {row['recipe']} seed {row['seed']}: test/acc {row['test_acc']:.4f}")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def by_recipe(path: Path | None = None) -> dict[str, list[dict]]:
    """The rows of `path` grouped by recipe, in the order the recipes first appear."""
    grouped: dict[str, list[dict]] = {}
    for row in load(path):
        grouped.setdefault(row["recipe"], []).append(row)
    return grouped


def table(path: Path | None = None) -> str:
    """One Markdown row per recipe: test accuracy over seeds as mean ± std, min, max; median wall time."""
    lines = [
        "| recipe | seeds | test acc mean ± std | min | max | val acc best (mean) | wall time / run (median) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for recipe, rows in by_recipe(path).items():
        acc = [100 * float(r["test_acc"]) for r in rows]
        val = [100 * float(r["val_acc_best"]) for r in rows]
        spread = f" ± {statistics.stdev(acc):.2f}%" if len(acc) > 1 else "% (one seed: no spread)"
        wall = statistics.median(float(r["wall_s"]) for r in rows) / 60
        seeds = ", ".join(str(r["seed"]) for r in rows)
        lines.append(
            f"| `{recipe}` | {len(rows)} ({seeds}) | {statistics.mean(acc):.2f}{spread} "
            f"| {min(acc):.2f}% | {max(acc):.2f}% | {statistics.mean(val):.2f}% | {wall:.1f} min |"
        )
    return "\n".join(lines)


def figure(path: Path | None, out: Path, title: str) -> None:
    """Each recipe's test accuracy: every seed a dot, the mean ± std a bar, best mean at the top."""
    from matplotlib.figure import Figure  # (only for the figure: recording and the table need no matplotlib)

    groups = sorted(by_recipe(path).items(), key=lambda item: statistics.mean(float(r["test_acc"]) for r in item[1]))
    fig = Figure(figsize=(8, 0.45 * len(groups) + 1.4), layout="constrained")
    ax = fig.subplots()
    for y, (_, rows) in enumerate(groups):
        acc = [100 * float(r["test_acc"]) for r in rows]
        mean, std = statistics.mean(acc), statistics.stdev(acc) if len(acc) > 1 else 0.0
        ax.errorbar(mean, y, xerr=std, fmt="o", color="tab:blue", capsize=4, markersize=7)
        ax.scatter(acc, [y] * len(acc), color="tab:orange", s=14, zorder=3, alpha=0.8)
        label = f"{mean:.2f} ± {std:.2f}%" if len(acc) > 1 else f"{mean:.2f}% (one seed)"
        ax.annotate(label, (mean, y), xytext=(0, 7), textcoords="offset points", ha="center",
                    fontsize=8)  # fmt: skip
    ax.set_yticks(range(len(groups)), [f"{recipe} ({len(rows)})" for recipe, rows in groups])
    ax.set_xlabel("test accuracy, % (mean ± std over seeds; each seed a dot)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(groups) - 0.3)
    ax.set_title(title, fontsize=10)
    fig.savefig(out, dpi=100)
    print(f"Wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=None, help="the CSV of per-seed results (default recipes.csv)")
    sub = parser.add_subparsers(dest="command", required=True)
    adding = sub.add_parser("add", help="append finished run directories")
    adding.add_argument("run_dirs", nargs="+", type=Path)
    adding.add_argument("--recipe", help="the runs' recipe name (default: task name and overrides but the seed)")
    sub.add_parser("table", help="print the Markdown table")
    drawing = sub.add_parser("figure", help="draw each recipe's seeds and mean ± std")
    drawing.add_argument("--out", type=Path, required=True)
    drawing.add_argument("--title", default="2,000 steps of batch 128, 2 x 256 LSTM: test accuracy per recipe")
    args = parser.parse_args()
    if args.command == "add":
        add(args.run_dirs, args.csv, args.recipe)
    if args.command == "figure":
        figure(args.csv, args.out, args.title)
        return
    print(table(args.csv))


if __name__ == "__main__":
    main()
