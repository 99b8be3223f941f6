"""The speed suite, one command:  python -m benchmarks.run  (--smoke: tiny sizes, one round).

Writes results.json (everything), results.csv (one row per measurement) and results.md (the tables the
README shows) into --out; by default benchmarks/results/cpu/ or benchmarks/results/gpu/ (the device measured).
The results kept in the repository lie in one folder per machine, benchmarks/results/<kind>-<machine>/
(cpu-epyc-2core, gpu-h100, gpu-h200): give such a folder as --out, or move the files there.

Variants are timed interleaved in this one process (benchmarks/timing.py) and compared by the median of
per-round ratios to nn.LSTM; the machine's matmul throughput is measured in the same run. On the CPU, ours and
nn.LSTM at the tutorial's shape are also timed each alone in a fresh process (benchmarks/alone.py), since in one
process they share the C allocator's state. On a CUDA machine the same command measures the GPU (cuDNN,
bf16-mixed, max_memory_allocated).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import alone, e2e, memory, plots
from benchmarks.steps import levers, train_step
from benchmarks.timing import interleaved, matmul_gflops, summary
from mnist_lstm.fast.nvml import skip_the_nvml_check_without_nvml
from mnist_lstm.model.lstm import RowLSTMClassifier

RESULTS = Path(__file__).resolve().parent / "results"  # one folder per kind of machine
REFERENCE = "nn.LSTM"
NO_ONEDNN = "oneDNN off"


@dataclass(frozen=True)
class Sizes:
    """What a run measures: the full suite, or the smoke mode the tests run."""

    shapes: tuple[tuple[int, int], ...]  # (hidden_size, layer_num); the first is the tutorial's
    batch: int
    matmul_n: int
    inference_batch: int
    inference_rounds: int
    e2e_steps: int
    e2e_warmup: int
    e2e_rounds: int
    e2e_model: tuple[int, int, int]  # hidden_size, layer_num, batch_size
    e2e_small: tuple[int, int, int, int]  # a model whose step is short, so the framework's cost per step shows;
    # hidden_size, layer_num, batch_size, steps
    whole_run_steps: int  # a whole train.py run of the small model (validation, test, figures): its fixed costs
    alone_calls: dict[str, tuple[int, int]]  # each mode's (timed calls, warmup calls) in a process of its own


FULL = Sizes(
    ((256, 2), (128, 2), (512, 2), (256, 1), (256, 3)),
    128,
    2048,
    10_000,
    3,
    40,
    8,
    2,
    (256, 2, 128),
    (8, 1, 128, 1200),
    100,
    {"train": (15, 5), "infer": (2, 1)},
)
SMOKE = Sizes(
    ((16, 2), (16, 1)), 8, 128, 64, 1, 6, 2, 1, (16, 1, 16), (8, 1, 16, 6), 6, {"train": (2, 1), "infer": (1, 1)}
)


def machine(device: torch.device) -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    info = {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "load_average_start": os.getloadavg()[0],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def training_flops(hidden: int, layers: int, batch: int, steps: int = 28, inputs: int = 28) -> float:
    """Matmul FLOPs of one training step: the forward's gate matmuls and classifier, x3 with the backward."""
    sizes = [inputs] + [hidden] * (layers - 1)
    forward = sum(2 * steps * batch * 4 * hidden * (size + hidden) for size in sizes) + 2 * batch * hidden * 10
    return 3.0 * forward


