"""The suite's results as figures, drawn beside its tables by every full run (`draw`): the training step against
nn.LSTM, the 10,000-image inference's memory, and on a GPU where the recipe's seconds go."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure  # no pyplot: figures drawn straight to files, whatever the backend
from matplotlib.ticker import FuncFormatter

TUTORIAL = (256, 2, 128)  # hidden, layers, batch
# The goals docs/speed.md states: the training step as a ratio to nn.LSTM, the recipe's wall time, the GPU
# inference's memory.
GOALS = {"cpu": 1.0, "cuda": 1.2}
RECIPE_GOAL_S = 15.0
INFERENCE_GOAL_MIB = {"cuda": 150.0}
# What the tutorial (TensorFlow 1.x) reported for the same 10,000 images on its GPU.
TUTORIAL_GPU_MIB = {"the tutorial's LSTM (as reported)": 725.0, "the tutorial's CNN (as reported)": 8721.0}
PHASES = {  # a recipe run's phases (benchmarks.e2e.phases), which add up to its wall time
    "startup_s": "start-up (imports, config, model)",
    "trainer_data_s": "Trainer, data loaded",
    "to_first_step_s": "to the first step",
    "training_s": "training: 2,000 steps",
    "validation_s": "validation",
    "fit_end_s": "best checkpoint loaded",
    "test_s": "test of 10,000",
    "test_figures_s": "test figures",
    "exit_s": "exit",
}
OURS_COLOURS = ["tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:olive", "tab:cyan", "tab:brown"]


def _shape(row: dict) -> tuple[int, int, int]:
    return row["hidden"], row["layers"], row["batch"]


def _hardware(machine: dict) -> str:
    return machine.get("gpu") or f"{machine['cpu']}, {machine['cores']} cores"


def _colours(variants: list[str]) -> dict[str, str]:
    """nn.LSTM's variants grey, ours in colours, the same in both panels."""
    ours = [v for v in dict.fromkeys(variants) if not v.startswith("nn.LSTM")]
    colours = {v: OURS_COLOURS[k % len(OURS_COLOURS)] for k, v in enumerate(ours)}
    return {v: colours.get(v, "tab:gray") for v in variants}


def training_step_figure(results: dict) -> Figure:
    """Left, every variant at the main shape (the tutorial's; median ms); right, each shape's ratio to nn.LSTM
    for the variants measured at every shape, with the goal."""
    rows, machine = results["train_step"], results["machine"]
    device = machine["device"]
    figure = Figure(figsize=(13, 5), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.25])

    colours = _colours([r["variant"] for r in rows])
    main = _shape(rows[0])  # the suite measures its main shape (the tutorial's) first, with every variant
    at_main = sorted((r for r in rows if _shape(r) == main), key=lambda r: r["median_ms"])
    names = [r["variant"] for r in at_main]
    bars = left.barh(names, [r["median_ms"] for r in at_main], color=[colours[n] for n in names])
    left.bar_label(bars, [f" {r['median_ms']:.1f} ms, {r['ratio']:.2f}×" for r in at_main], fontsize=8)
    left.invert_yaxis()  # the fastest on top
    left.set_xlim(0, 1.3 * max(r["median_ms"] for r in at_main))
    left.set_xlabel("median ms per training step (× nn.LSTM's)")
    hidden, layers, batch = main
    name = "the tutorial's shape" if main == TUTORIAL else "the main shape"
    left.set_title(f"{name}: hidden {hidden}, {layers} layers, batch {batch}", fontsize=10)

    shapes = list(dict.fromkeys(_shape(r) for r in rows))
    at = {(_shape(r), r["variant"]): r["ratio"] for r in rows}
    common = [v for v in dict.fromkeys(r["variant"] for r in rows) if all((s, v) in at for s in shapes)]
    width = 0.8 / max(1, len(common))
    for k, variant in enumerate(common):
        xs = [i + (k - (len(common) - 1) / 2) * width for i in range(len(shapes))]
        ratios = [at[s, variant] for s in shapes]
        bars = right.bar(xs, ratios, width, label=variant, color=colours[variant])
        right.bar_label(bars, [f"{r:.2f}" for r in ratios], fontsize=7)
    goal = GOALS.get(device, 1.0)
    right.axhline(goal, color="tab:red", linestyle="--", linewidth=1, label=f"goal: ≤ {goal:.1f}× nn.LSTM")
    right.set_xticks(range(len(shapes)), [f"hidden {h}\n{n} layer{'s' * (n > 1)}" for h, n, _ in shapes])
    low, high = min(at.values()), max(at.values())
    if high / low > 5:
        right.set_yscale("log")
        right.set_ylim(0.8 * low, 2 * high)  # room for the legend above the bars
        for axis in (right.yaxis.set_major_formatter, right.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda value, _: f"{value:g}"))
    else:
        right.set_ylim(0, 1.3 * high)
    right.set_ylabel("time ÷ nn.LSTM's (median of per-round ratios)")
    right.set_title(f"every shape, batch {batch}", fontsize=10)
    right.legend(fontsize=8)

    figure.suptitle(f"Training step (forward, backward, Adam) on {_hardware(machine)}, torch {machine['torch']}")
    figure.text(0.5, -0.02, f"{results['command']}", ha="center", fontsize=8, family="monospace")
    return figure


