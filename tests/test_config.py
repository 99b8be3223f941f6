"""The Hydra config: composition, overrides, defaults that match the tutorial, the speed settings, and every
refusal of the command-line check (mnist_lstm/cli.py, from the schema in mnist_lstm/config/schema.py)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_lstm import cli, fast
from mnist_lstm.config import schema
from mnist_lstm.errors import UserError
from mnist_lstm.fast.cuda_graph import WholeStepGraphModule
from mnist_lstm.model.lstm import StackedLSTM, TorchStackedLSTM
from mnist_lstm.model.module import RowLSTMModule
from mnist_lstm.run.dry_run import check_rules
from mnist_lstm.run.train import build_model, trainer_arguments
from tests.helpers import compose_train, run_script


def check_command_line(*overrides: str, tmp_path: Path) -> None:
    """train.py's command-line check, as a run does it before Hydra (in a fresh run directory)."""
    cli.check_command_line("train", [*overrides, f"hydra.run.dir={tmp_path / 'run'}"])


def check(cfg: DictConfig) -> None:
    """The schema's and the rules' checks of a composed train.py config."""
    job = cli.as_one_job(cfg)
    schema.validate(OmegaConf.to_container(job), "train")
    check_rules(job)


def test_defaults_reproduce_the_tutorial() -> None:
    cfg = compose_train()
    assert (cfg.layer_num, cfg.hidden_size, cfg.dropout, cfg.lr, cfg.batch_size, cfg.max_steps) == (
        2,
        256,
        0.5,
        1e-3,
        128,
        2000,
    )
    assert cfg.model.forget_bias == 1.0 and cfg.model.cell == "custom"
    assert cfg.model.optimizer._target_ == "torch.optim.Adam"
    assert cfg.trainer.accelerator == "auto"
    assert trainer_arguments(cfg) == {"max_steps": 2000, "val_check_interval": 500}  # validates 4 times
    assert dict(cfg.speed) == {"loop": "fused", "compile": False, "cuda_graph": "none"}  # the fast loop, eager
    check(cfg)


def test_top_level_overrides_reach_the_objects() -> None:
    cfg = compose_train("layer_num=3", "hidden_size=128", "dropout=0.2", "batch_size=64", "lr=0.01")
    module = build_model(cfg)
    lstm = module.net.lstm
    assert isinstance(lstm, StackedLSTM) and len(lstm.layers) == 3 and lstm.hidden_size == 128
    assert lstm.dropout == 0.2
    assert module.hparams.layer_num == 3
    assert instantiate(cfg.data, batch_size=cfg.batch_size).hparams.batch_size == 64
    optimizer = module.optimizer_factory(module.parameters())
    assert optimizer.param_groups[0]["lr"] == 0.01


def test_short_runs_still_validate() -> None:
    assert trainer_arguments(compose_train("max_steps=50"))["val_check_interval"] == 50


def test_torch_cell_is_selectable() -> None:
    module = build_model(compose_train("model.cell=torch"))
    assert isinstance(module.net.lstm, TorchStackedLSTM)


@pytest.mark.parametrize("name", ["fdr", "limit", "overfit"])
def test_debug_configs_compose(name: str) -> None:
    check(compose_train(f"debug={name}"))


@pytest.mark.parametrize(
    ("choice", "loop", "compile", "cuda_graph"),
    [
        ("fused", "fused", False, "none"),
        ("plain", "plain", False, "none"),
        ("compiled", "plain", True, "none"),
        ("graphed", "triton", False, "forward_backward"),
        ("graphed_step", "triton", False, "whole_step"),
    ],
)
def test_every_speed_choice_is_a_run_setting_of_the_same_model(
    choice: str, loop: str, compile: bool, cuda_graph: str
) -> None:
    """conf/speed/: the loop, compiled or not, and a CUDA graph; the model's config and hparams stay the same."""
    cfg = compose_train(f"speed={choice}")
    assert (cfg.speed.loop, cfg.speed.compile, cfg.speed.cuda_graph) == (loop, compile, cuda_graph)
    check(cfg)
    module = build_model(cfg)
    assert isinstance(module, RowLSTMModule)
    assert cfg.model == compose_train().model
    assert dict(module.hparams) == dict(build_model(compose_train()).hparams)