def train_variants(hidden: int, layers: int, sizes: Sizes, device: torch.device, args) -> dict[str, Callable]:
    """Each variant's training step. A model computes with IMPLEMENTATIONS[`implementation`]: "fused" is train.py's
    default (and on nn.LSTM, whose loop is its own, picks the dropout on its output: the same as ours); "triton"
    speed.loop=triton's; "plain" the model's own loop with F.dropout; the levers' are benchmarks.steps.LEVERS."""

    def model(cell: str = "custom", implementation: str = "fused", compile: bool = False) -> torch.nn.Module:
        torch.manual_seed(0)
        net = RowLSTMClassifier(hidden_size=hidden, layer_num=layers, dropout=0.5, cell=cell)
        with levers():
            net.use(implementation)
        if compile:
            net.lstm.compile()
        return net.to(device)

    variants = {"ours": train_step(model(), sizes.batch, device, False)}
    variants[REFERENCE] = train_step(model("torch"), sizes.batch, device, False)
    if device.type == "cuda":
        variants["ours, CUDA graph"] = train_step(model(), sizes.batch, device, False, cuda_graph=True)
        variants["ours, Triton"] = train_step(model(implementation="triton"), sizes.batch, device, False)
        variants["ours, Triton, CUDA graph"] = train_step(
            model(implementation="triton"), sizes.batch, device, False, cuda_graph=True
        )
    if (hidden, layers) == sizes.shapes[0]:  # the levers, at the tutorial's shape
        variants["ours, autograd loop"] = within(
            levers, train_step(model(implementation="autograd loop"), sizes.batch, device, False)
        )
        if args.compile:
            variants["ours, torch.compile"] = train_step(model(compile=True), sizes.batch, device, False)
        if device.type == "cpu":  # what nn.LSTM is without oneDNN's fused LSTM: PyTorch's own op-by-op loop
            variants[f"{REFERENCE}, {NO_ONEDNN}"] = within(
                without_onednn, train_step(model("torch"), sizes.batch, device, False)
            )
            # The CPU dropout lever: both wrappers' dropout back to F.dropout (nn.LSTM's own is F.dropout's anyway).
            variants["ours, F.dropout"] = within(
                levers, train_step(model(implementation="fused, F.dropout"), sizes.batch, device, False)
            )
            variants[f"{REFERENCE}, F.dropout"] = train_step(model("torch", "plain"), sizes.batch, device, False)
        if device.type == "cuda":
            variants["ours, bf16-mixed"] = train_step(model(), sizes.batch, device, True)
            variants["nn.LSTM, bf16-mixed"] = train_step(model("torch"), sizes.batch, device, True)
            variants["nn.LSTM, CUDA graph"] = train_step(model("torch"), sizes.batch, device, False, cuda_graph=True)
    return variants


def within(context: Callable[[], AbstractContextManager], call: Callable[[], None]) -> Callable[[], None]:
    """`call`, run inside a fresh `context()` each time (a lever switched for one variant only)."""

    def call_within() -> None:
        with context():
            call()

    return call_within


def without_onednn() -> AbstractContextManager:
    return torch.backends.mkldnn.flags(enabled=False)


def working(variants: dict[str, Callable], failures: list[str]) -> dict[str, Callable]:
    """The variants whose first call succeeds; each one that fails is noted in `failures` and left out
    (so that one lever that does not run on a machine cannot cost the whole suite's results)."""
    kept = {}
    for name, call in variants.items():
        try:
            call()
        except Exception as err:  # noqa: BLE001  (any failure of a variant is reported, not fatal)
            if name == REFERENCE:
                raise
            failures.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            print(f"left out {failures[-1]}", flush=True)
            continue
        kept[name] = call
    return kept


def run(args: argparse.Namespace) -> dict[str, object]:
    sizes = SMOKE if args.smoke else FULL
    rounds = 1 if args.smoke else args.rounds
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, object] = {"command": " ".join(["python -m benchmarks.run", *sys.argv[1:]])}
    results["machine"] = machine(device)
    started = time.time()

    peak = matmul_gflops(sizes.matmul_n, max(rounds, 3), device)
    results["matmul_gflops"] = {"n": sizes.matmul_n, "fp32": peak}
    if device.type == "cuda":
        results["matmul_gflops"]["bf16"] = matmul_gflops(sizes.matmul_n, max(rounds, 3), device, torch.bfloat16)
    print(f"matmul {sizes.matmul_n}^3 fp32: {peak:.0f} GFLOP/s", flush=True)

    results["train_step"], results["left_out"] = [], []
    for hidden, layers in sizes.shapes[:1] if args.train_step_only else sizes.shapes:
        variants = working(train_variants(hidden, layers, sizes, device, args), results["left_out"])
        seconds = interleaved(variants, rounds, device)
        flops = training_flops(hidden, layers, sizes.batch)
        for name, row in summary(seconds, REFERENCE).items():
            row.update(hidden=hidden, layers=layers, batch=sizes.batch, variant=name)
            row["gflops"] = flops / row["median_ms"] / 1e6
            row["percent_of_matmul"] = 100 * row["gflops"] / peak
            results["train_step"].append(row)
            print(f"train step h={hidden} L={layers} {name}: {row['median_ms']:.1f} ms x{row['ratio']:.2f}", flush=True)
        save_so_far(results, args.out)
    if args.train_step_only:
        return results
    if device.type == "cpu":
        results["alone"] = each_alone(sizes, 1 if args.smoke else args.alone_rounds, results["left_out"])
        save_so_far(results, args.out)

    results["inference"] = inference(sizes, rounds, device)
    save_so_far(results, args.out)
    results["e2e"] = end_to_end(sizes, args, device)
    save_so_far(results, args.out)
    if device.type == "cuda" and not args.smoke:
        results["recipe"] = e2e.recipe(args.data_dir, device.type, out=args.out / "recipe.json")
    results["machine"]["load_average_end"] = os.getloadavg()[0]
    results["seconds"] = time.time() - started
    return results


