"""Checkpoints: the model rebuilt from the checkpoint's own hyper_parameters, and every bad file refused in one line,
including one crafted to run code when unpickled."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from mnist_lstm.checkpoint import load_checkpoint, load_model, run_dir_of
from mnist_lstm.errors import UserError
from mnist_lstm.model.module import RowLSTMModule
from tests.helpers import REPO, run_script


class RunsCommand:
    """What an attacker pickles: unpickling it calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def last_ckpt(tiny_run: tuple[Path, str]) -> Path:
    return tiny_run[0] / "checkpoints" / "last.ckpt"


def test_model_is_rebuilt_from_the_checkpoint_itself(last_ckpt: Path) -> None:
    model = load_model(last_ckpt)
    assert isinstance(model, RowLSTMModule) and not model.training
    lstm = model.net.lstm
    assert len(lstm.layers) == 3 and lstm.hidden_size == 64  # the tiny run's, not the config defaults (2, 256)
    saved = torch.load(last_ckpt, weights_only=True)["state_dict"]
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert run_dir_of(last_ckpt) == last_ckpt.parent.parent.resolve()


def test_our_checkpoints_need_no_global_beyond_the_weights_only_allowlist(tiny_run: tuple[Path, str]) -> None:
    for ckpt in (tiny_run[0] / "checkpoints").glob("*.ckpt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(ckpt) == []
        assert load_checkpoint(ckpt)["hyper_parameters"]["layer_num"] == 3


def test_a_checkpoint_crafted_to_run_code_is_refused_without_running_it(last_ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.ckpt"
    checkpoint = torch.load(last_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["hidden_size"] = RunsCommand(f"touch {marker}")
    torch.save(checkpoint, crafted)

    with pytest.raises(UserError) as err:
        load_model(crafted)
    message = str(err.value)
    assert message.startswith(f"refused to load {crafted}: it asks to run code when loaded") and "system" in message
    assert "\n" not in message
    assert not marker.exists()
    # The file is really dangerous: a plain, unsafe torch.load runs the command.
    torch.load(crafted, weights_only=False)
    assert marker.exists()


def _bad_files(tmp: Path, last_ckpt: Path) -> dict[str, tuple[Path, str]]:
    data = last_ckpt.read_bytes()
    (tmp / "empty.ckpt").write_bytes(b"")
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save(torch.zeros(3), tmp / "tensor.ckpt")
    foreign = torch.load(last_ckpt, weights_only=True)
    foreign["hyper_parameters"]["hidden_size"] = 32  # weights of 64 units
    torch.save(foreign, tmp / "mismatch.ckpt")
    (tmp / "run" / "checkpoints").mkdir(parents=True)
    return {
        "missing": (tmp / "nowhere.ckpt", "checkpoint not found: "),
        "empty": (tmp / "empty.ckpt", "is empty (0 bytes)"),
        "truncated": (tmp / "truncated.ckpt", "is truncated or corrupted"),
        "text": (tmp / "notes.ckpt", "is not a PyTorch checkpoint"),
        "not ours": (tmp / "tensor.ckpt", "is a PyTorch file but not a checkpoint of this project's model"),
        "mismatch": (tmp / "mismatch.ckpt", "does not fit this project's model"),
        "directory": (tmp / "run", "is a directory, not a checkpoint file"),
    }


def test_bad_files_are_refused_in_one_line(last_ckpt: Path, tmp_path: Path) -> None:
    for case, (path, expected) in _bad_files(tmp_path, last_ckpt).items():
        with pytest.raises(UserError) as err:
            load_model(path)
        message = str(err.value)
        assert expected in message and str(path) in message, (case, message)
        assert "\n" not in message
    with pytest.raises(UserError, match="no checkpoint given: pass ckpt_path="):
        load_model(None)


LEGACY_RUN = REPO / "tests" / "fixtures" / "legacy_run"  # written by main at 79764ca, before conf/speed/ (its README)


def test_a_checkpoint_of_the_version_before_the_speed_settings_loads_evaluates_and_resumes(
    mnist_dir: Path, tmp_path: Path
) -> None:
    """That version saved the speed switches as hyperparameters (fused, compile, cuda_graph, triton), and its run
    was started with `model.fused=false`: the model still loads, evaluates, and resumes into its own run, the old
    override read as today's speed.loop=plain."""
    saved = torch.load(LEGACY_RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert {"fused", "compile", "cuda_graph", "triton"} <= saved["hyper_parameters"].keys()  # (what it is)
    model = load_model(LEGACY_RUN / "checkpoints" / "last.ckpt")
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in model.state_dict().items())

    run = shutil.copytree(LEGACY_RUN, tmp_path / "legacy_run")
    result = run_script("eval.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"data.data_dir={mnist_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "eval" / "last.json").read_text())["images"] == 10_000

    resumed = run_script("train.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "max_steps=30",
                         f"data.data_dir={mnist_dir}", "test=false")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "speed.loop=plain" in (run / ".hydra" / "overrides.yaml").read_text()  # the run, in today's spelling
    newest = max((run / "checkpoints").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    continued = torch.load(newest, weights_only=True)
    assert continued["global_step"] == 30
    assert not {"fused", "compile", "cuda_graph", "triton"} & continued["hyper_parameters"].keys()