def inference_figure(results: dict) -> Figure:
    """The memory that predicting all 10,000 test images in one call adds, per model (log scale), with each one's
    time against nn.LSTM's; on a GPU beside what the tutorial reported, and the goal."""
    rows = [r for r in results["inference"] if r.get("peak_mib") is not None]
    device, machine = results["machine"]["device"], results["machine"]
    names = [r["variant"] for r in rows]
    mib = [r["peak_mib"] for r in rows]
    labels = [f" {r['peak_mib']:,.0f} MiB, {r['median_ms']:,.0f} ms ({r['ratio']:.2f}×)" for r in rows]
    colours = list(map(_colours(names).get, names))
    if device == "cuda":
        names += list(TUTORIAL_GPU_MIB)
        mib += list(TUTORIAL_GPU_MIB.values())
        labels += [f" {m:,.0f} MiB" for m in TUTORIAL_GPU_MIB.values()]
        colours += ["white"] * len(TUTORIAL_GPU_MIB)
    figure = Figure(figsize=(10, 0.45 * len(names) + 1.8), layout="constrained")
    axes = figure.subplots()
    bars = axes.barh(names, mib, color=colours, edgecolor="black", linewidth=0.5)
    axes.bar_label(bars, labels, fontsize=8)
    axes.set_xscale("log")
    axes.set_xlim(min(mib) / 2, max(mib) * 8)  # room for the labels
    axes.invert_yaxis()
    if device in INFERENCE_GOAL_MIB:
        goal = INFERENCE_GOAL_MIB[device]
        axes.axvline(goal, color="tab:red", linestyle="--", linewidth=1, label=f"goal: ≤ {goal:g} MiB")
        axes.legend(fontsize=8, loc="lower right")
    measure = rows[0]["memory"] if rows else "memory"
    axes.set_xlabel(f"MiB added ({measure}); the time × nn.LSTM's")
    axes.set_title(f"10,000 test images in one call, on {_hardware(machine)}", fontsize=10)
    return figure


def recipe_figure(rows: list[dict], title: str) -> Figure:
    """Each train.py run of the recipe as one bar of its phases, against the 15 s goal; in the title, the bare
    loops' steps per second, and the runs that failed."""
    runs = [r for r in rows if "training_s" in r]
    options = [r["run"].removeprefix("train.py").strip() or "no options (eager)" for r in runs]
    labels = [o + (f", pass {r['round']}" if "round" in r else "") for o, r in zip(options, runs, strict=True)]
    figure = Figure(figsize=(12, 0.45 * len(runs) + 2.2), layout="constrained")
    axes = figure.subplots()
    left = [0.0] * len(runs)
    colours = matplotlib.colormaps["tab10"].colors
    for (key, name), colour in zip(PHASES.items(), colours, strict=False):
        seconds = [r.get(key, 0.0) for r in runs]
        axes.barh(labels, seconds, left=left, label=name, color=colour)
        left = [a + b for a, b in zip(left, seconds, strict=True)]
    for y, run in enumerate(runs):
        axes.text(run["wall_s"] + 0.1, y, f"{run['wall_s']:.1f} s, {run['steps_per_s']:.0f} steps/s", va="center")
    axes.axvline(RECIPE_GOAL_S, color="tab:red", linestyle="--", label=f"goal: ≤ {RECIPE_GOAL_S:g} s")
    axes.invert_yaxis()
    axes.set_xlim(0, max(RECIPE_GOAL_S, *(r["wall_s"] for r in runs)) * 1.25)
    axes.set_xlabel("seconds, start to exit")
    axes.legend(fontsize=8, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    others = [  # the bare loops (training only), and any run that failed
        f"{r['run']}: " + ("failed" if "error" in r else f"{r['steps_per_s']:.0f} steps/s")
        for r in rows
        if "training_s" not in r
    ]
    axes.set_title(title + ("\n" + "; ".join(others) if others else ""), fontsize=10, pad=40)
    return figure


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def draw(path: Path) -> list[Path]:
    """The figures of benchmarks.run's results.json, written beside it."""
    results = json.loads(path.read_text())
    written = [save(training_step_figure(results), path.parent / "training-step.png")]
    written.append(save(inference_figure(results), path.parent / "inference.png"))
    if results.get("recipe"):
        title = f"The 2,000-step recipe on {_hardware(results['machine'])}"
        written.append(save(recipe_figure(results["recipe"], title), path.parent / "recipe.png"))
    return written