def save_so_far(results: dict[str, object], out: Path) -> None:
    """The sections measured so far, in case a later one fails or the run is stopped."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "partial.json").write_text(json.dumps(results, indent=2))


def each_alone(sizes: Sizes, rounds: int, left_out: list[str]) -> list[dict[str, object]]:
    """Ours against nn.LSTM at the tutorial's shape, each in a fresh process of its own (benchmarks/alone.py),
    under each C allocator this machine has: the training step, and the inference of all test images in one call.
    An allocator that is not installed is named in `left_out`."""
    hidden, layers = sizes.shapes[0]
    rows = []
    for allocator in alone.ALLOCATORS:
        if missing := alone.allocator_missing(allocator):
            left_out.append(f"each alone under {missing}")
            continue
        for mode, batch in (("train", sizes.batch), ("infer", sizes.inference_batch)):
            calls, warmup = sizes.alone_calls[mode]
            names = ["ours", REFERENCE]
            seconds = alone.interleaved_alone(mode, names, hidden, layers, batch, rounds, calls, warmup, allocator)
            for name, row in summary(seconds, REFERENCE).items():
                row.update(allocator=allocator, mode=mode, variant=name, hidden=hidden, layers=layers, batch=batch)
                rows.append(row)
                print(f"alone ({allocator}), {mode} {name}: {row['median_ms']:.1f} ms x{row['ratio']:.2f}", flush=True)
    return rows


def inference(sizes: Sizes, rounds: int, device: torch.device) -> list[dict[str, object]]:
    """All test images in one call: time against nn.LSTM, and the peak memory the call adds."""
    hidden, layers = sizes.shapes[0]
    names = ["ours", REFERENCE, "ours-plain", "cnn"]
    images = torch.rand(sizes.inference_batch, 28, 28, device=device)
    models = {}
    for name in names:
        torch.manual_seed(0)
        models[name] = memory.build(name, hidden, layers).to(device).eval()

    def call(name: str) -> Callable[[], None]:
        def forward() -> None:
            with torch.inference_mode():
                models[name](images)

        return forward

    calls = {name: call(name) for name in names}
    if device.type == "cpu":
        calls[f"{REFERENCE}, {NO_ONEDNN}"] = within(without_onednn, call(REFERENCE))
    seconds = interleaved(calls, min(rounds, sizes.inference_rounds), device)
    rows = []
    for name, row in summary(seconds, REFERENCE).items():
        if name not in models:  # the same model as another row: its memory is that row's
            row["peak_mib"] = None
        elif device.type == "cuda":
            row["peak_mib"] = memory.cuda_peak_mib(models[name], images)
            row["memory"] = "torch.cuda.max_memory_allocated"
        else:
            row["peak_mib"] = memory.cpu_peak_mib(name, hidden, layers, sizes.inference_batch)
            row["memory"] = "peak RSS added"
        row.update(variant=name, batch=sizes.inference_batch, hidden=hidden, layers=layers)
        rows.append(row)
        print(f"inference {name}: {row['median_ms']:.0f} ms x{row['ratio']:.2f}, {row['peak_mib']} MiB", flush=True)
    return rows


def end_to_end(sizes: Sizes, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """train.py against a bare loop, interleaved run by run: steps per second and the overhead (on a GPU
    also both with speed.cuda_graph=forward_backward); on the CPU then the same for a small model, in milliseconds
    per step."""
    hidden, layers, batch = sizes.e2e_model
    steps, warmup = sizes.e2e_steps, sizes.e2e_warmup
    if device.type == "cuda" and not args.smoke:  # GPU steps take milliseconds: time more of them
        steps, warmup = 400, 50
    rounds = 1 if args.smoke else sizes.e2e_rounds
    row: dict[str, object] = {"steps": steps, "hidden": hidden, "layers": layers, "batch": batch}
    for cuda_graph in ("none", "forward_backward") if device.type == "cuda" else ("none",):
        pair = script_against_bare(args.data_dir, device, (hidden, layers, batch), steps, warmup, rounds, cuda_graph)
        if cuda_graph != "none":
            row["cuda_graph"] = pair
        else:
            row.update(pair)
        print(
            f"end to end{' (CUDA graph)' if cuda_graph != 'none' else ''}: train.py "
            f"{pair['train_py_steps_per_s']:.2f} steps/s, bare {pair['bare_steps_per_s']:.2f}",
            flush=True,
        )
    if device.type == "cuda":  # the CUDA-graph pair above is the GPU's overhead measure (and gpu.sh's time is short)
        # and the same with speed.loop=triton's kernels (speed=graphed), then with the whole step in one graph
        # (speed=graphed_step, against the bare loop's whole step likewise); a failure must not cost the rest
        for key, cuda_graph in (("triton", "forward_backward"), ("whole_step", "whole_step")):
            try:
                row[key] = script_against_bare(
                    args.data_dir, device, (hidden, layers, batch), steps, warmup, rounds, cuda_graph, loop="triton"
                )
            except Exception as err:
                row[key] = {"error": repr(err)[-1500:]}
            print(f"end to end ({' '.join(e2e.speed_overrides(cuda_graph, 'triton'))}): {row[key]}", flush=True)
        return row
    *small, steps = sizes.e2e_small
    small_rounds = 1 if args.smoke else 2 * rounds  # the differences are a millisecond: more rounds
    pair = script_against_bare(args.data_dir, device, small, steps, min(50, steps // 3), small_rounds)
    row["small"] = {"hidden": small[0], "layers": small[1], "batch": small[2], "steps": steps, **pair}
    print(f"end to end, small model: {pair['overhead_ms_per_step']:.2f} ms of overhead per step", flush=True)
    row["whole_run"] = whole_run(args.data_dir, small, sizes.whole_run_steps, small_rounds)
    return row


def whole_run(data_dir: str, model: tuple[int, int, int], steps: int, rounds: int) -> dict[str, object]:
    """Where a whole train.py run of a small model spends its time on the CPU, median of `rounds` runs: start-up
    (imports, data, model), the steps, and the rest (last validation, test, the test figures, exit). These
    fixed costs are the same for any model; on a GPU they weigh against the recipe's 15 s."""
    hidden, layers, batch = model
    overrides = [f"hidden_size={hidden}", f"layer_num={layers}", f"batch_size={batch}", f"val_every={steps}"]
    runs = [e2e.run_train_script(steps, data_dir, "cpu", *overrides)[0] for _ in range(rounds)]
    row: dict[str, object] = {"hidden": hidden, "layers": layers, "batch": batch, "steps": steps, "rounds": rounds}
    row |= {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"whole train.py run, small model: {row}", flush=True)
    return row


