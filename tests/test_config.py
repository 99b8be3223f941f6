"""The Hydra config: composition, overrides, defaults that match the tutorial, refused values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_lstm.config import validate
from mnist_lstm.errors import UserError
from mnist_lstm.lstm import StackedLSTM, TorchStackedLSTM

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    # Outside a real run there is no Hydra runtime: give the output dir a value.
    OmegaConf.update(cfg, "paths.output_dir", "/tmp/unused", force_add=True)
    return cfg


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
    assert cfg.trainer.val_check_interval == 500  # validates 4 times in 2,000 steps
    validate(cfg)


def test_top_level_overrides_reach_the_objects() -> None:
    cfg = compose_train("layer_num=3", "hidden_size=128", "dropout=0.2", "batch_size=64", "lr=0.01")
    module = instantiate(cfg.model)
    lstm = module.net.lstm
    assert isinstance(lstm, StackedLSTM) and len(lstm.layers) == 3 and lstm.hidden_size == 128
    assert lstm.dropout == 0.2
    assert module.hparams.layer_num == 3
    assert instantiate(cfg.data).batch_size == 64
    optimizer = module.optimizer_factory(module.parameters())
    assert optimizer.param_groups[0]["lr"] == 0.01


def test_short_runs_still_validate() -> None:
    assert compose_train("max_steps=50").trainer.val_check_interval == 50


def test_torch_cell_is_selectable() -> None:
    module = instantiate(compose_train("model.cell=torch").model)
    assert isinstance(module.net.lstm, TorchStackedLSTM)


@pytest.mark.parametrize("name", ["fdr", "limit", "overfit"])
def test_debug_configs_compose(name: str) -> None:
    cfg = compose_train(f"debug={name}")
    validate(cfg)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("layer_num=0", "layer_num=0 is out of range: layer_num must be an integer >= 1"),
        ("hidden_size=-1", "hidden_size=-1 is out of range: hidden_size must be an integer >= 1"),
        ("dropout=1.5", "dropout=1.5 is out of range: dropout must be a number in [0, 1)"),
        ("batch_size=0", "batch_size=0 is out of range"),
        ("lr=0", "lr=0 is out of range"),
        ("layer_num=abc", "invalid value layer_num='abc': layer_num must be an integer >= 1"),
        ("hidden_size=2.5", "invalid value hidden_size=2.5"),
        ("dropout=true", "invalid value dropout=True"),
        ("model.cell=gru", "invalid value model.cell='gru'"),
        ("model.forget_bias=abc", "invalid value model.forget_bias='abc': model.forget_bias must be a finite number"),
        ("model.fused=maybe", "invalid value model.fused='maybe': model.fused must be true or false"),
        ("model.cuda_graph=1", "invalid value model.cuda_graph=1: model.cuda_graph must be false, true (the forward"),
        ("model.cuda_graph=all", "invalid value model.cuda_graph='all': model.cuda_graph must be false, true"),
        ("data.on_device=gpu", "invalid value data.on_device='gpu': data.on_device must be auto"),
        ("model.cuda_graph=true trainer.precision=bf16-mixed", "model.cuda_graph=true does not combine with"),
        ("model.cuda_graph=true model.compile=true", "are not supported together"),
        ("model.cuda_graph=step trainer.precision=16-mixed", "model.cuda_graph=step does not combine with"),
        ("model.cuda_graph=step +trainer.accumulate_grad_batches=4", "cannot accumulate gradients"),
        ("model.cuda_graph=step experiment=improved", "model.cuda_graph=step replays the learning rate it captured"),
        ("model.triton=yes", "invalid value model.triton='yes': model.triton must be true or false"),
        ("model.triton=true model.cell=torch", "model.triton=true applies to our fused loop, not to nn.LSTM"),
        ("model.triton=true model.fused=false", "not to the plain loop (model.fused=false)"),
    ],
)
def test_bad_values_are_refused_with_key_and_range(override: str, expected: str) -> None:
    with pytest.raises(UserError, match=None) as err:
        validate(compose_train(*override.split()))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_the_whole_step_in_one_graph_is_a_choice_of_model_cuda_graph() -> None:
    cfg = compose_train("model.cuda_graph=step", "trainer.gradient_clip_val=1.0")  # (clipping: inside the graph)
    validate(cfg)
    module = instantiate(cfg.model)
    assert module.graphed_step is not None and module.graphed_training is None
    assert instantiate(compose_train("model.cuda_graph=true").model).graphed_step is None


def test_triton_without_the_package_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "triton" else real_find_spec(name))
    validate(compose_train("model.triton=false"))  # not asked for: not needed
    with pytest.raises(UserError, match="model.triton=true needs the triton package"):
        validate(compose_train("model.triton=true"))
