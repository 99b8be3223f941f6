"""Published recipes (conf/experiment/): the tutorial's exactly, the improved and the best within its budget, the
speedrun, and the ablation of the improved one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mnist_lstm.run.train import build_model
from tests.helpers import compose_train, run_script


def test_tutorial_experiment_is_exactly_the_tutorials_recipe() -> None:
    cfg = compose_train("experiment=tutorial")
    assert (cfg.layer_num, cfg.hidden_size, cfg.dropout, cfg.batch_size, cfg.max_steps) == (2, 256, 0.5, 128, 2000)
    assert cfg.model.forget_bias == 1.0 and cfg.model.cell == "custom"
    assert cfg.model.scheduler is None and cfg.trainer.gradient_clip_val is None
    assert cfg.data.val_size == 5000 and cfg.trainer.precision == "32-true"
    module = build_model(cfg)
    optimizer = module.optimizer_factory(module.parameters())
    assert type(optimizer).__name__ == "Adam"
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    assert group["fused"]  # the same update, one kernel (conf/model/lstm.yaml)
    assert [tuple(layer.gates.weight.shape) for layer in module.net.lstm.layers] == [(1024, 284), (1024, 512)]


def test_improved_experiment_keeps_the_budget_and_model_family() -> None:
    cfg = compose_train("experiment=improved")
    assert (cfg.batch_size, cfg.max_steps, cfg.model.cell) == (128, 2000, "custom")
    assert cfg.data.val_size == 5000  # no extra data: the same 55,000 training images
    module = build_model(cfg)
    optimizer = module.optimizer_factory(module.parameters())
    scheduler = module.scheduler_factory(optimizer)
    assert scheduler.total_steps == cfg.max_steps  # the schedule ends exactly with the budget


def test_best_experiment_is_improved_with_shifted_and_distorted_images_in_the_same_budget() -> None:
    best, improved = compose_train("experiment=best"), compose_train("experiment=improved")
    assert (best.data.shift, best.data.elastic, best.data.rotate) == (2, 1.0, 0.0)
    assert (improved.data.shift, improved.data.elastic, improved.data.rotate) == (0, 0.0, 0.0)
    assert (best.layer_num, best.hidden_size, best.batch_size, best.max_steps, best.data.val_size) == (
        2,
        256,
        128,
        2000,
        5000,
    )
    best.data.shift, best.data.elastic = 0, 0.0
    best.task_name = improved.task_name
    del best.hydra, improved.hydra  # (Hydra's record of the choices made)
    assert best == improved  # nothing else differs


def test_speedrun_is_the_same_model_small_and_fed_wide() -> None:
    cfg = compose_train("experiment=speedrun")
    assert (cfg.layer_num, cfg.hidden_size, cfg.batch_size, cfg.max_steps) == (1, 96, 512, 1000)
    assert cfg.model.cell == "custom" and cfg.data.val_size == 5000  # our cell; the same 55,000 training images
    module = build_model(cfg)
    assert [tuple(layer.gates.weight.shape) for layer in module.net.lstm.layers] == [(384, 124)]  # one fused linear
    scheduler = module.scheduler_factory(module.optimizer_factory(module.parameters()))
    assert scheduler.total_steps == cfg.max_steps and scheduler.optimizer.param_groups[0]["max_lr"] == cfg.lr


@pytest.mark.parametrize(
    ("variant", "changes"),
    [
        ("tutorial+onecycle", {"lr": 3e-3, "scheduler": True, "clip": None, "dropout": 0.5}),
        ("tutorial+clip", {"lr": 1e-3, "scheduler": False, "clip": 1.0, "dropout": 0.5}),
        ("tutorial+dropout0.2", {"lr": 1e-3, "scheduler": False, "clip": None, "dropout": 0.2}),
        ("improved-onecycle", {"lr": 1e-3, "scheduler": False, "clip": 1.0, "dropout": 0.2}),
        ("improved-clip", {"lr": 3e-3, "scheduler": True, "clip": None, "dropout": 0.2}),
        ("improved-dropout0.2", {"lr": 3e-3, "scheduler": True, "clip": 1.0, "dropout": 0.5}),
    ],
)
def test_each_ablation_changes_one_thing(variant: str, changes: dict) -> None:
    """conf/experiment/ablation/: improved's three changes, each alone on the tutorial and each taken from improved."""
    cfg = compose_train(f"experiment=ablation/{variant}")
    found = {
        "lr": cfg.lr,
        "scheduler": cfg.model.scheduler is not None,
        "clip": cfg.trainer.gradient_clip_val,
        "dropout": cfg.dropout,
    }
    assert found == changes and cfg.task_name == variant
    assert (cfg.batch_size, cfg.max_steps, cfg.hidden_size, cfg.layer_num) == (128, 2000, 256, 2)