def script_against_bare(
    data_dir: str,
    device: torch.device,
    model: tuple[int, int, int],
    steps: int,
    warmup: int,
    rounds: int,
    cuda_graph: str = "none",
    loop: str = "fused",
) -> dict[str, float]:
    """train.py and the bare loop, alternately, `rounds` times each: median steps per second, and the median
    over rounds of the overhead, in percent and in milliseconds per step. `cuda_graph` and `loop`: train.py's
    speed.cuda_graph and speed.loop, and the bare loop's likewise (with whole_step its whole step is one CUDA
    graph too)."""
    hidden, layers, batch = model
    overrides = [f"hidden_size={hidden}", f"layer_num={layers}", f"batch_size={batch}"]
    overrides += e2e.speed_overrides(cuda_graph, loop)
    script, bare = [], []
    for _ in range(rounds):
        script.append(e2e.train_script_steps_per_second(steps, warmup, data_dir, device.type, *overrides))
        bare.append(
            e2e.bare_loop_steps_per_second(
                steps,
                warmup,
                data_dir,
                device.type,
                hidden,
                layers,
                batch,
                cuda_graph != "none",
                loop=loop,
                whole_step=cuda_graph == "whole_step",
            )
        )
    pairs = list(zip(bare, script, strict=True))
    return {
        "train_py_steps_per_s": statistics.median(script),
        "bare_steps_per_s": statistics.median(bare),
        "overhead_percent": 100 * statistics.median(b / s - 1 for b, s in pairs),
        "overhead_ms_per_step": 1e3 * statistics.median(1 / s - 1 / b for b, s in pairs),
    }