def test_the_whole_step_in_one_graph_combines_with_clipping() -> None:
    cfg = compose_train("speed=graphed_step", "trainer.gradient_clip_val=1.0")  # (clipping: inside the graph)
    check(cfg)
    assert fast.module_class(cfg.speed.cuda_graph) is WholeStepGraphModule


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("layer_num=0", "layer_num=0 is out of range: layer_num must be greater than or equal to 1 (e.g. layer_num=3)"),
        ("hidden_size=-1", "hidden_size=-1 is out of range: hidden_size must be greater than or equal to 1"),
        ("dropout=1.5", "dropout=1.5 is out of range: dropout must be less than 1"),
        ("batch_size=0", "batch_size=0 is out of range"),
        ("lr=0", "lr=0 is out of range: lr must be greater than 0"),
        ("seed=-1", "seed=-1 is out of range: seed must be greater than or equal to 0"),
        ("seed=4294967296", "seed=4294967296 is out of range: seed must be less than 4294967296"),
        ("val_every=0", "val_every=0 is out of range"),
        ("layer_num=abc", "invalid value layer_num='abc': layer_num must be a valid integer"),
        ("hidden_size=2.5", "invalid value hidden_size=2.5"),
        ("dropout=true", "invalid value dropout=True"),
        ("model.cell=gru", "invalid value model.cell='gru': model.cell must be 'custom' or 'torch'"),
        ("model.forget_bias=abc", "invalid value model.forget_bias='abc': model.forget_bias must be a valid number"),
        ("model.forget_bias=nan", "model.forget_bias=nan is out of range: model.forget_bias must be a finite number"),
        ("data.val_size=60000", "data.val_size=60000 is out of range: data.val_size must be less than 60000"),
        ("data.on_device=gpu", "invalid value data.on_device='gpu': data.on_device must be a valid boolean"),
        ("speed.compile=maybe", "invalid value speed.compile='maybe': speed.compile must be a valid boolean"),
        ("speed.loop=gru", "invalid value speed.loop='gru': speed.loop must be 'plain', 'fused' or 'triton'"),
        ("speed.cuda_graph=1", "invalid value speed.cuda_graph=1: speed.cuda_graph must be 'none', 'forward_backward'"),
        ("trainer.max_epochs=1.5", "invalid value trainer.max_epochs=1.5: trainer.max_epochs should be a valid"),
        ("trainer.max_epochs=-5", "the Trainer refused its options: `max_epochs` must be a non-negative integer or -1"),
        ("speed=graphed trainer.precision=bf16-mixed", "speed.cuda_graph=forward_backward does not combine with"),
        ("speed=graphed speed.compile=true", "are not supported together"),
        ("speed=graphed_step trainer.precision=16-mixed", "speed.cuda_graph=whole_step does not combine with"),
        ("speed=graphed_step +trainer.accumulate_grad_batches=4", "cannot accumulate gradients"),
        ("speed=graphed_step experiment=improved", "speed.cuda_graph=whole_step replays the learning rate it captured"),
        ("speed.loop=triton model.cell=torch", "speed.loop=triton runs our loop's elementwise work as Triton kernels"),
        ("speed=turbo", "speed=turbo is not a config of group 'speed': choose one of compiled, fused, graphed"),
        ("-m layer_num=2,0", "layer_num=0 is out of range"),  # every value of a sweep
        ("-m lr=interval(0,0.1)", "lr=0.0 is out of range"),
    ],
)
def test_bad_values_are_refused_with_key_and_range(override: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        check_command_line(*override.split(), tmp_path=tmp_path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.layer_num=3", "unknown key 'model.layer_num' in 'model.layer_num=3': did you mean layer_num=3?"),
        ("data.batch_size=64", "unknown key 'data.batch_size' in 'data.batch_size=64': did you mean batch_size=64?"),
        ("model.optimizer.lr=0.01", "unknown key 'model.optimizer.lr' in 'model.optimizer.lr=0.01': did you mean lr="),
        ("trainer.max_steps=5", "unknown key 'trainer.max_steps' in 'trainer.max_steps=5': did you mean max_steps=5?"),
        ("layer_nm=3", "unknown key 'layer_nm' in 'layer_nm=3': did you mean layer_num=3? "),
        ("+layer_nm=3", "unknown key 'layer_nm': did you mean layer_num?"),
        ("trainer.max_step=5", "unknown key 'trainer.max_step' in 'trainer.max_step=5': did you mean "),
    ],
)
def test_each_knob_has_one_spelling(override: str, expected: str, tmp_path: Path) -> None:
    """A top-level knob is set where it is, not where it is passed on to; and the did-you-mean offers that one."""
    with pytest.raises(UserError) as err:
        check_command_line(override, tmp_path=tmp_path)
    assert str(err.value).startswith(expected), str(err.value)


