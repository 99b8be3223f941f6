"""Every fast path (mnist_lstm/fast/) against the plain autograd loop and nn.LSTM: outputs, states and gradients;
and the speed settings that pick them."""

from __future__ import annotations

import collections
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import ModuleType

import lightning as L
import pytest
import torch
from torch import nn

import mnist_lstm.fast.fused
from mnist_lstm import fast
from mnist_lstm.data import MNISTDataModule
from mnist_lstm.errors import UserError
from mnist_lstm.fast import nvml
from mnist_lstm.fast.cuda_graph import ForwardBackwardGraphModule, WholeStepGraphModule
from mnist_lstm.fast.fused import FusedLSTMLoop, Workspace, Workspaces, uniform_dropout
from mnist_lstm.model.lstm import Implementation, RowLSTMClassifier, StackedLSTM, lstm_loop
from mnist_lstm.model.module import RowLSTMModule
from tests.helpers import (
    copy_into_nn_lstm,
    forward_and_backward,
    nn_lstm_grads_as_ours,
    quiet_cpu_trainer,
    run_script,
    twins,
)


@pytest.mark.parametrize(("layer_num", "hidden"), [(1, 5), (2, 8), (3, 4)])
def test_fused_matches_plain_loop_and_nn_lstm(layer_num: int, hidden: int) -> None:
    torch.manual_seed(layer_num)
    steps, batch, inputs = 6, 3, 7
    fused, plain = twins(layer_num, hidden, inputs)
    reference = nn.LSTM(inputs, hidden, layer_num).double()
    copy_into_nn_lstm(fused, reference)
    x = torch.randn(steps, batch, inputs, dtype=torch.double)
    state = (torch.randn(layer_num, batch, hidden, dtype=torch.double), torch.randn(layer_num, batch, hidden).double())
    weights = torch.randn(steps, batch, hidden, dtype=torch.double)

    out, h, c, grads = forward_and_backward(fused, x, state, weights)
    assert out.grad_fn is not None and "FusedLSTMLoop" in type(out.grad_fn).__name__  # the fast path ran
    for other in (plain, reference):
        other_out, other_h, other_c, other_grads = forward_and_backward(other, x, state, weights)
        for ours, theirs in [(out, other_out), (h, other_h), (c, other_c)]:
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
        # Gradients of the input and the initial state; the weights' below (nn.LSTM lays them out apart).
        torch.testing.assert_close(grads[-3:], other_grads[-3:], rtol=0, atol=1e-12)
        if other is plain:
            torch.testing.assert_close(grads[:-3], other_grads[:-3], rtol=0, atol=1e-12)
    for layer, (w_grad, b_grad) in zip(fused.layers, nn_lstm_grads_as_ours(fused, reference), strict=True):
        torch.testing.assert_close(layer.gates.weight.grad, w_grad, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.gates.bias.grad, b_grad, rtol=0, atol=1e-12)


class FreshFusedLoop(torch.autograd.Function):
    """FusedLSTMLoop, run afresh for every backward: its backward overwrites what its forward saved, and
    gradcheck backpropagates through one graph many times (retain_graph=True)."""

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor):
        ctx.save_for_backward(*tensors)
        return FusedLSTMLoop.apply(*tensors)

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor):
        with torch.enable_grad():
            tensors = [t.detach().requires_grad_() for t in ctx.saved_tensors]
            outputs = FusedLSTMLoop.apply(*tensors)
            return torch.autograd.grad(outputs, tensors, grad_outputs)


def test_fused_backward_passes_gradcheck() -> None:
    """The hand-written backward against finite differences, every input at once (x, weight, bias, h0, c0)."""
    torch.manual_seed(0)
    steps, batch, inputs, hidden = 4, 2, 3, 2
    tensors = [
        torch.randn(steps, batch, inputs),
        torch.randn(4 * hidden, inputs + hidden) * 0.5,
        torch.randn(4 * hidden),
        torch.randn(batch, hidden),
        torch.randn(batch, hidden),
    ]
    tensors = [t.double().requires_grad_() for t in tensors]
    assert torch.autograd.gradcheck(FreshFusedLoop.apply, tensors)


