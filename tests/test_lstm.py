"""Our explicitly unrolled LSTM, the plain model of mnist_lstm/model/lstm.py, against nn.LSTM: same outputs, states
and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_lstm.fast.fused import uniform_dropout
from mnist_lstm.model.lstm import PLAIN, LSTMLayer, RowLSTMClassifier, StackedLSTM, TorchStackedLSTM
from tests.helpers import copy_into_nn_lstm, nn_lstm_grads_as_ours


@pytest.mark.parametrize("layer_num", [1, 2, 3])
def test_stacked_lstm_matches_nn_lstm(layer_num: int) -> None:
    torch.manual_seed(layer_num)
    steps, batch, inputs, hidden = 28, 16, 28, 32
    ours = StackedLSTM(inputs, hidden, layer_num, dropout=0.0, forget_bias=1.0).double()
    reference = nn.LSTM(inputs, hidden, layer_num).double()
    copy_into_nn_lstm(ours, reference)

    x = torch.randn(steps, batch, inputs, dtype=torch.double)
    out, (h, c) = ours(x)
    ref_out, (ref_h, ref_c) = reference(x)
    assert out.shape == (steps, batch, hidden) and h.shape == c.shape == (layer_num, batch, hidden)
    assert (out - ref_out).abs().max() < 1e-5
    assert (h - ref_h).abs().max() < 1e-5
    assert (c - ref_c).abs().max() < 1e-5

    # Gradients through outputs and both final states.
    weights = torch.randn_like(out)
    ((out * weights).sum() + h.sum() + c.pow(2).sum()).backward()
    ((ref_out * weights).sum() + ref_h.sum() + ref_c.pow(2).sum()).backward()
    for layer, (w_grad, b_grad) in zip(ours.layers, nn_lstm_grads_as_ours(ours, reference), strict=True):
        assert (layer.gates.weight.grad - w_grad).abs().max() < 1e-4
        assert (layer.gates.bias.grad - b_grad).abs().max() < 1e-4


def test_parity_in_float32_with_initial_state() -> None:
    torch.manual_seed(0)
    ours = StackedLSTM(28, 64, 2, forget_bias=1.0)
    reference = nn.LSTM(28, 64, 2)
    copy_into_nn_lstm(ours, reference)
    x = torch.randn(28, 8, 28)
    state = (torch.randn(2, 8, 64), torch.randn(2, 8, 64))
    out, (h, c) = ours(x, state)
    ref_out, (ref_h, ref_c) = reference(x, state)
    assert (out - ref_out).abs().max() < 1e-5
    assert (c - ref_c).abs().max() < 1e-5


def test_forget_bias_really_shifts_the_forget_gate() -> None:
    """With all weights zero, c_1 = sigmoid(b_i)*tanh(b_g); c_2 adds sigmoid(b_f + forget_bias)*c_1."""
    layer = LSTMLayer(3, 2, forget_bias=1.0)
    with torch.no_grad():
        layer.gates.weight.zero_()
        layer.gates.bias.zero_()
        layer.gates.bias[4:6] = 1.0  # cell candidate g
    _, (_, c) = layer(torch.zeros(2, 1, 3))
    c1 = torch.sigmoid(torch.tensor(0.0)) * torch.tanh(torch.tensor(1.0))
    expected = torch.sigmoid(torch.tensor(1.0)) * c1 + c1
    assert torch.allclose(c, expected.expand(1, 2))


def test_dropout_hits_every_layer_output_in_training_only() -> None:
    torch.manual_seed(0)
    lstm = StackedLSTM(28, 32, 2, dropout=0.5)
    x = torch.randn(28, 4, 28)
    lstm.train()
    out, _ = lstm(x)
    assert (out == 0).float().mean() > 0.3  # the top layer's output is dropped too
    lstm.eval()
    out_a, _ = lstm(x)
    out_b, _ = lstm(x)
    assert (out_a == 0).float().mean() == 0 and torch.equal(out_a, out_b)


def test_torch_variant_has_the_same_interface_and_forget_bias() -> None:
    torch.manual_seed(0)
    ref = TorchStackedLSTM(28, 16, 3, dropout=0.0, forget_bias=1.0)
    out, (h, c) = ref(torch.randn(28, 5, 28))
    assert out.shape == (28, 5, 16) and h.shape == c.shape == (3, 5, 16)
    # bias_ih + bias_hh on the forget rows is shifted by exactly forget_bias from its init range
    b = ref.lstm.bias_ih_l0[16:32] + ref.lstm.bias_hh_l0[16:32]
    assert b.min() > 1.0 - 2 / 4 - 1e-6 and b.max() < 1.0 + 2 / 4 + 1e-6


@pytest.mark.parametrize("cell", ["custom", "torch"])
def test_classifier_shapes_and_per_row_logits(cell: str) -> None:
    torch.manual_seed(0)
    model = RowLSTMClassifier(hidden_size=32, layer_num=2, cell=cell).eval()
    images = torch.rand(6, 28, 28)
    logits = model(images)
    per_row = model.per_row_logits(images)
    assert logits.shape == (6, 10) and per_row.shape == (6, 28, 10)
    # After the last row, the per-row answer is the model's answer.
    assert torch.allclose(per_row[:, -1], logits, atol=1e-6)
    # And it differs from what the model says after reading only the first row.
    assert not torch.allclose(per_row[:, 0], logits, atol=1e-3)


def test_custom_is_not_nn_lstm() -> None:
    model = RowLSTMClassifier(cell="custom")
    assert not any(isinstance(m, nn.LSTM) for m in model.modules())
    fused = [m.gates for m in model.lstm.layers]
    assert [tuple(g.weight.shape) for g in fused] == [(1024, 28 + 256), (1024, 256 + 256)]


@pytest.mark.parametrize("p", [0.2, 0.25, 0.5])  # uniform: floats for 0.2, random bytes for 0.25 and 0.5
@pytest.mark.parametrize("dropout", [torch.nn.functional.dropout, uniform_dropout], ids=["F.dropout", "uniform"])
def test_dropout_keeps_one_minus_p_scaled_up_and_routes_gradients_through_the_kept(p: float, dropout) -> None:
    """The plain model's F.dropout, and the fast implementations' (its mask drawn as uniform >= p on the CPU)."""
    torch.manual_seed(0)
    x = torch.rand(28, 128, 64, dtype=torch.double) + 0.5  # never 0: a dropped element is exactly 0
    x.requires_grad_()
    y = dropout(x, p, training=True)
    kept = y != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 0.01  # 229,376 draws: 4+ standard deviations
    torch.testing.assert_close(y[kept], (x / (1 - p))[kept])
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.double() / (1 - p))
    assert not torch.equal(kept, dropout(x, p, training=True) != 0)  # a new mask at every call
    assert torch.equal(dropout(x, p, training=False), x) and torch.equal(dropout(x, 0.0, training=True), x)


def test_the_model_computes_with_the_plain_loop_until_told_otherwise() -> None:
    """The seam: a new model runs this file's lstm_loop; `use` hands it another implementation, which changes
    how it computes and nothing it holds. Importing the fast implementations changes nothing in the model."""
    model = RowLSTMClassifier(hidden_size=8, layer_num=2)
    assert model.lstm.implementation is PLAIN and PLAIN.loop.__name__ == "lstm_loop"
    from mnist_lstm import fast

    assert RowLSTMClassifier(hidden_size=8, layer_num=2).lstm.implementation is PLAIN
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.use(fast.IMPLEMENTATIONS["fused"]) is model and model.lstm.implementation.loop is fast.fused_loop
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
