"""The GPU paths, on a CUDA machine:  python -m pytest -m gpu  (deselected by default: CI has no GPU).

Our fused loop against cuDNN's nn.LSTM, its Triton kernels (speed.loop=triton) against it, the CUDA-graphed
training step (the forward and backward, or the whole step: speed.cuda_graph) against the eager one, graphed steps
in Lightning that never wait for the GPU, the data kept on the device, and real train.py runs using them.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor

from mnist_lstm import fast
from mnist_lstm.data import MNISTDataModule
from mnist_lstm.fast.cuda_graph import GraphedStep, GraphedTraining, WholeStepGraphModule
from mnist_lstm.model.lstm import RowLSTMClassifier, StackedLSTM
from mnist_lstm.model.module import RowLSTMModule
from mnist_lstm.run.callbacks import StopOnNonFiniteLoss
from tests.helpers import REPO, copy_into_nn_lstm, forward_and_backward, nn_lstm_grads_as_ours, twins

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    # Selected on purpose (-m gpu) on a machine without CUDA: that is an error, not a skip.
    assert torch.cuda.is_available(), "pytest -m gpu needs a CUDA GPU"


@pytest.mark.parametrize("layer_num", [1, 2])
def test_fused_loop_on_cuda_matches_cudnn_and_the_plain_loop(layer_num: int) -> None:
    torch.manual_seed(layer_num)
    steps, batch, inputs, hidden = 28, 16, 28, 32
    fused, plain = (m.to(CUDA) for m in twins(layer_num, hidden, inputs))
    reference = torch.nn.LSTM(inputs, hidden, layer_num).double().to(CUDA)  # cuDNN runs float64 too
    copy_into_nn_lstm(fused, reference)
    x = torch.randn(steps, batch, inputs, dtype=torch.double, device=CUDA)
    state = tuple(torch.randn(layer_num, batch, hidden, dtype=torch.double, device=CUDA) for _ in range(2))
    weights = torch.randn(steps, batch, hidden, dtype=torch.double, device=CUDA)

    out, h, c, grads = forward_and_backward(fused, x, state, weights)
    assert "FusedLSTMLoop" in type(out.grad_fn).__name__
    for other in (plain, reference):
        other_out, other_h, other_c, other_grads = forward_and_backward(other, x, state, weights)
        torch.testing.assert_close((out, h, c), (other_out, other_h, other_c), rtol=0, atol=1e-10)
        torch.testing.assert_close(grads[-3:], other_grads[-3:], rtol=0, atol=1e-10)
    for layer, (w_grad, b_grad) in zip(fused.layers, nn_lstm_grads_as_ours(fused, reference), strict=True):
        torch.testing.assert_close(
            (layer.gates.weight.grad, layer.gates.bias.grad), (w_grad, b_grad), rtol=0, atol=1e-9
        )


@pytest.mark.parametrize("layer_num", [1, 2])
def test_inference_loop_on_cuda_matches_cudnn(layer_num: int) -> None:
    """Without gradients lstm_inference runs (one sigmoid for the four gates, the cell as -2c): cuDNN's numbers."""
    torch.manual_seed(layer_num)
    fused, _ = twins(layer_num, 32, 28)
    fused = fused.to(CUDA).eval()
    reference = torch.nn.LSTM(28, 32, layer_num).double().to(CUDA)
    copy_into_nn_lstm(fused, reference)
    x = torch.randn(28, 16, 28, dtype=torch.double, device=CUDA)
    state = tuple(torch.randn(layer_num, 16, 32, dtype=torch.double, device=CUDA) for _ in range(2))
    with torch.inference_mode():
        torch.testing.assert_close(fused(x, state), reference(x, state), rtol=0, atol=1e-10)