def trained_metrics(experiment: str, mnist_dir: Path, tmp_path: Path) -> dict:
    """`python scripts/train.py experiment=<experiment> seed=1` run in full: its metrics.yaml."""
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py", f"experiment={experiment}", "seed=1", f"data.data_dir={mnist_dir}", f"hydra.run.dir={run_dir}",
        timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return yaml.safe_load((run_dir / "metrics.yaml").read_text())


@pytest.mark.recipe
def test_best_recipe_reaches_99_1_percent(mnist_dir: Path, tmp_path: Path) -> None:
    """The full 2,000-step best recipe on one seed (about 10 minutes on 2 CPU cores): docs/results.md."""
    metrics = trained_metrics("best", mnist_dir, tmp_path)
    assert metrics["test/acc"] >= 0.991, metrics


@pytest.mark.recipe
def test_improved_recipe_reaches_98_8_percent(mnist_dir: Path, tmp_path: Path) -> None:
    """The full 2,000-step improved recipe on one seed (about 10 minutes on 2 CPU cores)."""
    metrics = trained_metrics("improved", mnist_dir, tmp_path)
    assert metrics["test/acc"] >= 0.988, metrics


@pytest.mark.slow
def test_speedrun_reaches_98_9_percent(mnist_dir: Path, tmp_path: Path) -> None:
    """The whole speedrun on one seed (about a minute on 2 CPU cores): each seed of docs/results.md is >= 98.9%."""
    metrics = trained_metrics("speedrun", mnist_dir, tmp_path)
    assert metrics["test/acc"] >= 0.989, metrics


def test_results_aggregate_reads_a_run_and_tabulates(tiny_run, tmp_path, monkeypatch) -> None:
    """results/aggregate.py: a finished run becomes a CSV row, rows become the README's mean ± std table."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("aggregate", Path(__file__).parents[1] / "results" / "aggregate.py")
    aggregate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aggregate)
    monkeypatch.setattr(aggregate, "CSV", tmp_path / "recipes.csv")

    run_dir, _ = tiny_run
    (tmp_path / "summary.md").write_text("# a sweep's summary, beside its jobs\n")
    aggregate.add([run_dir, tmp_path, tmp_path / "summary.md"])  # tmp_path: no metrics.yaml; a file: no run
    (row,) = aggregate.load()
    metrics = yaml.safe_load((run_dir / "metrics.yaml").read_text())
    overrides = "layer_num=3 hidden_size=64 max_steps=40 val_every=20 lr=3e-3"
    assert row["command"] == f"python scripts/train.py {overrides}"
    # Its recipe: the task name and what the command changed (but the seed), so that runs of other settings
    # with the same seed are rows of their own, not taken for one already recorded.
    assert row["recipe"] == f"train {overrides}" and float(row["test_acc"]) == pytest.approx(
        metrics["test/acc"], abs=1e-6
    )
    aggregate.add([run_dir])
    assert len(aggregate.load()) == 1  # the same (recipe, seed) is not added twice
    aggregate.add([run_dir], recipe="tiny")
    assert [r["recipe"] for r in aggregate.load()] == [f"train {overrides}", "tiny"]
    assert f"| `tiny` | 1 (12345) | {100 * metrics['test/acc']:.2f}% (one seed: no spread)" in aggregate.table()
    aggregate.figure(None, tmp_path / "recipes.png", "title")
    assert (tmp_path / "recipes.png").stat().st_size > 1000