@pytest.mark.parametrize(
    ("override", "new"),
    [
        ("model.fused=false", "speed.loop=plain"),
        ("model.triton=true", "speed.loop=triton"),
        ("model.compile=true", "speed.compile=true"),
        ("model.cuda_graph=step", "speed.cuda_graph=whole_step"),
    ],
)
def test_the_old_speed_keys_point_to_the_new_ones(override: str, new: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        check_command_line(override, tmp_path=tmp_path)
    message = str(err.value)
    assert message.startswith(f"unknown key '{override.split('=')[0]}'") and "is now a run setting" in message
    assert new in message


def test_optunas_search_space_is_checked_before_any_trial(tmp_path: Path) -> None:
    check_command_line("hparams_search=optuna", tmp_path=tmp_path)  # conf/hparams_search/optuna.yaml is good
    bad_space = "hydra.sweeper.params.dropout='interval(0.0, 1.5)'"  # as a YAML file would give it
    with pytest.raises(UserError, match=r"dropout=1\.5 is out of range"):
        check_command_line("hparams_search=optuna", bad_space, tmp_path=tmp_path)


def test_the_schema_names_what_tensorboard_compares_and_what_a_checkpoint_must_match() -> None:
    cfg = compose_train("layer_num=3", "model.cell=torch")
    assert schema.hyperparameters(cfg) == {
        "layer_num": 3,
        "hidden_size": 256,
        "dropout": 0.5,
        "lr": 1e-3,
        "batch_size": 128,
        "max_steps": 2000,
        "seed": 12345,
        "forget_bias": 1.0,
        "cell": "torch",
    }
    assert sorted(schema.architecture()) == ["hidden_size", "layer_num", "model.cell", "model.forget_bias"]


def test_a_path_is_taken_as_a_user_types_it(tmp_path: Path) -> None:
    """Hydra's grammar wants a value with letters beyond ASCII quoted: the command line quotes it for the user."""
    argv = cli.check_command_line("predict", ["image=/srv/données/7.png", "ckpt_path=/home/用户/runs/last.ckpt"])
    assert argv == ["image='/srv/données/7.png'", "ckpt_path='/home/用户/runs/last.ckpt'"]
    data_dir = tmp_path / "données"
    argv = cli.check_command_line("train", [f"data.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert compose_train(*argv).data.data_dir == str(data_dir)


def test_triton_without_the_package_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "triton" else real_find_spec(name))
    check(compose_train("speed=fused"))  # not asked for: not needed
    with pytest.raises(UserError, match="speed.loop=triton needs the triton package"):
        check(compose_train("speed.loop=triton"))


@pytest.mark.parametrize("script", ["train", "predict"])
def test_help_lists_every_key_with_its_type_range_and_meaning(script: str) -> None:
    """--help reads the schema, the one place each key is declared."""
    result = run_script(f"{script}.py", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    for key, field in schema.knobs(schema.SCHEMAS[script]).items():
        assert key in lines and field.description in lines[key], key
    if script == "train":
        assert lines["layer_num"].split()[1:3] == ["int", ">="] and "custom|torch" in lines["model.cell"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+model.optimizer.lr=0.01", "model.optimizer.lr is set from lr: write lr=<value>"),
        ("+trainer.max_steps=5", "trainer.max_steps is set from max_steps: write max_steps=<value>"),
        ("+model.hidden_size=64", "unknown key 'model.hidden_size': did you mean hidden_size?"),
        ("model._target_=x.Y", "invalid value model._target_='x.Y'"),
        ("model.optimizer._target_=torch.optim.Nope", "model.optimizer._target_='torch.optim.Nope' names nothing"),
        ("data._target_=x.Nope", "data._target_='x.Nope' names nothing importable"),
        ("logger.tensorboard._target_=x.Y", "logger.tensorboard._target_='x.Y' names nothing importable"),
        ("index=[1,a]", "invalid value index=[1, 'a']"),
    ],
)
def test_nothing_typed_is_silently_ignored_or_blamed_on_another_key(
    override: str, expected: str, tmp_path: Path
) -> None:
    script = "visualize" if override.startswith("index") else "train"
    with pytest.raises(UserError) as err:
        cli.check_command_line(script, [override, f"hydra.run.dir={tmp_path / 'run'}"])
    assert str(err.value).startswith(expected), str(err.value)


def test_groups_emptied_and_quoted_sweep_values_are_accepted(tmp_path: Path) -> None:
    cli.check_command_line("train", ["callbacks=[]", "logger=[]", f"hydra.run.dir={tmp_path / 'run'}"])
    cli.check_command_line("train", ["-m", "task_name='a b',c", f"hydra.sweep.dir={tmp_path / 'sweep'}"])


def test_a_run_in_a_folder_named_beyond_ascii_resumes(tiny_run: tuple[Path, str], tmp_path: Path) -> None:
    """The run's own directory goes back to Hydra quoted, whatever letters its path has."""
    run_dir = tmp_path / "运行 1"
    shutil.copytree(tiny_run[0], run_dir)
    argv = cli.check_command_line("train", [f"ckpt_path={run_dir}/checkpoints/last.ckpt", "max_steps=80"], True)
    assert f"hydra.run.dir='{run_dir}'" in argv
