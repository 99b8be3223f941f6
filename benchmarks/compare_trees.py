"""Two checkouts' whole train.py runs, interleaved: where a change moved a run's wall time, phase by phase.

    git worktree add /tmp/before <commit>
    python -m benchmarks.compare_trees --before /tmp/before --data-dir /tmp/mnistdata --rounds 6 --out r.json

Each round runs the small model's 100-step run (validation, test, figures) once in each tree, in fresh
processes, alternating which goes first; every phase of `benchmarks.e2e.phases` is reported as the median over
rounds, with the median of the per-round ratios of the wall times and of the steps per second (after the first
20 steps, validations left out). `--model tutorial`: the tutorial's shape (2 x 256) instead, e.g.
`--model tutorial --steps 140 --rounds 6 --threads 0` for train.py's speed at that shape.

`--step`: instead of whole runs, the training step alone (benchmarks/alone.py): ours in each tree and `nn.LSTM`
(of this tree), each in a fresh process, interleaved, under each C allocator the machine has; the medians, and
the medians of the per-round ratios after/before and of each tree's ours to `nn.LSTM`:

    python -m benchmarks.compare_trees --before /tmp/before --step --hidden 256 --rounds 6 --out r.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import alone
from benchmarks.timing import matmul_gflops, ratio

REPO = Path(__file__).resolve().parents[1]
RUN = """
import json, sys
sys.path.insert(0, {tree!r})
import torch
torch.set_num_threads({threads} or torch.get_num_threads())
from benchmarks.e2e import run_train_script, steps_per_second
seconds, timeline = run_train_script({steps}, {data_dir!r}, "cpu", {shape}, "batch_size=128", "val_every={steps}")
seconds["steps_per_s"] = steps_per_second(timeline["ends"], min(20, {steps} // 2), timeline.get("validations", []))
print(json.dumps(seconds))
"""
STEP_BATCH = 128  # --step: the tutorial's batch
SHAPES = {"small": '"hidden_size=8", "layer_num=1"', "tutorial": '"hidden_size=256", "layer_num=2"'}


def whole_run(tree: Path, data_dir: str, steps: int, threads: int, model: str = "small") -> dict[str, float]:
    """One train.py run of `tree`'s code (its benchmarks.e2e and scripts), in a fresh interpreter."""
    code = RUN.format(tree=str(tree), data_dir=data_dir, steps=steps, threads=threads, shape=SHAPES[model])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the run of {tree} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(
    trees: dict[str, Path], data_dir: str, rounds: int, steps: int, threads: int, model: str = "small"
) -> dict[str, object]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for r in range(rounds):
        order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            runs[name].append(whole_run(tree, data_dir, steps, threads, model))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]['wall_s']:.2f} s" for n, v in runs.items()), flush=True)
    before, after = runs["before"], runs["after"]
    medians = {name: {k: statistics.median(run[k] for run in v) for k in v[0]} for name, v in runs.items()}
    wall = statistics.median(a["wall_s"] / b["wall_s"] for a, b in zip(after, before, strict=True))
    speed = statistics.median(a["steps_per_s"] / b["steps_per_s"] for a, b in zip(after, before, strict=True))
    return {
        "rounds": rounds,
        "steps": steps,
        "model": model,
        "medians": medians,
        "wall_ratio": wall,
        "steps_per_s_ratio": speed,
        "runs": runs,
    }


def step_alone(before: Path, after: Path, hidden: int, layers: int, rounds: int, calls: int = 20) -> list[dict]:
    """Per allocator: ours of each tree and nn.LSTM, one fresh process each per round, in the order A B C, C B A."""
    variants = {"ours, before": (before, "ours"), "ours, after": (after, "ours"), "nn.LSTM": (REPO, "nn.LSTM")}
    results = []
    for allocator in alone.ALLOCATORS:
        if why := alone.allocator_missing(allocator):
            print(f"left out: {why}", flush=True)
            continue
        seconds: dict[str, list[float]] = {label: [] for label in variants}
        for r in range(rounds):
            for label in list(variants) if r % 2 == 0 else list(variants)[::-1]:
                tree, name = variants[label]
                args = ("train", name, hidden, layers, STEP_BATCH, calls, 3, allocator, tree)
                seconds[label].append(alone.median_seconds_alone(*args))

        row = {
            "allocator": allocator,
            "ms": {label: 1000 * statistics.median(v) for label, v in seconds.items()},
            "after/before": ratio(seconds, "ours, after", "ours, before"),
            "before/nn.LSTM": ratio(seconds, "ours, before", "nn.LSTM"),
            "after/nn.LSTM": ratio(seconds, "ours, after", "nn.LSTM"),
            "seconds": seconds,
        }
        ms = row["ms"]
        print(
            f"{allocator}: before {ms['ours, before']:.1f} ms, after {ms['ours, after']:.1f} ms, nn.LSTM "
            f"{ms['nn.LSTM']:.1f} ms; after/before {row['after/before']:.3f}, to nn.LSTM before "
            f"{row['before/nn.LSTM']:.3f}, after {row['after/nn.LSTM']:.3f}",
            flush=True,
        )
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--after", type=Path, default=REPO, help="default: this checkout")
    parser.add_argument("--data-dir", default="data", help="holds MNIST/raw/")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each run (0: torch's default)")
    parser.add_argument("--model", choices=sorted(SHAPES), default="small", help="the model's shape")
    parser.add_argument("--step", action="store_true", help="the training step each alone, under each allocator")
    parser.add_argument("--hidden", type=int, default=256, help="with --step: the model's hidden size")
    parser.add_argument("--layers", type=int, default=2, help="with --step: its layer count")
    parser.add_argument("--out", type=Path, help="the runs and medians, as JSON")
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    command = " ".join([Path(sys.executable).name, "-m", "benchmarks.compare_trees", *(argv or sys.argv[1:])])
    if args.step:
        if args.threads:  # each fresh process runs with this process's thread count (alone.median_seconds_alone)
            torch.set_num_threads(args.threads)
        matmul = matmul_gflops(2048, 5, torch.device("cpu"))  # the machine's throughput, beside its ratios
        print(f"matmul 2048^3 fp32: {matmul:.0f} GFLOP/s", flush=True)
        rows = step_alone(trees["before"], trees["after"], args.hidden, args.layers, args.rounds)
        if args.out:
            shape = {"hidden": args.hidden, "layers": args.layers, "batch": STEP_BATCH}
            record = {"command": command, "matmul_gflops": matmul, "threads": torch.get_num_threads()} | shape
            args.out.write_text(json.dumps(record | {"rounds": args.rounds, "allocators": rows}, indent=2))
        return
    results = compare(trees, args.data_dir, args.rounds, args.steps, args.threads, args.model)
    results["command"] = command
    before, after = results["medians"]["before"], results["medians"]["after"]
    for key in before:
        print(f"{key:16s} before {before[key]:7.3f}  after {after[key]:7.3f}  {after[key] - before[key]:+.3f}")
    print(f"wall time, median of per-round ratios after/before: {results['wall_ratio']:.3f}")
    print(f"steps per second, median of per-round ratios after/before: {results['steps_per_s_ratio']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
