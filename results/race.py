"""Recipes timed back to back: each seed of each recipe run as a user types it, interleaved, timed from outside.

    python results/race.py improved speedrun --seeds 1 2 3                 # -> results/race.csv, and the ratio

Runs `python scripts/train.py experiment=<recipe> seed=<seed>` for seed 1 of every recipe, then seed 2, ... (so a
machine that slows down or speeds up over the hour weighs on every recipe alike), each in a fresh process whose
whole wall time, start-up and the final test included, is what is recorded (`wall_s`). Nothing else should run
on the machine meanwhile. A row per run (aggregate.py's fields, its run read by aggregate.read_run) is appended to
the CSV; at the end the median wall time of each recipe, and its ratio to the first recipe's, are printed.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

from aggregate import FIELDS, load, read_run

REPO = Path(__file__).resolve().parents[1]


def race(recipes: list[str], seeds: list[int], out: Path, runs: Path, extra: list[str]) -> None:
    for seed in seeds:
        for recipe in recipes:
            run_dir = runs / f"{recipe}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
            command = [sys.executable, "scripts/train.py", f"experiment={recipe}", f"seed={seed}", *extra]
            print(f"{recipe} seed {seed}: {' '.join(command[1:])} ...", flush=True)
            start = time.perf_counter()
            done = subprocess.run([*command, f"hydra.run.dir={run_dir}"], cwd=REPO, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"{recipe} seed {seed} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
            row = {**read_run(run_dir), "wall_s": round(wall, 1)}
            print(
                f"  {wall:.1f} s, test/acc {100 * row['test_acc']:.2f}%, val/acc_best {100 * row['val_acc_best']:.2f}%"
            )
            with out.open("a", newline="") as f:  # row by row: an interrupted race keeps what it finished
                writer = csv.DictWriter(f, FIELDS)
                if f.tell() == 0:
                    writer.writeheader()
                writer.writerow(row)


def ratios(path: Path, recipes: list[str]) -> str:
    """Each recipe's median wall time over its rows in `path`, and its ratio to the first recipe's."""
    medians = {r: statistics.median(float(row["wall_s"]) for row in load(path) if row["recipe"] == r) for r in recipes}
    first = medians[recipes[0]]
    return "\n".join(f"{r}: median {m:.1f} s, {m / first:.3f} x {recipes[0]}" for r, m in medians.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="experiment names; ratios are to the first")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--csv", type=Path, default=Path(__file__).with_name("race.csv"))
    parser.add_argument("--runs", type=Path, default=REPO / "logs" / "race", help="where the runs' folders go")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run, e.g. data.data_dir=<dir>")
    args = parser.parse_args()
    race(args.recipes, args.seeds, args.csv, args.runs, args.extra)
    print(ratios(args.csv, args.recipes))


if __name__ == "__main__":
    main()
