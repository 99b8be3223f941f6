"""The speed suite in smoke mode (tiny sizes, one round), so that it cannot rot; its arithmetic by hand; its
figures from the results kept. Marked `bench`: python -m pytest -m bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from matplotlib.image import imread
from omegaconf import OmegaConf

from benchmarks import e2e, plots
from benchmarks.e2e import speed_overrides, steps_per_second
from benchmarks.memory import REPO
from benchmarks.run import AUTOGRAD_LOOP, F_DROPOUT, RESULTS, default_out, training_flops
from benchmarks.timing import summary
from mnist_lstm.fast import IMPLEMENTATIONS
from mnist_lstm.model.lstm import PLAIN, RowLSTMClassifier

pytestmark = pytest.mark.bench
PHASES = ["startup", "trainer_data", "to_first_step", "training", "validation", "fit_end", "test", "test_figures"]


def test_ratio_is_the_median_of_per_round_ratios() -> None:
    # Round 2 is slow for both (a noisy neighbour): per-round ratios are 2, 2, 2, so the ratio is 2,
    # while the ratio of the medians would be 3.0 / 1.0.
    seconds = {"ours": [2.0, 20.0, 3.0, 4.0], "ref": [1.0, 10.0, 1.5, 2.0]}
    rows = summary(seconds, "ref")
    assert rows["ours"]["ratio"] == 2.0 and rows["ref"]["ratio"] == 1.0
    assert rows["ours"]["median_ms"] == pytest.approx(3500.0) and rows["ours"]["rounds"] == 4


def test_steps_per_second_leaves_out_the_warmup_and_the_pauses() -> None:
    assert steps_per_second([0.0, 5.0, 5.5, 6.0, 6.5], warmup=1) == pytest.approx(2.0)  # a slow first step
    # A validation of 1 s between two steps is left out; one before the window only in its part inside it.
    assert steps_per_second([0.0, 5.0, 6.5, 7.0, 7.5], warmup=1, pauses=[[5.2, 6.2]]) == pytest.approx(2.0)
    assert steps_per_second([0.0, 5.0, 5.5, 6.0, 6.5], warmup=1, pauses=[[4.0, 5.5], [9.0, 10.0]]) == pytest.approx(3.0)


def test_training_flops_count_the_gate_matmuls() -> None:
    # One layer: 28 steps of a (batch, 28 + H) x (28 + H, 4H) matmul, plus the classifier, x3 with backward.
    assert training_flops(hidden=4, layers=1, batch=2) == 3 * (2 * 28 * 2 * 16 * 32 + 2 * 2 * 4 * 10)


def test_smoke_run_writes_every_section(mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks.run", "--smoke", "--threads", "1", "--data-dir", str(mnist_dir)]
    result = subprocess.run([*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["torch_threads"] == 1 and results["matmul_gflops"]["fp32"] > 0 and not results["left_out"]

    variants = {(r["hidden"], r["layers"], r["variant"]) for r in results["train_step"]}
    at_tutorial = {"ours, autograd loop", "nn.LSTM, oneDNN off", "ours, F.dropout", "nn.LSTM, F.dropout"}
    everywhere = {"ours", "nn.LSTM"}
    assert variants == {(16, 2, name) for name in at_tutorial | everywhere} | {(16, 1, name) for name in everywhere}
    assert all(r["median_ms"] > 0 and r["ratio"] > 0 and r["gflops"] > 0 for r in results["train_step"])
    assert {r["ratio"] for r in results["train_step"] if r["variant"] == "nn.LSTM"} == {1.0}

    inference = {r["variant"]: r for r in results["inference"]}
    assert set(inference) == {"ours", "nn.LSTM", "ours-plain", "cnn", "nn.LSTM, oneDNN off"}
    assert all(r["median_ms"] > 0 and r["batch"] == 64 for r in inference.values())
    assert all(r["peak_mib"] >= 0 for name, r in inference.items() if name != "nn.LSTM, oneDNN off")

    e = results["e2e"]
    assert e["train_py_steps_per_s"] > 0 and e["bare_steps_per_s"] > 0
    small = e["small"]
    assert (small["hidden"], small["steps"]) == (8, 6)
    assert small["overhead_ms_per_step"] == pytest.approx(
        1e3 / small["train_py_steps_per_s"] - 1e3 / small["bare_steps_per_s"]
    )
    whole = e["whole_run"]  # a whole train.py run, test and figures included, split into its phases
    assert whole["steps"] == 6 and min(whole[f"{name}_s"] for name in PHASES) >= 0 and whole["test_figures_s"] > 0
    phases = sum(whole[f"{name}_s"] for name in [*PHASES, "exit"])  # medians of one run: the wall time exactly
    assert phases == pytest.approx(whole["wall_s"])

    table = (out / "results.md").read_text()
    assert "Command: `python -m benchmarks.run --smoke" in table and "| 16 | 2 | 8 | ours |" in table
    assert "| cnn |" in table and "A small model" in table and "A whole train.py run" in table
    assert imread(out / "training-step.png").shape[:2] > (300, 800)  # the figures of the same results
    assert imread(out / "inference.png").shape[0] > 200
    assert not (out / "partial.json").exists()


def test_the_variants_change_one_thing_each() -> None:
    """The variant "ours, autograd loop" is the default ("fused") with autograd's loop: the same dropout masks for
    a seed, so the same numbers; "ours, F.dropout" is the default with F.dropout's masks: the plain model's numbers."""
    for variant, same_as in ((AUTOGRAD_LOOP, IMPLEMENTATIONS["fused"]), (F_DROPOUT, PLAIN)):
        results = []
        for implementation in (variant, same_as):
            torch.manual_seed(0)
            net = RowLSTMClassifier(hidden_size=6, layer_num=2, dropout=0.5).double().use(implementation)
            logits = net.train()(torch.rand(5, 28, 28, dtype=torch.double))
            logits.sum().backward()
            results.append((logits, [p.grad for p in net.parameters()]))
        torch.testing.assert_close(*results, rtol=0, atol=1e-12)


def test_the_bare_loops_whole_step_is_its_plain_step() -> None:
    """Op by op here (the GPU tests check the graph that replays such a step): the plain step's weights."""
    torch.manual_seed(0)
    images, labels = torch.rand(64, 28, 28), torch.randint(0, 10, (64,))
    whole_net = RowLSTMClassifier(hidden_size=8, layer_num=2, dropout=0.0)
    plain_net = RowLSTMClassifier(hidden_size=8, layer_num=2, dropout=0.0)
    plain_net.load_state_dict(whole_net.state_dict())
    whole = e2e.make_whole_step(whole_net, torch.optim.Adam(whole_net.parameters(), lr=1e-3, fused=True))
    initial = whole_net.classifier.weight.detach().clone()
    optimizer = torch.optim.Adam(plain_net.parameters(), lr=1e-3, fused=True)
    for _ in range(3):
        index = torch.randperm(64)[:16]
        logits = plain_net(images[index])
        loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch.testing.assert_close(whole(images[index], labels[index]), (loss.detach(), logits.detach()))
    for p, q in zip(whole_net.parameters(), plain_net.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert not torch.equal(whole_net.classifier.weight, initial)  # the steps did train


def test_bare_loop_runs_whole_steps(mnist_dir: Path) -> None:
    assert e2e.bare_loop_steps_per_second(12, 2, str(mnist_dir), "cpu", (4, 1, 32), cuda_graph="whole_step") > 0


def test_speed_overrides_spell_train_pys_speed_settings() -> None:
    """A conf/speed/ preset's name where one is exactly the setting, else the keys that differ from the default."""
    presets = {path.stem: dict(OmegaConf.load(path)) for path in (REPO / "conf" / "speed").glob("*.yaml")}
    assert presets["fused"] == {"loop": "fused", "compile": False, "cuda_graph": "none"}  # the default: no override
    for (cuda_graph, loop), name in e2e.SPEED_PRESETS.items():
        assert presets[name] == {"loop": loop, "compile": False, "cuda_graph": cuda_graph}
    assert speed_overrides() == []
    assert speed_overrides("forward_backward", "triton") == ["speed=graphed"]
    assert speed_overrides("whole_step", "triton") == ["speed=graphed_step"]
    assert speed_overrides("forward_backward") == ["speed.cuda_graph=forward_backward"]
    assert speed_overrides("none", "triton") == ["speed.loop=triton"]


GPU_RESULTS = RESULTS / "gpu-h100"  # the suite's latest GPU run


def test_the_suite_writes_into_a_folder_per_kind_of_machine() -> None:
    assert default_out("cpu") == RESULTS / "cpu" and default_out("cuda") == RESULTS / "gpu"
    assert {"cpu-xeon-2core", "gpu-h100", "gpu-h200"} <= {path.name for path in RESULTS.iterdir() if path.is_dir()}


def test_training_step_figure_shows_the_results_and_the_goal() -> None:
    """The H100 suite's results: left, every variant at the tutorial's shape, fastest first; right, the ratio of
    each variant measured at every shape, shape by shape, against the GPU goal."""
    results = json.loads((GPU_RESULTS / "results.json").read_text())
    rows = results["train_step"]
    left, right = plots.training_step_figure(results).axes

    tutorial = sorted(r["median_ms"] for r in rows if (r["hidden"], r["layers"]) == (256, 2))
    assert [bar.get_width() for bar in left.patches] == pytest.approx(tutorial)
    assert left.get_yticklabels()[0].get_text() == "nn.LSTM, CUDA graph"  # the fastest

    shapes = list(dict.fromkeys((r["hidden"], r["layers"]) for r in rows))
    variants = ["ours", "nn.LSTM", "ours, CUDA graph", "ours, Triton", "ours, Triton, CUDA graph"]
    ratio = {((r["hidden"], r["layers"]), r["variant"]): r["ratio"] for r in rows}
    assert [bar.get_height() for bar in right.patches] == pytest.approx(
        [ratio[shape, variant] for variant in variants for shape in shapes]
    )
    goal = [line for line in right.get_lines() if "goal" in line.get_label()]
    assert [line.get_ydata()[0] for line in goal] == [1.2] and right.get_yscale() == "log"
    low, high = right.get_ylim()  # every bar in view
    assert 0 < low < min(ratio.values()) and high > max(ratio.values())


def test_inference_figure_shows_each_models_memory_beside_the_tutorials() -> None:
    """On the GPU, beside the tutorial's reported 725 and 8,721 MiB, against the 150 MiB goal; on the CPU (peak
    RSS), no goal and no tutorial figures."""
    gpu = json.loads((GPU_RESULTS / "results.json").read_text())
    axes = plots.inference_figure(gpu).axes[0]
    measured = [r["peak_mib"] for r in gpu["inference"] if r["peak_mib"] is not None]
    assert [bar.get_width() for bar in axes.patches] == pytest.approx([*measured, 725.0, 8721.0])
    assert [line.get_xdata()[0] for line in axes.get_lines()] == [150.0]

    cpu = json.loads((RESULTS / "cpu-xeon-2core" / "results.json").read_text())
    axes = plots.inference_figure(cpu).axes[0]
    assert len(axes.patches) == len([r for r in cpu["inference"] if r["peak_mib"] is not None]) == 4
    assert not axes.get_lines() and "peak RSS added" in axes.get_xlabel()


def test_recipe_figure_adds_up_each_runs_phases_against_the_goal() -> None:
    rows = json.loads((RESULTS / "gpu-h200" / "recipe-h200.json").read_text())
    runs = [r for r in rows if "training_s" in r]
    axes = plots.recipe_figure(rows, "H200").axes[0]
    ends = {}  # bar row -> where its last phase ends
    for bar in axes.patches:
        y = round(bar.get_y() + bar.get_height() / 2)
        ends[y] = max(ends.get(y, 0.0), bar.get_x() + bar.get_width())
    assert [ends[y] for y in range(len(runs))] == pytest.approx([r["wall_s"] for r in runs], abs=1e-9)
    assert [line.get_xdata()[0] for line in axes.get_lines()] == [15.0]
    assert "bare loop, CUDA graph, Triton: 540 steps/s" in axes.get_title()
    failed = {"run": "bare loop, speed=graphed_step", "error": "RuntimeError('capture')"}
    title = plots.recipe_figure([failed, *rows], "H200").axes[0].get_title()
    assert "bare loop, speed=graphed_step: failed" in title and "540 steps/s" in title