def _train(net: torch.nn.Module, step_net, batches) -> list[torch.Tensor]:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for images, labels in batches:
        loss = F.cross_entropy(step_net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def eager_whole_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[Tensor, Tensor], tuple]:
    """A whole training step as one function, op by op, as WholeStepGraphModule.whole_step writes train.py's:
    gradients to None, forward, loss, backward, the optimiser's update. Returns (loss, logits)."""

    def step(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        optimizer.zero_grad(set_to_none=True)
        logits = net(images)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach()

    return step


# Full batches replay the graph; the last, smaller one of an epoch runs eagerly. A run resumed just before an
# epoch's last batch sees that one first: the graph is then captured again for the full batches.
EPOCHS = [32, 32, 32, 32, 20, 32]
RESUMED_AT_THE_LAST_BATCH = [20, 32, 32, 32, 20, 32]


@pytest.mark.parametrize("sizes", [EPOCHS, RESUMED_AT_THE_LAST_BATCH])
def test_cuda_graph_trains_exactly_like_the_eager_step(sizes: list[int]) -> None:
    torch.manual_seed(0)
    eager = RowLSTMClassifier(hidden_size=64, layer_num=2, dropout=0.0).use(fast.IMPLEMENTATIONS["fused"]).to(CUDA)
    graphed_net = (
        RowLSTMClassifier(hidden_size=64, layer_num=2, dropout=0.0).use(fast.IMPLEMENTATIONS["fused"]).to(CUDA)
    )
    graphed_net.load_state_dict(eager.state_dict())
    batches = [(torch.rand(n, 28, 28, device=CUDA), torch.randint(0, 10, (n,), device=CUDA)) for n in sizes]
    graphed = GraphedTraining(graphed_net)
    initial = graphed_net.classifier.weight.detach().clone()

    eager_losses = _train(eager, eager, batches)
    graphed_losses = _train(graphed_net, graphed, batches)
    assert graphed.graphed is not None and graphed.shape == (32, 28, 28)
    torch.testing.assert_close(torch.stack(graphed_losses), torch.stack(eager_losses), rtol=1e-4, atol=1e-5)
    for p, q in zip(graphed_net.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert not torch.equal(graphed_net.classifier.weight, initial)  # the replayed steps did update the weights


# float32: Triton's exp (the GPU's approximate ex2) and torch's round differently, and 28 steps carry it; float64
# checks the math.
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.double, 1e-10), (torch.float, 1e-4)])
def test_triton_loop_on_cuda_matches_the_fused_loop(dtype: torch.dtype, tolerance: float) -> None:
    """speed.loop=triton: the compiled kernels (CI checks them in Triton's interpreter), against the fused loop."""
    torch.manual_seed(0)
    steps, batch, inputs, hidden, layer_num = 28, 48, 28, 40, 2  # 1,920 cells: two kernel instances, one partial
    fused = StackedLSTM(inputs, hidden, layer_num).to(CUDA, dtype)
    fused.implementation = fast.IMPLEMENTATIONS["fused"]
    with_triton = StackedLSTM(inputs, hidden, layer_num).to(CUDA, dtype)
    with_triton.implementation = fast.IMPLEMENTATIONS["triton"]
    with_triton.load_state_dict(fused.state_dict())
    x = torch.randn(steps, batch, inputs, dtype=dtype, device=CUDA)
    state = tuple(torch.randn(layer_num, batch, hidden, dtype=dtype, device=CUDA) for _ in range(2))
    weights = torch.randn(steps, batch, hidden, dtype=dtype, device=CUDA)

    out, h, c, grads = forward_and_backward(with_triton, x, state, weights)
    assert "TritonLSTMLoop" in type(out.grad_fn).__name__
    torch.testing.assert_close(
        (out, h, c, grads), forward_and_backward(fused, x, state, weights), rtol=tolerance, atol=tolerance
    )


