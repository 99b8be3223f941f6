"""The real CLI, small: scripts/train.py on the real MNIST for a few dozen steps, logs read back."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy

import mnist_lstm.model.module
from mnist_lstm.data import MNISTDataModule
from mnist_lstm.model.module import RowLSTMModule
from tests.helpers import quiet_cpu_trainer, run_script, scalars


def test_run_writes_checkpoints_and_resolved_config(tiny_run: tuple[Path, str]) -> None:
    run_dir, _ = tiny_run
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2, checkpoints
    assert (run_dir / ".hydra" / "config.yaml").read_text().count("layer_num: 3") == 1
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 40
    assert state["hyper_parameters"]["layer_num"] == 3 and state["hyper_parameters"]["hidden_size"] == 64
    assert sum(k.startswith("net.lstm.layers.") and k.endswith("gates.weight") for k in state["state_dict"]) == 3
    # The best validation accuracy so far travels with the checkpoint, so a resumed run keeps it.
    best = float(state["state_dict"]["val_acc_best.max_value"])
    assert best == pytest.approx(
        state["callbacks"][next(k for k in state["callbacks"] if "ModelCheckpoint" in k)]["best_model_score"].item()
    )


def test_tensorboard_scalars_are_logged_and_learning_happened(tiny_run: tuple[Path, str]) -> None:
    run_dir, _ = tiny_run
    logged = scalars(run_dir / "tensorboard")
    for tag in ["train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc"]:
        assert tag in logged, f"{tag} missing from {sorted(logged)}"
    assert [step for step, _ in logged["val/acc"]] == [19, 39]  # validated at steps 20 and 40
    # Step metrics are written every trainer.log_every_n_steps (10) steps, as Lightning writes them.
    assert [step for step, _ in logged["train/loss"]] == [9, 19, 29, 39]
    assert [step for step, _ in logged["train/acc"]] == [9, 19, 29, 39]
    train_loss = [v for _, v in logged["train/loss"]]
    assert train_loss[-1] < train_loss[0]  # it learns
    ((_, test_acc),) = logged["test/acc"]
    assert 0.3 < test_acc <= 1.0  # far above chance after 40 steps
    best = max(v for _, v in logged["val/acc"])
    assert logged["val/acc_best"][-1][1] == pytest.approx(best)
    # Hyperparameters are logged against real metrics, not Lightning's placeholder.
    assert "hparams/test_acc" in logged and "hp_metric" not in logged


def test_training_metrics_are_computed_and_logged_only_on_the_steps_lightning_writes(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """self.log costs CPU time at every call, so the training step logs only every log_every_n_steps steps."""
    logged, computed = [], []
    log = RowLSTMModule.log

    def spy(module: RowLSTMModule, name: str, *args: object, **kwargs: object) -> None:
        logged.append((module.trainer.global_step, name))
        log(module, name, *args, **kwargs)

    def accuracy(*args: object, **kwargs: object) -> torch.Tensor:
        computed.append(model.trainer.global_step)
        return multiclass_accuracy(*args, **kwargs)

    monkeypatch.setattr(RowLSTMModule, "log", spy)
    monkeypatch.setattr(mnist_lstm.model.module, "multiclass_accuracy", accuracy)
    model = RowLSTMModule(hidden_size=8, layer_num=1, optimizer=partial(torch.optim.Adam, lr=1e-3))
    data = MNISTDataModule(str(mnist_dir), batch_size=16, download=False)
    trainer = quiet_cpu_trainer(max_steps=12, log_every_n_steps=4)
    trainer.fit(model, data)
    assert logged == [(step, name) for step in (3, 7, 11) for name in ("train/loss", "train/acc")]
    assert computed == [3, 7, 11]
    assert trainer.callback_metrics["train/loss"] > 0


def test_run_says_where_it_writes_and_how_to_watch(tiny_run: tuple[Path, str]) -> None:
    run_dir, output = tiny_run
    assert f"Run directory: {run_dir}" in output
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in output
    metrics = (run_dir / "metrics.yaml").read_text()
    assert "test/acc" in metrics and "val/acc_best" in metrics
    # the libraries' known chatter is not among what the run says (mnist_lstm/quiet.py)
    assert "litlogger" not in output and "LeafSpec" not in output


def test_only_the_known_chatter_is_dropped() -> None:
    """Another FutureWarning, and Lightning's other lines, still reach the user."""
    import logging
    import warnings

    from mnist_lstm.quiet import drop_known_chatter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        drop_known_chatter()  # (its filter goes before the "default" just set; catch_warnings undoes both)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    record = lambda text: logging.LogRecord(rank_zero.name, logging.INFO, "", 0, text, None, None)  # noqa: E731
    assert not rank_zero.filter(record("💡 Tip: ... try installing [litlogger](https://pypi.org/project/litlogger/)"))
    assert rank_zero.filter(record("GPU available: False, used: False"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("layer_num=0", "error: layer_num=0 is out of range: layer_num must be greater than or equal to 1"),
        ("dropout=1.5", "error: dropout=1.5 is out of range: dropout must be less than 1"),
        ("hidden_size=abc", "error: invalid value hidden_size='abc'"),
    ],
)
def test_bad_override_is_one_line_and_leaves_no_run(override: str, message: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_script("train.py", override, f"hydra.run.dir={run_dir}", "data.data_dir=/nonexistent")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_missing_data_stops_with_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_script("train.py", f"data.data_dir={tmp_path / 'empty'}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MNIST is not in ") and "train-images-idx3-ubyte.gz" in last, result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_last_ckpt_is_written_at_every_validation_even_when_the_best_does_not_change(
    mnist_dir: Path, tmp_path: Path
) -> None:
    """last.ckpt is where a killed run resumes from: it must hold the latest validated step, not the best one's
    (Lightning's own save_last writes it only when the monitored metric improves). lr 1e-9: nothing improves."""
    run_dir = tmp_path / "run"
    result = run_script("train.py", "hidden_size=4", "layer_num=1", "max_steps=30", "val_every=10", "lr=1e-9",
                        "test=false", f"data.data_dir={mnist_dir}", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (best,) = (run_dir / "checkpoints").glob("step*.ckpt")
    assert best.name.startswith("step00010")  # validated at 10, 20 and 30; the score never rose after 10
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 30
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == sorted(["last.ckpt", best.name])


def test_label_smoothing_trains_towards_smoothed_targets_and_reports_the_plain_loss() -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    module = RowLSTMModule(hidden_size=8, layer_num=1, label_smoothing=0.1).eval()  # (no dropout: same logits)
    batch = (torch.rand(5, 28, 28), torch.tensor([0, 1, 2, 3, 4]))
    smoothed, logits, labels = module.model_step(batch, module.hparams.label_smoothing)
    plain, _, _ = module.model_step(batch)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, labels, label_smoothing=0.1))
    torch.testing.assert_close(plain, F.cross_entropy(logits, labels))
    assert smoothed.item() != plain.item()


def test_orthogonal_recurrent_weights() -> None:
    module = RowLSTMModule(hidden_size=16, layer_num=2, recurrent_init="orthogonal")
    for layer in module.net.lstm.layers:
        for gate in layer.gates.weight[:, layer.input_size :].detach().chunk(4, dim=0):
            torch.testing.assert_close(gate @ gate.T, torch.eye(16), rtol=0, atol=1e-5)
    uniform = RowLSTMModule(hidden_size=16, layer_num=1).net.lstm.layers[0]
    gate = uniform.gates.weight[:16, uniform.input_size :].detach()
    assert not torch.allclose(gate @ gate.T, torch.eye(16), atol=1e-2)


def test_a_run_refused_inside_its_task_leaves_no_folder_behind(tmp_path: Path) -> None:
    """Missing data is found once Hydra has made the run's folders (logs/train/runs/<time>/): all of them go."""
    result = run_script("train.py", f"data.data_dir={tmp_path / 'nodata'}", "data.download=false", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: MNIST is not in")
    assert list(tmp_path.iterdir()) == []