def test_the_fused_loop_reuses_its_buffers_and_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backward gives its forward's buffers back and the next forward of the same shape takes them (no fresh
    memory per training step); forwards whose backwards have not run (two losses summed) each get their own.
    Every gradient still matches the plain loop's."""
    workspaces = Workspaces()
    monkeypatch.setattr(mnist_lstm.fast.fused, "WORKSPACES", workspaces)
    torch.manual_seed(0)
    steps, batch, inputs, hidden = 5, 3, 4, 2
    shapes = [(steps, batch, inputs), (4 * hidden, inputs + hidden), (4 * hidden,), (batch, hidden), (batch, hidden)]
    tensors = [torch.randn(*shape, dtype=torch.double, requires_grad=True) for shape in shapes]
    weights = torch.randn(steps, batch, hidden, dtype=torch.double)
    key = (steps, batch, 4 * hidden, torch.double, torch.device("cpu"))

    def gradients(loop, forwards: int) -> tuple[torch.Tensor, ...]:
        losses = []
        for _ in range(forwards):
            outputs, c = loop(*tensors)
            losses.append((outputs * weights).sum() + c.pow(2).sum())
        left = len(workspaces.free.get(key, []))  # (what is left before the backward)
        return torch.autograd.grad(sum(losses), tensors), left

    def plain(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, (_, c) = lstm_loop(*tensors)
        return outputs, c

    expected, _ = gradients(plain, 1)
    first, _ = gradients(FusedLSTMLoop.apply, 1)
    [buffers] = workspaces.free[key]
    second, left = gradients(FusedLSTMLoop.apply, 1)
    assert left == 0 and workspaces.free[key] == [buffers]
    both, left = gradients(FusedLSTMLoop.apply, 2)
    assert left == 0 and len(workspaces.free[key]) == 2  # the kept set and a new one, both given back
    for got in (first, second):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(both, tuple(2 * g for g in expected), rtol=0, atol=1e-12)


def test_what_the_fused_loop_returns_is_not_a_kept_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The outputs and c_T a step returns stay as they were when the next step's forward takes that step's
    buffers (a caller may keep them: a logged activation, a state carried on)."""
    workspaces = Workspaces()
    monkeypatch.setattr(mnist_lstm.fast.fused, "WORKSPACES", workspaces)
    torch.manual_seed(0)
    x, weight, bias, h0, c0 = (torch.randn(*shape) for shape in [(5, 3, 4), (8, 6), (8,), (3, 2), (3, 2)])
    weight.requires_grad_()
    outputs, c = FusedLSTMLoop.apply(x, weight, bias, h0, c0)
    (outputs.sum() + c.sum()).backward()
    kept = outputs.clone(), c.clone()
    [free] = workspaces.free.values()
    assert len(free) == 1
    FusedLSTMLoop.apply(2 * x, weight, bias, -h0, c0 + 1)
    assert not free  # the second forward took the buffers the backward gave back
    torch.testing.assert_close((outputs, c), kept, rtol=0, atol=0)


def test_the_kept_buffers_are_bounded() -> None:
    """At most per_shape sets for each of the last `shapes` shapes: a run whose batch size changes keeps little."""
    workspaces = Workspaces(shapes=2, per_shape=1)
    x = torch.zeros(3, 1, 2)
    for batch in (1, 2, 2, 3):
        workspaces.give_back(workspaces.take(x.new_empty(3, batch, 2), 3, batch, 4))
        workspaces.give_back(Workspaces().take(x.new_empty(3, batch, 2), 3, batch, 4))
    assert [key[1] for key in workspaces.free] == [2, 3]  # batch 1, used longest ago, is dropped
    assert all(len(free) == 1 for free in workspaces.free.values())
    workspaces.give_back(Workspace(torch.empty(3, 2, 2, device="meta"), 3, 2, 4))  # not a CPU's: not kept
    assert [key[1] for key in workspaces.free] == [2, 3] and all(len(free) == 1 for free in workspaces.free.values())


def test_a_second_backward_through_the_fused_loop_is_refused() -> None:
    """Its backward writes over the saved derivatives: a second one must stop, naming the way out."""
    lstm = StackedLSTM(3, 4, 1)
    lstm.implementation = fast.IMPLEMENTATIONS["fused"]
    out, _ = lstm(torch.randn(5, 2, 3))
    out.sum().backward(retain_graph=True)
    first = lstm.layers[0].gates.weight.grad.clone()
    with pytest.raises(RuntimeError, match=r"retain_graph=True.*speed=plain"):
        out.sum().backward()
    # The plain loop has no such limit: twice the gradient after two backwards.
    plain = StackedLSTM(3, 4, 1)
    plain.load_state_dict(lstm.state_dict())
    out, _ = plain(torch.randn(5, 2, 3))
    out.sum().backward(retain_graph=True)
    once = plain.layers[0].gates.weight.grad.clone()
    out.sum().backward()
    torch.testing.assert_close(plain.layers[0].gates.weight.grad, 2 * once)
    assert first.abs().sum() > 0


@pytest.fixture
def interpreted_triton(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """mnist_lstm.fast.triton imported afresh under TRITON_INTERPRET=1: Triton's interpreter runs its kernels
    on CPU tensors, so they are checked without a GPU. (Forgotten afterwards: a later import compiles them.)"""
    pytest.importorskip("triton", reason="triton comes with PyTorch's CUDA builds for Linux, not with the others")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    sys.modules.pop("mnist_lstm.fast.triton", None)
    module = importlib.import_module("mnist_lstm.fast.triton")
    assert type(module._forward_step).__name__ == "InterpretedFunction"
    yield module
    sys.modules.pop("mnist_lstm.fast.triton", None)


def loop_run(loop: type[torch.autograd.Function], inputs: list[torch.Tensor], weights: torch.Tensor | None):
    """One forward and backward of a fused-loop Function; the outputs and the gradients of all five inputs.
    `weights` None: the loss reads the last output only (the classifier's case), else every output."""
    inputs = [t.clone().requires_grad_() for t in inputs]
    out, c = loop.apply(*inputs)
    loss = (out[-1].sum() if weights is None else (out * weights).sum()) + c.pow(2).sum()
    loss.backward()
    return [out, c, *(t.grad for t in inputs)]


@pytest.mark.parametrize(
    ("steps", "batch", "inputs", "hidden", "every_output"),
    [(6, 3, 7, 5, True), (4, 3, 7, 5, False), (3, 40, 4, 30, True)],  # the last: 1,200 cells, two kernel instances
)
def test_triton_loop_matches_the_fused_loop(
    interpreted_triton: ModuleType, steps: int, batch: int, inputs: int, hidden: int, every_output: bool
) -> None:
    torch.manual_seed(steps)
    tensors = [
        torch.randn(steps, batch, inputs),  # x
        torch.randn(4 * hidden, inputs + hidden) * 0.5,  # the fused weight
        torch.randn(4 * hidden),  # bias
        torch.randn(batch, hidden),  # h0
        torch.randn(batch, hidden),  # c0
    ]
    tensors = [t.double() for t in tensors]
    weights = torch.randn(steps, batch, hidden, dtype=torch.double) if every_output else None
    triton_results = loop_run(interpreted_triton.TritonLSTMLoop, tensors, weights)
    torch.testing.assert_close(triton_results, loop_run(FusedLSTMLoop, tensors, weights), rtol=0, atol=1e-12)


def test_a_second_backward_through_the_triton_loop_is_refused(interpreted_triton: ModuleType) -> None:
    tensors = [torch.randn(5, 2, 3), torch.randn(16, 7), torch.randn(16), torch.zeros(2, 4), torch.zeros(2, 4)]
    out, _ = interpreted_triton.TritonLSTMLoop.apply(*(t.requires_grad_() for t in tensors))
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        out.sum().backward()


def test_the_triton_loop_trains_with_the_fused_loop_on_the_cpu() -> None:
    """Triton's kernels run on a GPU: on the CPU speed.loop=triton takes the fused loop, and the weights are the
    same parameters either way (a checkpoint loads into both)."""
    lstm = StackedLSTM(3, 4, 2)
    lstm.implementation = fast.IMPLEMENTATIONS["triton"]
    out, _ = lstm(torch.randn(5, 2, 3))
    assert "FusedLSTMLoop" in type(out.grad_fn).__name__
    assert lstm.state_dict().keys() == StackedLSTM(3, 4, 2).state_dict().keys()


def test_gpu_settings_on_the_cpu_train_with_a_warning_each(mnist_dir: Path) -> None:
    """speed.loop=triton and speed.cuda_graph on a CPU run: each says it does not apply, and the run trains."""
    model = ForwardBackwardGraphModule(hidden_size=8, layer_num=1, optimizer=partial(torch.optim.Adam, lr=1e-3))
    trainer = quiet_cpu_trainer(max_steps=2)
    with pytest.warns(UserWarning, match="applies to CUDA runs only") as caught:
        fast.speed_up(model, "triton", device=trainer.strategy.root_device)
        trainer.fit(model, MNISTDataModule(str(mnist_dir), batch_size=16, download=False))
    warned = {str(w.message).split("=")[0] for w in caught if "applies to CUDA runs only" in str(w.message)}
    assert warned == {"speed.loop", "speed.cuda_graph"}
    assert trainer.global_step == 2


def test_each_cuda_graph_setting_trains_a_module_that_saves_what_the_plain_one_does() -> None:
    """The run builds RowLSTMModule or its CUDA-graph subclass (fast.module_class): same arguments, the same
    hyperparameters and weights in a checkpoint, so any of them loads anywhere."""
    classes = {setting: fast.module_class(setting) for setting in ("none", "forward_backward", "whole_step")}
    assert classes == {
        "none": RowLSTMModule,
        "forward_backward": ForwardBackwardGraphModule,
        "whole_step": WholeStepGraphModule,
    }
    modules = [cls(hidden_size=8, layer_num=2, dropout=0.1) for cls in classes.values()]
    assert all(dict(m.hparams) == dict(modules[0].hparams) for m in modules)
    assert all(m.state_dict().keys() == modules[0].state_dict().keys() for m in modules)
    assert not {"fused", "compile", "cuda_graph", "triton", "loop"} & modules[0].hparams.keys()


@pytest.mark.parametrize("clip", [None, 0.05])
def test_the_whole_step_written_out_trains_exactly_as_lightnings_loop(mnist_dir: Path, clip: float | None) -> None:
    """speed.cuda_graph=whole_step: training_step runs the whole step itself (gradients to None, forward, loss,
    backward, `trainer.gradient_clip_val`'s clipping, Adam), as the function a CUDA graph captures, and
    Lightning's loop leaves that work done. On the CPU the same function runs op by op: the same weights, bit for
    bit, as Lightning's own loop, dropout on, and Lightning counts the steps and Adam took each once. The hooks
    around the step run, except on_before_optimizer_step (Lightning calls it from inside optimizer.step)."""

    class CountHooks(L.Callback):
        def __init__(self) -> None:
            self.calls = collections.Counter()

        def on_after_backward(self, *_) -> None:
            self.calls["on_after_backward"] += 1

        def on_before_optimizer_step(self, *_) -> None:
            self.calls["on_before_optimizer_step"] += 1

    trained = {}
    for module_class in (RowLSTMModule, WholeStepGraphModule):
        L.seed_everything(3, verbose=False)
        module = module_class(hidden_size=8, layer_num=2, optimizer=partial(torch.optim.Adam))
        fast.speed_up(module, "fused")  # (the default run's loop)
        hooks = CountHooks()
        trainer = quiet_cpu_trainer(max_steps=7, log_every_n_steps=3, callbacks=[hooks], gradient_clip_val=clip)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="speed.cuda_graph=whole_step applies to CUDA runs only")
            trainer.fit(module, MNISTDataModule(str(mnist_dir), batch_size=16, download=False))
        assert trainer.global_step == 7
        steps = {int(state["step"]) for state in trainer.optimizers[0].state.values()}
        trained[module_class] = (module.net.state_dict(), steps, dict(trainer.logged_metrics), hooks.calls)
    (plain, plain_steps, plain_logged, plain_calls), (whole, whole_steps, whole_logged, whole_calls) = trained.values()
    assert plain_steps == whole_steps == {7}
    assert plain_calls == {"on_after_backward": 7, "on_before_optimizer_step": 7}
    assert whole_calls == {"on_after_backward": 7}
    torch.testing.assert_close(whole, plain, rtol=0, atol=0)
    torch.testing.assert_close(whole_logged, plain_logged, rtol=0, atol=0)  # train/loss and train/acc of step 6
    assert {"train/loss", "train/acc"} <= whole_logged.keys()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"accumulate_grad_batches": 2}, "cannot accumulate gradients"),
        ({"scheduler": partial(torch.optim.lr_scheduler.StepLR, step_size=1)}, "replays the learning rate"),
    ],
)
def test_the_whole_step_refuses_what_a_replay_cannot_change(mnist_dir: Path, options: dict, message: str) -> None:
    scheduler = options.pop("scheduler", None)
    module = WholeStepGraphModule(hidden_size=8, layer_num=1, optimizer=partial(torch.optim.Adam), scheduler=scheduler)
    with pytest.raises(UserError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet_cpu_trainer(max_steps=2, **options).fit(module, MNISTDataModule(str(mnist_dir), download=False))


def test_resuming_into_the_whole_step_graph_makes_the_saved_optimiser_capturable(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run saved without speed.cuda_graph=whole_step and resumed with it on a GPU: torch's load_state_dict would
    apply the saved capturable=False, which the capture refuses; on_load_checkpoint makes it capturable before
    Lightning loads it. (Here on the CPU, as if the graph held the optimiser: resumed at its last step, so
    that Adam, capturable on the CPU, never steps.)"""
    data = partial(MNISTDataModule, str(mnist_dir), batch_size=16, download=False)
    first = quiet_cpu_trainer(max_steps=3)
    first.fit(RowLSTMModule(hidden_size=4, layer_num=1, optimizer=partial(torch.optim.Adam)), data())
    first.save_checkpoint(tmp_path / "plain.ckpt")
    assert torch.load(tmp_path / "plain.ckpt")["optimizer_states"][0]["param_groups"][0]["capturable"] is False
    monkeypatch.setattr(WholeStepGraphModule, "_graph_holds_the_optimizer", lambda self: True)
    resumed = WholeStepGraphModule(hidden_size=4, layer_num=1, optimizer=partial(torch.optim.Adam))
    second = quiet_cpu_trainer(max_steps=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="speed.cuda_graph=whole_step applies to CUDA runs only")
        second.fit(resumed, data(), ckpt_path=tmp_path / "plain.ckpt")
    groups = second.optimizers[0].param_groups
    assert second.global_step == 3 and [group["capturable"] for group in groups] == [True]


def test_lightnings_nvml_check_is_unset_only_where_nvml_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1; where NVML's library cannot load, torch would try
    to load it at every CUDA check (Adam's, every step) and answer as without the setting: it is unset there."""
    monkeypatch.setenv(nvml.SETTING, "1")
    answer = torch.cuda.is_available()

    def cannot_load(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    with monkeypatch.context() as patched:
        patched.setattr(nvml.ctypes, "CDLL", cannot_load)
        nvml.skip_the_nvml_check_without_nvml()
    assert nvml.SETTING not in os.environ
    assert torch.cuda.is_available() == answer  # the same answer without the setting
    monkeypatch.setenv(nvml.SETTING, "1")
    with monkeypatch.context() as patched:
        patched.setattr(nvml.ctypes, "CDLL", lambda name: object())  # a machine with NVIDIA's driver: kept
        nvml.skip_the_nvml_check_without_nvml()
    assert os.environ[nvml.SETTING] == "1"


def test_training_with_dropout_is_the_same_on_both_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the same dropout, the fused and the plain loop train alike: a training forward and its gradients
    agree. (The fast implementations draw dropout's mask as uniform >= p, F.dropout as bernoulli: the same
    distribution, other masks for a seed, so speed=plain and speed=fused runs of one seed differ.)"""
    fused, plain = twins(2, 6, dropout=0.5)
    plain.implementation = Implementation(lstm_loop, uniform_dropout)
    x = torch.randn(5, 4, 7, dtype=torch.double)
    grads = []
    for lstm in (fused, plain):
        torch.manual_seed(7)
        out, _ = lstm.train()(x)
        out.sum().backward()
        grads.append((out, [p.grad for p in lstm.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)
    assert (grads[0][0] == 0).any()  # dropout was on


@pytest.mark.parametrize("layer_num", [1, 2])
def test_inference_path_gives_the_training_path_results(layer_num: int) -> None:
    """Without gradients lstm_inference runs (gates step by step, nothing kept): the training path's numbers."""
    torch.manual_seed(0)
    lstm = StackedLSTM(28, 32, layer_num, dropout=0.5).eval()
    lstm.implementation = fast.IMPLEMENTATIONS["fused"]
    x = torch.rand(28, 50, 28)
    with_grad, (h, c) = lstm(x)
    assert with_grad.requires_grad
    with torch.inference_mode():
        without, (h_inf, c_inf) = lstm(x)
    torch.testing.assert_close(without, with_grad.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((h_inf, c_inf), (h.detach(), c.detach()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer_num", [1, 3])
def test_inference_loop_is_exactly_nn_lstm(layer_num: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """lstm_inference rewrites the step (gates reordered, tanh through sigmoid, the cell carried as -2c):
    in float64 its outputs and final states equal nn.LSTM's, from a given state, which it leaves untouched."""
    torch.manual_seed(layer_num)
    steps, batch, inputs, hidden = 6, 3, 7, 5
    ours = StackedLSTM(inputs, hidden, layer_num, dropout=0.5).double().eval()
    ours.implementation = fast.IMPLEMENTATIONS["fused"]
    reference = nn.LSTM(inputs, hidden, layer_num).double()
    copy_into_nn_lstm(ours, reference)
    x = torch.randn(steps, batch, inputs, dtype=torch.double)
    state = (torch.randn(layer_num, batch, hidden).double(), torch.randn(layer_num, batch, hidden).double() * 3)
    given = tuple(s.clone() for s in state)
    calls, inference = [], mnist_lstm.fast.fused.lstm_inference

    def counted(*args: torch.Tensor):
        calls.append(args[0].shape)
        return inference(*args)

    monkeypatch.setattr(mnist_lstm.fast.fused, "lstm_inference", counted)
    with torch.no_grad():
        out, (h, c) = ours(x, state)
    ref_out, (ref_h, ref_c) = reference(x, state)
    assert len(calls) == layer_num  # the inference loop ran, once per layer
    torch.testing.assert_close((out, h, c), (ref_out.detach(), ref_h.detach(), ref_c.detach()), rtol=0, atol=1e-12)
    torch.testing.assert_close(state, given, rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["custom", "torch"])
def test_large_batches_are_read_in_chunks_with_the_same_answers(cell: str) -> None:
    torch.manual_seed(0)
    model = RowLSTMClassifier(hidden_size=16, layer_num=2, cell=cell).eval()
    images = torch.rand(70, 28, 28)
    with torch.no_grad():
        whole = model(images), model.per_row_logits(images)
        model.inference_chunk = 16  # 70 images: 5 chunks, the last one short
        calls = []
        hook = model.lstm.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[1]))
        chunked = model(images), model.per_row_logits(images)
        hook.remove()
    assert calls == [16, 16, 16, 16, 6] * 2
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    # With gradients, the batch stays whole: training sees its batch as one.
    model.train()
    assert model(images).shape == (70, 10)


def test_mixed_precision_runs_the_plain_loop() -> None:
    """Under autocast (trainer.precision=bf16-mixed) the fused loop steps aside: same result as the plain one."""
    torch.manual_seed(0)
    fused = RowLSTMClassifier(hidden_size=16, dropout=0.0).use(fast.IMPLEMENTATIONS["fused"])
    plain = RowLSTMClassifier(hidden_size=16, dropout=0.0)
    plain.load_state_dict(fused.state_dict())
    images = torch.rand(4, 28, 28)
    results = []
    for model in (fused, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(images)
        logits.float().sum().backward()
        results.append((logits, [p.grad for p in model.parameters()]))
    assert results[0][0].dtype == torch.bfloat16 and results[0][1][0].dtype == torch.float32
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_compiled_module_keeps_checkpoint_keys_loadable_uncompiled() -> None:
    """speed.compile=true compiles the LSTM in place: no `_orig_mod.` in the state dict, nothing in hparams."""
    compiled = RowLSTMModule(hidden_size=8, layer_num=2)
    fast.speed_up(compiled, "plain", compile=True)
    keys = list(compiled.state_dict())
    assert not any("_orig_mod" in key for key in keys)
    plain = RowLSTMModule(hidden_size=8, layer_num=2)
    plain.load_state_dict(compiled.state_dict(), strict=True)
    assert dict(compiled.hparams) == dict(plain.hparams)


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["fused", "plain"])
def test_torch_compile_matches_eager(implementation: str) -> None:
    """Compiled (inductor, C++ on the CPU) against eager: outputs and gradients. Minutes when cold."""
    torch.manual_seed(0)
    eager = StackedLSTM(7, 8, 2)
    compiled = StackedLSTM(7, 8, 2)
    compiled.load_state_dict(eager.state_dict())
    eager.implementation = compiled.implementation = fast.IMPLEMENTATIONS[implementation]
    compiled.compile()
    x = torch.randn(5, 3, 7)
    results = []
    for lstm in (eager, compiled):
        out, (h, c) = lstm(x)
        (out.pow(2).sum() + c.sum()).backward()
        results.append((out, h, c, [p.grad for p in lstm.parameters()]))
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_run_checkpoint_loads_uncompiled(mnist_dir: Path, tmp_path: Path) -> None:
    """A real run with speed=compiled; its checkpoint holds no speed setting and loads into a plain model."""
    run_dir = tmp_path / "run"
    overrides = ["speed=compiled", "hidden_size=8", "max_steps=4", "val_every=4", "test=false"]
    result = run_script("train.py", *overrides, f"data.data_dir={mnist_dir}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "compile" not in checkpoint["hyper_parameters"]
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    model = RowLSTMModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(model.state_dict(), checkpoint["state_dict"])
    with torch.no_grad():
        assert model(torch.rand(3, 28, 28)).shape == (3, 10)
