"""Reliability: every bad input ends in one line and writes nothing; interrupted runs resume exactly;
checkpoints are written atomically; a non-finite loss stops training before it is saved."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from mnist_lstm.data import EXTRACTED_SIZES, MNIST_FILES, MNISTDataModule, ResumableShuffle, ensure_mnist
from mnist_lstm.errors import UserError
from mnist_lstm.model.module import RowLSTMModule
from mnist_lstm.run.callbacks import CheckpointOnInterrupt, RestoreRNG, StopOnNonFiniteLoss
from mnist_lstm.run.checkpoint_io import AtomicCheckpointIO
from tests.helpers import REPO, compose_train, run_in_process, scalars

TRAIN_SCRIPT = REPO / "scripts" / "train.py"


def train_in_process(*argv: str) -> tuple[int, str]:
    return run_in_process("train.py", *argv)


# ---------------------------------------------------------------- bad data, written on demand


def data_with(mnist_dir: Path, tmp_path: Path, damage: str) -> Path:
    """A private copy of MNIST/raw/*.gz whose train-images file is damaged as `damage` says."""
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(mnist_dir / "MNIST" / "raw" / name, raw / name)
    target = raw / "train-images-idx3-ubyte.gz"
    content = target.read_bytes()
    if damage == "truncated":
        target.write_bytes(content[: len(content) // 2])
    elif damage == "corrupted":
        middle = len(content) // 2
        target.write_bytes(
            content[:middle] + bytes(b ^ 0xFF for b in content[middle : middle + 64]) + content[middle + 64 :]
        )
    elif damage == "other_file":  # a valid gzip of other bytes: only the checksum can tell
        target.write_bytes(gzip.compress(gzip.decompress(content)[:-1] + b"\x01", compresslevel=1))
    return data_dir


def checkpoint_like(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "text":
        path.write_text("not a checkpoint\n")
    return path


# Every bad input of issue 6: (arguments, expected start of the one error line). Placeholders:
# {data} a good data dir, {tiny} the tiny run's last.ckpt, {tiny_run} its run dir, {run} a fresh run dir.
BAD_INPUTS = {
    "unknown key": (["layer_nm=3"], "unknown key 'layer_nm' in 'layer_nm=3': did you mean layer_num"),
    "unknown nested key": (
        ["trainer.max_step=5"],
        "unknown key 'trainer.max_step' in 'trainer.max_step=5': did you mean max_steps",
    ),
    "unknown config choice": (["model=gru"], "model=gru is not a config of group 'model': choose one of lstm"),
    "unreadable override": (["layer_num=("], "cannot read the override 'layer_num=('"),
    "wrong type": (["hidden_size=abc"], "invalid value hidden_size='abc': hidden_size must be a valid integer"),
    "out of range": (["dropout=1.5"], "dropout=1.5 is out of range: dropout must be less than 1"),
    "out of range in a sweep": (["-m", "layer_num=2,0"], "layer_num=0 is out of range"),
    "conflicting trainer options": (
        ["+trainer.enable_checkpointing=false"],
        "the Trainer refused its options: Trainer was configured with `enable_checkpointing=False` but found "
        "`ModelCheckpoint` in callbacks list.",
    ),
    "data missing offline": (["data.data_dir={empty}", "data.download=false"], "MNIST is not in "),
    "data .gz truncated": (
        ["data.data_dir={truncated}", "data.download=false"],
        "{truncated}/MNIST/raw/train-images-idx3-ubyte.gz is truncated",
    ),
    "data .gz corrupted": (
        ["data.data_dir={corrupted}", "data.download=false"],
        "{corrupted}/MNIST/raw/train-images-idx3-ubyte.gz is corrupted",
    ),
    "data checksum mismatch": (
        ["data.data_dir={other_file}", "data.download=false"],
        "{other_file}/MNIST/raw/train-images-idx3-ubyte.gz is not the original file (checksum mismatch",
    ),
    "checkpoint missing": (["ckpt_path={tmp}/nowhere.ckpt"], "checkpoint not found: {tmp}/nowhere.ckpt"),
    "not a checkpoint": (["ckpt_path={text}"], "{text} is not a PyTorch checkpoint"),
    "checkpoint truncated": (["ckpt_path={truncated_ckpt}"], "checkpoint {truncated_ckpt} is truncated or corrupted"),
    "checkpoint of another architecture": (
        ["ckpt_path={tiny}", "layer_num=2", "hidden_size=32"],
        "{tiny} holds a model of another architecture: layer_num=3 in the checkpoint but 2 in the config, "
        "hidden_size=64 in the checkpoint but 32 in the config; resume it with layer_num=3 hidden_size=64",
    ),
    "checkpoint already at max_steps": (
        ["ckpt_path={tiny}"],
        "{tiny} is at step 40, which already reaches max_steps=40",
    ),
    "resume with fast_dev_run": (
        ["ckpt_path={tiny}", "max_steps=80", "debug=fdr"],
        "debug=fdr (trainer.fast_dev_run) saves nothing",
    ),
    "existing run directory": (["hydra.run.dir={tiny_run}"], "{tiny_run} already holds a run and is never overwritten"),
    "existing sweep directory": (
        ["-m", "hydra.sweep.dir={sweep}", "layer_num=1,2"],
        "{sweep} already holds a run and is never overwritten",
    ),
}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_bad_input_is_one_line_and_writes_nothing(
    case: str, mnist_dir: Path, tiny_run: tuple[Path, str], tmp_path: Path
) -> None:
    args, expected = BAD_INPUTS[case]
    tiny_dir = tiny_run[0]
    truncated_ckpt = tmp_path / "truncated.ckpt"
    truncated_ckpt.write_bytes((tiny_dir / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}\n")
    places = {
        "data": mnist_dir,
        "empty": tmp_path / "empty",
        "tmp": tmp_path,
        "text": checkpoint_like(tmp_path, "text"),
        "truncated_ckpt": truncated_ckpt,
        "tiny": tiny_dir / "checkpoints" / "last.ckpt",
        "tiny_run": tiny_dir,
        "sweep": tmp_path / "sweep",
    }
    for damage in ("truncated", "corrupted", "other_file"):
        if "{" + damage + "}" in " ".join(args):
            places[damage] = data_with(mnist_dir, tmp_path / damage, damage)
    args = [a.format(**places) for a in args]
    run_dir = tmp_path / "run"
    resumes_tiny_run = any(a.startswith(f"ckpt_path={tiny_dir}") for a in args)  # into its own directory
    if not resumes_tiny_run and not any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args):
        args.append(f"hydra.run.dir={run_dir}" if "-m" not in args else f"hydra.sweep.dir={run_dir}")
    if not any(a.startswith("data.data_dir=") for a in args):
        args.append(f"data.data_dir={mnist_dir}")
    before = snapshot(tiny_dir)

    status, stderr = train_in_process(*args)

    assert status == 1, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: " + expected.format(**places)), stderr
    assert "Traceback" not in stderr
    assert not run_dir.exists()  # nothing half-written
    assert snapshot(tiny_dir) == before  # and the run a checkpoint came from is untouched


def test_a_bad_override_fails_in_a_real_process_with_status_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "hiden_size=64", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown key 'hiden_size' in 'hiden_size=64': did you mean hidden_size=64? (--cfg job prints every key)"
    ]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- kill and resume


# 300 steps, validated (and last.ckpt saved) every 100: a signal sent as soon as a run's first last.ckpt
# exists lands with ~200 steps to go (a second or two of this tiny model's steps).
STEPS, VAL_EVERY = 300, 100
TINY = ["hidden_size=16", "layer_num=1", f"max_steps={STEPS}", f"val_every={VAL_EVERY}", "+trainer.limit_val_batches=1"]
TINY += ["test=false", "trainer.deterministic=true", "trainer.accelerator=cpu"]


def start(run_dir: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(TRAIN_SCRIPT), *TINY, f"data.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(
        [*command, *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def signal_once_saved(runs: dict[signal.Signals, subprocess.Popen], root: Path, timeout: float = 300) -> None:
    """Send each run its signal as soon as its first last.ckpt appears: all runs are watched at once, since
    one that starts faster than the others may be near its end while a sequential wait is on another."""
    deadline = time.monotonic() + timeout
    waiting = dict(runs)
    while waiting:
        for sig, process in list(waiting.items()):
            if (root / sig.name / "checkpoints" / "last.ckpt").exists():  # validated and saved at step 100
                process.send_signal(sig)
                del waiting[sig]
            else:
                assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"no last.ckpt from {[sig.name for sig in waiting]}"
        time.sleep(0.01)


@pytest.mark.slow  # five real training processes: minutes on 2 shared cores
def test_killed_runs_resume_to_the_same_weights_and_curves(mnist_dir: Path, tmp_path: Path) -> None:
    """A real run stopped mid-way by SIGTERM, by Ctrl-C (SIGINT) and by SIGKILL, each resumed from its
    last.ckpt, ends with exactly the weights, optimiser state and TensorBoard curves of a run never stopped."""
    full = start(tmp_path / "full", mnist_dir)
    stopped = {sig: start(tmp_path / sig.name, mnist_dir) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)}
    signal_once_saved(stopped, tmp_path)
    outputs = {sig: process.communicate(timeout=300)[0] for sig, process in stopped.items()}
    assert full.wait(timeout=300) == 0, full.communicate()[0][-3000:]

    expected_status = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}
    for sig, process in stopped.items():
        assert process.returncode == expected_status[sig], outputs[sig][-3000:]
        last = tmp_path / sig.name / "checkpoints" / "last.ckpt"
        stopped_at = torch.load(last, weights_only=True)["global_step"]
        assert VAL_EVERY <= stopped_at < STEPS
        if sig != signal.SIGKILL:  # a checkpoint written on the way out, and the command to continue
            assert f"{sig.name} at step {stopped_at}: saved {last}; continue with: python " in outputs[sig]

    resumed = [start_resume(tmp_path / sig.name) for sig in stopped]
    for process in resumed:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output[-3000:]

    reference = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    reference_curves = scalars(tmp_path / "full" / "tensorboard")
    for sig in stopped:
        final = torch.load(tmp_path / sig.name / "checkpoints" / "last.ckpt", weights_only=True)
        assert final["global_step"] == STEPS
        for name, tensor in reference["state_dict"].items():
            assert torch.equal(final["state_dict"][name], tensor), f"{sig.name}: {name} differs"
        for a, b in zip(
            final["optimizer_states"][0]["state"].values(),
            reference["optimizer_states"][0]["state"].values(),
            strict=True,
        ):
            assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
        # The TensorBoard curves continue in the same run: the same steps and values as the unbroken run.
        curves = scalars(tmp_path / sig.name / "tensorboard")
        for tag in ("train/loss", "train/acc", "val/acc", "val/acc_best"):
            assert curves[tag] == reference_curves[tag], f"{sig.name}: {tag}"


def start_resume(run_dir: Path) -> subprocess.Popen:
    """`python scripts/train.py ckpt_path=<run>/checkpoints/last.ckpt`: nothing else on the command line."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(TRAIN_SCRIPT), f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def fit_tiny(mnist_dir: Path, checkpoint_dir: Path, max_steps: int, ckpt_path: Path | None = None) -> RowLSTMModule:
    """A few steps of the real model and data, with the run's reliability callbacks; dropout and shuffling on."""
    L.seed_everything(0)
    datamodule = MNISTDataModule(str(mnist_dir), batch_size=32, eval_batch_size=100, download=False)
    model = RowLSTMModule(hidden_size=8, layer_num=1, dropout=0.5, optimizer=partial(torch.optim.Adam, lr=1e-2))
    trainer = L.Trainer(
        max_steps=max_steps,
        val_check_interval=5,
        limit_val_batches=1,
        callbacks=[ModelCheckpoint(checkpoint_dir, save_last=True), RestoreRNG()],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model


def test_a_run_resumed_mid_epoch_equals_an_unbroken_one(mnist_dir: Path, tmp_path: Path) -> None:
    """In-process and small (the slow test above kills real processes): 10 steps straight, or 5 steps
    then a resume from last.ckpt; same data order, dropout masks and optimiser state, so same weights."""
    unbroken = fit_tiny(mnist_dir, tmp_path / "unbroken", max_steps=10)
    fit_tiny(mnist_dir, tmp_path / "broken", max_steps=5)
    resumed = fit_tiny(mnist_dir, tmp_path / "broken", max_steps=10, ckpt_path=tmp_path / "broken" / "last.ckpt")
    for (name, a), b in zip(unbroken.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_shuffle_order_is_fixed_per_epoch_and_resumable() -> None:
    order = ResumableShuffle(100, seed=7)
    epoch0 = list(order)
    assert sorted(epoch0) == list(range(100)) and epoch0 != list(range(100))
    assert list(order) == epoch0  # the same epoch, the same order
    order.set_epoch(1)
    assert list(order) != epoch0
    resumed = ResumableShuffle(100, seed=7)
    resumed.resume_at(epoch=0, samples_done=30)
    assert list(resumed) == epoch0[30:]
    resumed.set_epoch(1)
    assert list(resumed) == list(order)  # the next epoch starts from its beginning


# ---------------------------------------------------------------- atomic saves


def test_an_interrupted_save_leaves_the_previous_checkpoint_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io_plugin = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_plugin.save_checkpoint({"global_step": 10, "weights": torch.ones(1000)}, path)

    def killed_half_way(obj: object, file: io.BufferedWriter) -> None:
        file.write(b"PK\x03\x04" + b"\x00" * 5000)  # the start of a zip archive, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        io_plugin.save_checkpoint({"global_step": 20, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()

    previous = torch.load(path, weights_only=True)
    assert previous["global_step"] == 10 and torch.equal(previous["weights"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    io_plugin.save_checkpoint({"global_step": 30, "weights": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 30


def test_the_trainer_saves_through_the_atomic_plugin() -> None:
    from hydra.utils import instantiate

    trainer = instantiate(compose_train("trainer.accelerator=cpu").trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# ---------------------------------------------------------------- numerics


class ExplodesAtStep7(L.LightningModule):
    """A linear model whose loss becomes NaN at its 7th optimiser step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_step == 6 else loss

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 4)), batch_size=4)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer_saving_every(save_every: int, folder: Path, stop: StopOnNonFiniteLoss, **options) -> L.Trainer:
    """A CPU Trainer of 20 steps that writes a checkpoint (and last.ckpt) into `folder` every `save_every` steps."""
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(folder, every_n_train_steps=save_every, save_last=True)
    return L.Trainer(
        max_steps=20,
        callbacks=[checkpoints, stop],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **options,
    )


def test_a_non_finite_loss_stops_before_anything_is_saved_over_the_last_good_checkpoint(tmp_path: Path) -> None:
    trainer = trainer_saving_every(5, tmp_path, StopOnNonFiniteLoss())
    with pytest.raises(UserError) as err:
        trainer.fit(ExplodesAtStep7())
    message = str(err.value)
    assert message.startswith(f"the training loss became nan at step 7; the last checkpoint, {tmp_path / 'last.ckpt'}")
    assert "lower lr (it is 0.1)" in message and "\n" not in message
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


@pytest.mark.parametrize(
    ("log_every", "save_every", "read_at", "stopped_at", "saved_at"),
    [
        (4, 5, 8, 7, 5),  # read on step 8, whose metrics are written, before its backward pass
        (50, 4, 8, 8, 4),  # read before the step-8 checkpoint is written: it is not written
    ],
)
def test_a_deferred_check_reads_the_loss_only_where_it_must_and_still_saves_nothing_after_it(
    tmp_path: Path, log_every: int, save_every: int, read_at: int, stopped_at: int, saved_at: int
) -> None:
    """The GPU's way (`deferred`, run here on the CPU): the losses are read on the steps whose metrics are
    written (every log_every_n_steps), before validation and before a checkpoint, not at every step; the stop
    still names the first bad step and every checkpoint is from before it."""
    stop = StopOnNonFiniteLoss(deferred=True)
    reads: list[int] = []
    check = stop._check
    stop._check = lambda trainer: (reads.append(len(stop._losses)), check(trainer))  # losses read per check
    trainer = trainer_saving_every(save_every, tmp_path, stop, log_every_n_steps=log_every)
    with pytest.raises(UserError) as err:
        trainer.fit(ExplodesAtStep7())
    assert str(err.value).startswith(f"the training loss became nan at step 7; the last checkpoint, {tmp_path}")
    assert trainer.global_step == stopped_at  # it ran on past the bad step, to the first read
    assert sum(reads) == read_at and max(reads) > 1  # every loss up to the read's step read once, several at a time
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == saved_at
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert not list(tmp_path.glob(f"*step={stopped_at}*"))


class SIGTERMInStep3(ExplodesAtStep7):
    """Sent SIGTERM, as a scheduler would, during its 3rd step."""

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("fast_dev_run", [0, 5])
def test_sigterm_saves_last_ckpt_after_the_step_and_exits_with_143(tmp_path: Path, fast_dev_run: int) -> None:
    """In-process and quick (the slow test kills real runs): the step finishes, last.ckpt is saved, and the
    SystemExit Lightning raises carries 143; fast_dev_run saves nothing. Another error saves nothing either."""
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}
    interrupt = CheckpointOnInterrupt(str(tmp_path))
    trainer = L.Trainer(max_steps=20, fast_dev_run=fast_dev_run, callbacks=[interrupt], **quiet)
    with pytest.raises(SystemExit) as stop:
        trainer.fit(SIGTERMInStep3())
    assert stop.value.code == 143
    assert [p.name for p in tmp_path.iterdir()] == ([] if fast_dev_run else ["last.ckpt"])
    if not fast_dev_run:
        assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3
    callbacks = [CheckpointOnInterrupt(str(tmp_path / "nan")), StopOnNonFiniteLoss()]
    with pytest.raises(UserError):  # the NaN at step 7
        L.Trainer(max_steps=20, callbacks=callbacks, **quiet).fit(ExplodesAtStep7())
    assert not (tmp_path / "nan").exists()


# ---------------------------------------------------------------- data


def test_a_half_extracted_file_is_extracted_again(mnist_dir: Path, tmp_path: Path) -> None:
    """torchvision writes the extracted files in place: a kill during extraction leaves half a file,
    which it would then read as if whole. ensure_mnist extracts it again from the verified .gz."""
    data_dir = data_with(mnist_dir, tmp_path, damage="none")
    ensure_mnist(data_dir, download=False)
    extracted = data_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    extracted.write_bytes(extracted.read_bytes()[:1000])
    ensure_mnist(data_dir, download=False)
    assert extracted.stat().st_size == EXTRACTED_SIZES[extracted.name]