def markdown(results: dict[str, object]) -> str:
    m = results["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads"
    lines = [
        f"Machine: {where}; torch {m['torch']}; matmul {results['matmul_gflops']['n']}^3 fp32: "
        f"{results['matmul_gflops']['fp32']:.0f} GFLOP/s; load average {m['load_average_start']:.1f} at the start, "
        f"{m.get('load_average_end', float('nan')):.1f} at the end.  ",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s).",
        "",
        "Training step (forward, backward, Adam; 28 steps x 28 inputs, dropout 0.5), ratio = median of per-round "
        "ratios to nn.LSTM:",
        "",
        "| hidden | layers | batch | variant | median ms | ratio | GFLOP/s | % of matmul |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results["train_step"]:
        lines.append(
            f"| {r['hidden']} | {r['layers']} | {r['batch']} | {r['variant']} | {r['median_ms']:.1f} | "
            f"{r['ratio']:.2f} | {r['gflops']:.0f} | {r['percent_of_matmul']:.0f} |"
        )
    if results.get("alone"):
        # (results from before the allocator variants have no "allocator": glibc's default, as then)
        by = {(r.get("allocator", "glibc"), r["mode"], r["variant"]): r for r in results["alone"]}
        first = results["alone"][0]
        lines += [
            "",
            f"Each alone in a fresh process, the processes interleaved (rounds: {first['rounds']}; hidden "
            f"{first['hidden']}, {first['layers']} layers; ratio = median of per-round ratios to nn.LSTM), under each "
            "C allocator (benchmarks/alone.py):",
            "",
            "| allocator | measure | ours ms | nn.LSTM ms | ratio |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for allocator in dict.fromkeys(key[0] for key in by):
            for mode, what in (("train", "training step, batch"), ("infer", "inference of")):
                ours, ref = by[(allocator, mode, "ours")], by[(allocator, mode, REFERENCE)]
                lines.append(
                    f"| {allocator} | {what} {ours['batch']:,} | {ours['median_ms']:.1f} | {ref['median_ms']:.1f} | "
                    f"{ours['ratio']:.2f} |"
                )
    first = results["inference"][0]
    lines += [
        "",
        f"Inference of {first['batch']:,} images in one call (hidden {first['hidden']}, {first['layers']} layers; "
        f"memory: {first['memory']}):",
        "",
        "| model | median ms | ratio | peak MiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in results["inference"]:
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {r['variant']} | {r['median_ms']:.0f} | {r['ratio']:.2f} | {peak} |")
    e = results["e2e"]
    lines += [
        "",
        f"End to end ({e['steps']} steps, hidden {e['hidden']}, {e['layers']} layers, batch {e['batch']}): "
        f"scripts/train.py {e['train_py_steps_per_s']:.2f} steps/s, bare PyTorch loop {e['bare_steps_per_s']:.2f} "
        f"steps/s: overhead {e['overhead_percent']:.1f}% ({e['overhead_ms_per_step']:.2f} ms per step).",
    ]
    for key, options in (
        ("cuda_graph", "speed.cuda_graph=forward_backward"),
        ("triton", "speed=graphed (the graph and speed.loop=triton)"),
        ("whole_step", "speed=graphed_step (speed.loop=triton; the bare loop's whole step graphed too)"),
    ):
        pair = e.get(key)
        if pair is None:
            continue
        lines[-1] += (
            f" With {options}: failed ({pair['error'][:200]})."
            if "error" in pair
            else f" With {options}: train.py {pair['train_py_steps_per_s']:.2f} steps/s, bare loop "
            f"{pair['bare_steps_per_s']:.2f} steps/s: overhead {pair['overhead_percent']:.1f}% "
            f"({pair['overhead_ms_per_step']:.2f} ms per step)."
        )
    if "small" in e:
        m = e["small"]
        lines[-1] += (
            f" A small model, whose step is short enough for the framework's cost to show (hidden {m['hidden']}, "
            f"{m['layers']} layer, batch {m['batch']}, {m['steps']} steps): train.py "
            f"{1e3 / m['train_py_steps_per_s']:.2f} ms per step, bare loop {1e3 / m['bare_steps_per_s']:.2f} ms: "
            f"{m['overhead_ms_per_step']:.2f} ms of overhead per step."
        )
    if "whole_run" in e:
        w = e["whole_run"]
        lines += [
            "",
            f"A whole train.py run of the small model ({w['steps']} steps; validation, the test of 10,000 images and "
            f"its figures; median of {w['rounds']}): {w['wall_s']:.1f} s from start to exit: start-up (imports, data, "
            f"model) {w['to_train_start_s']:.1f} s, the steps {w['steps_s']:.1f} s, the rest (last validation, test, "
            f"figures, exit) {w['after_steps_s']:.1f} s.",
        ]
    if "recipe" in results:
        lines += [
            "",
            "The 2,000-step tutorial recipe. train.py: start to exit, split into its phases: start-up (imports, "
            "config, data check, model), set-up (Trainer, data loaded and moved, sanity check), training (the steps, "
            "the CUDA graph's capture and the checkpoints included), validation (every 500 steps), test (the best "
            "checkpoint loaded, 10,000 images), its figures, exit; the bare loop: training only, data on the device:",
            "",
            "| run | wall s | start-up s | set-up s | training s | validation s | test s | figures s | exit s "
            "| steps/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results["recipe"]:
            if "error" in r:
                lines.append(f"| {r['run']} | failed | | | | | | | | |")
                continue
            if "startup_s" not in r:  # the bare loop: training only, no phases
                lines.append(f"| {r['run']} | {r['wall_s']:.1f} | | | | | | | | {r['steps_per_s']:.0f} |")
                continue
            phases = [r["startup_s"], r["trainer_data_s"] + r["to_first_step_s"], r["training_s"], r["validation_s"]]
            phases += [r["fit_end_s"] + r["test_s"], r["test_figures_s"], r["exit_s"]]
            cells = " | ".join(f"{v:.1f}" for v in phases)
            lines.append(f"| {r['run']} | {r['wall_s']:.1f} | {cells} | {r['steps_per_s']:.0f} |")
    if results.get("left_out"):
        lines += ["", "Left out (failed or missing on this machine): " + "; ".join(results["left_out"])]
    return "\n".join(lines) + "\n"


def write(results: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    rows = [{"section": "train_step", **r} for r in results["train_step"]]
    rows += [{"section": "alone", **r} for r in results.get("alone", [])]
    rows += [{"section": "inference", **r} for r in results["inference"]]
    e2e_row = dict(results["e2e"])
    small = e2e_row.pop("small", None)
    whole = e2e_row.pop("whole_run", None)
    rows.append({"section": "e2e", **e2e_row})
    if small is not None:
        rows.append({"section": "e2e_small", **small})
    if whole is not None:
        rows.append({"section": "whole_run", **whole})
    fields = sorted({key for row in rows for key in row})
    with open(out / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(markdown(results))
    plots.draw(out / "results.json")  # training-step.png (and, on a GPU, recipe.png)
    (out / "partial.json").unlink(missing_ok=True)


def default_out(device: str) -> Path:
    """benchmarks/results/<kind>/: one folder per kind of machine, beside the kept results' (cpu-epyc-2core, ...)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return RESULTS / ("gpu" if device == "cuda" else "cpu")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round: does everything run?")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the training-step timings")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile on CPU)")
    parser.add_argument(
        "--train-step-only",
        action="store_true",
        help="only the training step at the tutorial's shape (e.g. with --compile)",
    )
    parser.add_argument(
        "--alone-rounds", type=int, default=5, help="rounds of the each-in-its-own-process comparison (CPU)"
    )
    parser.add_argument("--data-dir", default="data", help="holds MNIST/raw/ (for the end-to-end runs)")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the results go (default: benchmarks/results/<kind>/, kind cpu or gpu: the device measured)",
    )
    args = parser.parse_args(argv)
    args.out = args.out or default_out(args.device)
    skip_the_nvml_check_without_nvml()  # the training steps timed here as train.py runs them
    results = run(args)
    if args.train_step_only:  # a partial run: its JSON only, the tables stay those of the last full run
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_step.json").write_text(json.dumps(results, indent=2))
        (args.out / "partial.json").unlink(missing_ok=True)
        print(json.dumps(results["train_step"], indent=1))
        return
    write(results, args.out)
    print(markdown(results))
    print(f"wrote {args.out}/results.json, results.csv, results.md")


if __name__ == "__main__":
    main()
