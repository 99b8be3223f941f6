"""trainer=ddp: the configs, and a real 2-process DDP run on the CPU (gloo) with one output directory
and metrics averaged over both processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from mnist_lstm.data import MNISTDataModule
from mnist_lstm.model.module import RowLSTMModule
from tests.helpers import compose_train, run_script, scalars


def test_ddp_configs() -> None:
    gpu = compose_train("trainer=ddp").trainer
    assert (gpu.strategy, gpu.accelerator, gpu.devices, gpu.num_nodes) == ("ddp", "gpu", -1, 1)
    trainer = instantiate(compose_train("trainer=ddp_cpu").trainer)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2 and trainer.world_size == 2
    assert trainer.strategy.root_device.type == "cpu"


@pytest.mark.slow  # two processes start Lightning and gloo: the default suite keeps the configs' test
def test_two_process_ddp_run(mnist_dir: Path, tmp_path: Path) -> None:
    runs, cwd = tmp_path / "runs", tmp_path / "cwd"
    cwd.mkdir()
    run_dir = runs / "ddp"
    result = run_script(
        "train.py",
        "trainer=ddp_cpu",
        "layer_num=1",
        "hidden_size=16",
        "max_steps=6",
        "val_every=3",
        "+trainer.limit_val_batches=1",
        "callbacks.progress_bar.refresh_rate=0",
        "~callbacks.test_figures",  # the figures of the test digits take longer than this whole run
        f"data.data_dir={mnist_dir}",
        f"hydra.run.dir={run_dir}",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # One output directory for the run, written by both processes; nothing anywhere else.
    assert [p.name for p in runs.iterdir()] == ["ddp"] and not any(cwd.iterdir())
    assert "Final metrics" in (run_dir / "train_ddp_process_1.log").read_text()  # the second process ran
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert [p.name for p in (run_dir / "tensorboard").iterdir() if p.is_dir()] == []  # one TensorBoard run

    # The test metrics are those of the best checkpoint on all 10,000 test images, not on one process's half.
    metrics = OmegaConf.load(run_dir / "metrics.yaml")
    (best,) = (run_dir / "checkpoints").glob("step*.ckpt")
    model = RowLSTMModule.load_from_checkpoint(best, weights_only=True).eval()
    data = MNISTDataModule(data_dir=str(mnist_dir), download=False)
    data.setup("test")
    losses, correct = [], 0
    with torch.no_grad():
        for images, labels in data.test_dataloader():  # batches of 1,000: the mean of means is the mean
            logits = model(images)
            losses.append(F.cross_entropy(logits, labels))
            correct += (logits.argmax(1) == labels).sum().item()
    assert abs(metrics["test/acc"] - correct / 10_000) < 1e-6
    assert abs(metrics["test/loss"] - torch.stack(losses).mean().item()) < 1e-5

    logged = scalars(run_dir / "tensorboard")
    assert [step for step, _ in logged["val/acc"]] == [2, 5]
    assert abs(logged["test/acc"][-1][1] - metrics["test/acc"]) < 1e-6