def test_cuda_graph_with_triton_trains_like_its_eager_step() -> None:
    """The Triton kernels captured and replayed: the same steps as launched one by one (their numbers against
    the fused loop's are the test above; here the same kernels on both sides, as Adam would amplify rounding)."""
    torch.manual_seed(0)
    eager = RowLSTMClassifier(hidden_size=64, layer_num=2, dropout=0.0).use(fast.IMPLEMENTATIONS["triton"]).to(CUDA)
    graphed_net = (
        RowLSTMClassifier(hidden_size=64, layer_num=2, dropout=0.0).use(fast.IMPLEMENTATIONS["triton"]).to(CUDA)
    )
    graphed_net.load_state_dict(eager.state_dict())
    batches = [(torch.rand(32, 28, 28, device=CUDA), torch.randint(0, 10, (32,), device=CUDA)) for _ in range(5)]
    graphed = GraphedTraining(graphed_net)

    eager_losses = _train(eager, eager, batches)
    graphed_losses = _train(graphed_net, graphed, batches)
    assert graphed.graphed is not None
    torch.testing.assert_close(torch.stack(graphed_losses), torch.stack(eager_losses), rtol=1e-4, atol=1e-5)
    for p, q in zip(graphed_net.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("loop", "sizes"),
    [
        ("fused", [32] * 6 + [20] + [32] * 3),
        ("triton", [32] * 6 + [20] + [32] * 3),
        ("fused", [20] + [32] * 5 + [20, 32]),
    ],
)
def test_whole_step_in_one_cuda_graph_trains_like_its_eager_twin(loop: str, sizes: list[int]) -> None:
    """GraphedStep (speed.cuda_graph=whole_step): three warm-up steps, then forward, loss, backward and Adam captured in
    one graph and replayed = the same steps run op by op; the last, smaller batch of an epoch runs op by op, also
    when it comes first (a run resumed just before it): the warm-up then starts again with the full batches."""
    torch.manual_seed(0)
    nets = [
        RowLSTMClassifier(hidden_size=64, layer_num=2, dropout=0.0).use(fast.IMPLEMENTATIONS[loop]).to(CUDA)
        for _ in range(2)
    ]
    nets[1].load_state_dict(nets[0].state_dict())
    graphed_net, eager_net = nets
    optimizers = [torch.optim.Adam(net.parameters(), lr=1e-3, fused=True, capturable=True) for net in nets]
    graphed = GraphedStep(eager_whole_step(graphed_net, optimizers[0]), graphed_net.parameters())
    eager = eager_whole_step(eager_net, optimizers[1])
    initial = graphed_net.classifier.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
        for n in sizes:
            images, labels = torch.rand(n, 28, 28, device=CUDA), torch.randint(0, 10, (n,), device=CUDA)
            loss, logits = graphed(images, labels)
            torch.testing.assert_close((loss, logits.clone()), eager(images, labels), rtol=1e-4, atol=1e-5)
    assert graphed.graph is not None and graphed.shape == (32, 28, 28)
    assert graphed.inputs[0].shape == (32, 28, 28)  # captured with the full batch
    for p, q in zip(graphed_net.parameters(), eager_net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        # param.grad holds the last replay's gradients, not those of the step run op by op before it
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    assert not torch.equal(graphed_net.classifier.weight, initial)  # the replays did update the weights
    assert {int(state["step"]) for state in optimizers[0].state.values()} == {len(sizes)}  # Adam counted every step


@pytest.mark.parametrize("clip", [None, 0.05])
def test_the_whole_step_graph_in_lightning_trains_like_lightnings_own_loop(mnist_dir: Path, clip: float | None) -> None:
    """speed.cuda_graph=whole_step in a Trainer on the GPU: Lightning's loop around a training_step that replays
    the whole step (capturable Adam inside, and the gradients' clipping) ends where Lightning's own loop ends,
    with the same steps counted."""
    trained = {}
    for cuda_graph in ("none", "whole_step"):
        L.seed_everything(5, verbose=False)
        module = fast.module_class(cuda_graph)(
            hidden_size=64, layer_num=2, dropout=0.0, optimizer=partial(torch.optim.Adam, fused=True)
        )
        fast.speed_up(module, "fused")
        trainer = L.Trainer(
            accelerator="gpu",
            devices=1,
            max_steps=12,
            limit_val_batches=0,
            gradient_clip_val=clip,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, MNISTDataModule(data_dir=str(mnist_dir), batch_size=64, download=False))
        assert trainer.global_step == 12
        trained[cuda_graph] = module
    plain, whole = trained.values()
    graph = whole.graphed_step.graph
    assert graph is not None and whole.trainer.optimizers[0].defaults["capturable"]
    torch.testing.assert_close(whole.net.state_dict(), plain.net.state_dict(), rtol=1e-4, atol=1e-5)
    # A second fit of the same module (its weights moved to the CPU after the first, a new optimiser) captures
    # a graph of its own, and trains on.
    before = copy.deepcopy(whole.net.state_dict())
    again = L.Trainer(
        accelerator="gpu", devices=1, max_steps=8, limit_val_batches=0, logger=False, enable_checkpointing=False
    )
    again.fit(whole, MNISTDataModule(data_dir=str(mnist_dir), batch_size=64, download=False))
    assert whole.graphed_step.graph not in (None, graph)
    assert all(not torch.equal(whole.net.state_dict()[k], v) for k, v in before.items())


def test_a_run_saved_without_the_whole_step_graph_resumes_with_it(mnist_dir: Path, tmp_path: Path) -> None:
    """Adam's options come back from the checkpoint (capturable=False there): made capturable on loading, the
    resumed run captures its whole step and trains on."""
    data = partial(MNISTDataModule, data_dir=str(mnist_dir), batch_size=64, download=False)
    trainer = partial(
        L.Trainer, accelerator="gpu", devices=1, limit_val_batches=0, logger=False, enable_progress_bar=False
    )
    first = trainer(max_steps=5, enable_checkpointing=False)
    saved = RowLSTMModule(hidden_size=32, layer_num=2, optimizer=partial(torch.optim.Adam, fused=True))
    fast.speed_up(saved, "fused")
    first.fit(saved, data())
    first.save_checkpoint(tmp_path / "plain.ckpt")
    resumed = WholeStepGraphModule(hidden_size=32, layer_num=2, optimizer=partial(torch.optim.Adam, fused=True))
    fast.speed_up(resumed, "fused")
    second = trainer(max_steps=12, enable_checkpointing=False)
    second.fit(resumed, data(), ckpt_path=tmp_path / "plain.ckpt")
    assert second.global_step == 12 and resumed.graphed_step.graph is not None
    assert {int(state["step"]) for state in second.optimizers[0].state.values()} == {12}


def test_dropout_draws_new_masks_at_every_replay() -> None:
    torch.manual_seed(0)
    net = RowLSTMClassifier(hidden_size=64, layer_num=2, dropout=0.5).use(fast.IMPLEMENTATIONS["fused"]).to(CUDA)
    graphed = GraphedTraining(net)
    images = torch.rand(16, 28, 28, device=CUDA)
    first, second = graphed(images).detach().clone(), graphed(images).detach().clone()
    assert not torch.allclose(first, second)  # a graph replaying one frozen mask would give equal logits
    net.eval()  # eval mode: no graph, no dropout, the same answer twice
    with torch.no_grad():
        torch.testing.assert_close(graphed(images), graphed(images))


def test_data_is_kept_on_the_gpu_and_batches_are_gathered_there(mnist_dir: Path) -> None:
    class FakeTrainer:  # what setup reads of the Trainer: the device the run is on
        class strategy:  # noqa: N801
            root_device = CUDA

    on_gpu = MNISTDataModule(data_dir=str(mnist_dir), download=False)
    on_gpu.trainer = FakeTrainer()
    on_gpu.prepare_data()
    on_gpu.setup("fit")
    on_cpu = MNISTDataModule(data_dir=str(mnist_dir), download=False)
    on_cpu.setup("fit")
    assert on_gpu.train_set.tensors[0].is_cuda and on_gpu.test_set.tensors[1].is_cuda
    torch.manual_seed(3)
    images, labels = next(iter(on_gpu.train_dataloader()))
    torch.manual_seed(3)
    cpu_images, cpu_labels = next(iter(on_cpu.train_dataloader()))
    assert images.is_cuda and torch.equal(images.cpu(), cpu_images) and torch.equal(labels.cpu(), cpu_labels)


@pytest.mark.parametrize("cuda_graph", ["forward_backward", "whole_step"])
def test_graphed_training_steps_never_wait_for_the_gpu(mnist_dir: Path, tmp_path: Path, cuda_graph: str) -> None:
    """Between the steps Lightning writes metrics at, a CUDA-graphed training step in Lightning never makes the
    CPU wait for the GPU (no .item(), no copy of a result to the host), so the CPU queues the next steps while
    the GPU runs this one: the batches are gathered on the device, the metrics are computed only when written
    and handed to Lightning on the CPU (it reads the progress bar's at every step), StopOnNonFiniteLoss reads
    its losses on the written steps only."""
    every = 4  # log_every_n_steps: steps 4, 8, 12... write metrics, and may wait

    class WatchForWaits(L.Callback):
        """torch warns at every synchronising CUDA call from the start of each step from 5 to 25 that writes no
        metrics to the start of the next (its callbacks, Lightning's bookkeeping, the next batch's gathering)."""

        def on_train_batch_start(self, trainer: L.Trainer, *_) -> None:
            step = trainer.global_step + 1  # the step about to run
            torch.cuda.set_sync_debug_mode("warn" if 5 <= step <= 25 and step % every else 0)

    module = fast.module_class(cuda_graph)(hidden_size=64, layer_num=2, optimizer=partial(torch.optim.Adam, fused=True))
    fast.speed_up(module, "fused")
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=30,
        log_every_n_steps=every,
        limit_val_batches=0,
        callbacks=[StopOnNonFiniteLoss(), TQDMProgressBar(refresh_rate=3), WatchForWaits()],  # bar: steps 6, 9...
        logger=TensorBoardLogger(tmp_path),
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    data = MNISTDataModule(data_dir=str(mnist_dir), download=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.fit(module, datamodule=data)
            torch.cuda.set_sync_debug_mode("warn")
            torch.ones(1, device=CUDA).item()  # the control: a wait that must be seen
        finally:
            torch.cuda.set_sync_debug_mode(0)
    # (torch also warns, once, that its sync debug mode is a prototype: not a wait)
    waits = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "a synchronizing CUDA" in str(w.message)]
    graphed = module.graphed.graphed if cuda_graph == "forward_backward" else module.graphed_step.graph
    assert trainer.global_step == 30 and graphed is not None
    assert {"train/loss", "train/acc"} <= set(trainer.progress_bar_metrics)  # read at every step since step 4
    assert len(waits) == 1 and "test_gpu.py" in waits[0], "\n".join(waits)


# the forward and backward graphed with the fused loop, and with the Triton kernels; the whole step with them
@pytest.mark.parametrize("speed", ["speed.cuda_graph=forward_backward", "speed=graphed", "speed=graphed_step"])
def test_train_script_on_the_gpu_with_a_cuda_graph(mnist_dir: Path, tmp_path: Path, speed: str) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "trainer=gpu", speed]
    command += ["max_steps=300", "val_every=150", f"data.data_dir={mnist_dir}", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = OmegaConf.load(run_dir / "metrics.yaml")
    assert metrics["test/acc"] > 0.7  # 300 steps of batch 128 reach ~0.9; an untrained model ~0.1
    # The test figures were drawn in processes forked from this CUDA process (no fallback to drawing them here).
    assert "drawing the rest here" not in result.stdout + result.stderr
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"test/confusion_matrix", "test/reading_00000"} <= set(events.Tags()["images"])
