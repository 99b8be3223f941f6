# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # An LSTM that reads digits row by row: a tutorial
#
# This project classifies MNIST digits with a stacked LSTM that reads each 28 × 28 image **one row per timestep**:
# 28 timesteps of 28 pixels, then a linear classifier on the top layer's last hidden state. This notebook goes
# from the equations to a trained model you can look inside, in a few minutes on a laptop's CPU:
#
# 1. the LSTM cell: its equations, and the order in which `nn.LSTM` stores its gates;
# 2. one cell written out in a few lines of torch, checked against `nn.LSTM`, then against this project's own loop;
# 3. the project's model, built from its Hydra config as `scripts/train.py` builds it;
# 4. a short real training run;
# 5. what the trained model sees: its answer after each row, and its gates while it reads;
# 6. where to go next.
#
# Run it from a clone of the project: `pip install -e . jupyterlab`, then `jupyter lab docs/tutorial.ipynb`.

# %% [markdown]
# Everything it needs is imported here, and the three settings below are all there is to change: how long to
# train, where MNIST goes (downloaded on the first run, about 11 MB, as `scripts/train.py` does) and where the
# run's checkpoints and TensorBoard events go. The tests set them through the environment, to train for a few
# steps on their own copy of MNIST; you can simply edit the defaults.

# %%
# %matplotlib inline
import os
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from mnist_lstm.checkpoint import load_model
from mnist_lstm.cli import CONF
from mnist_lstm.data import load_mnist
from mnist_lstm.model.lstm import LSTMLayer, lstm_loop
from mnist_lstm.run.train import build_model, train
from mnist_lstm.use.cell import read_cell, row_importance
from mnist_lstm.use.figures import cell_figure, per_row_probabilities, reading_figure

MAX_STEPS = int(os.environ.get("TUTORIAL_MAX_STEPS", 300))  # training steps: 300 take about half a minute
REPO = CONF.parent  # the clone (CONF is its conf/ folder)
DATA_DIR = Path(os.environ.get("TUTORIAL_DATA_DIR", REPO / "data"))  # MNIST goes into DATA_DIR/MNIST/raw/
LOG_DIR = Path(os.environ.get("TUTORIAL_LOG_DIR", REPO / "logs"))  # the run goes into LOG_DIR/tutorial/runs/

# %% [markdown]
# ## 1. The LSTM cell
#
# At timestep $t$ the cell reads its input $x_t$ (here: row $t$ of the image, 28 pixels) and its own previous
# hidden state $h_{t-1}$, and computes four gates from them, each a vector of $H$ numbers (one per unit):
#
# $$
# \begin{aligned}
# i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) && \text{input gate: how much to write} \\
# f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) && \text{forget gate: how much memory to keep} \\
# g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) && \text{cell candidate: what to write} \\
# o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) && \text{output gate: how much memory to show} \\
# c_t &= f_t \odot c_{t-1} + i_t \odot g_t && \text{the memory (cell state)} \\
# h_t &= o_t \odot \tanh(c_t) && \text{what the cell shows (hidden state)}
# \end{aligned}
# $$
#
# $\sigma$ is the sigmoid (between 0 and 1: a gate), $\odot$ the elementwise product, and $c_0 = h_0 = 0$.
# The gates are in $(0, 1)$, so $c_t$ is a running blend: a forget gate near 1 keeps the memory, near 0 wipes it.
#
# `nn.LSTM` stores the four gates' weights stacked in one matrix, **in the order i, f, g, o**:
# `weight_ih_l0` is $[W_{ii}; W_{if}; W_{ig}; W_{io}]$, shape $(4H, \text{input})$, `weight_hh_l0` is
# $[W_{hi}; W_{hf}; W_{hg}; W_{ho}]$, shape $(4H, H)$, and the biases `bias_ih_l0`, `bias_hh_l0` are $(4H,)$.
# One matrix product gives all four gates at once; `chunk(4)` splits them.

# %% [markdown]
# ## 2. One cell in a few lines of torch
#
# The equations above, as a function of one timestep, for a batch:

# %%
def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One timestep: x (batch, input), h and c (batch, H) -> the new h and c."""
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (batch, 4H): the four gates side by side
    i, f, g, o = gates.chunk(4, dim=1)  # nn.LSTM's order
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c


# %% [markdown]
# A reference `nn.LSTM` with random weights reads a random batch of 3 "images" of 28 rows (time-major, as
# `nn.LSTM` expects: `(time, batch, input)`). Our loop, with the very same tensors as weights, must give the same
# outputs. Everything is in float64 so that the two agree to the last digits (in float32 they differ by rounding).

# %%
torch.manual_seed(0)
H = 4
reference = nn.LSTM(input_size=28, hidden_size=H).double()
w_ih, w_hh = reference.weight_ih_l0.detach(), reference.weight_hh_l0.detach()
b_ih, b_hh = reference.bias_ih_l0.detach(), reference.bias_hh_l0.detach()
print("weight_ih_l0", tuple(w_ih.shape), " weight_hh_l0", tuple(w_hh.shape), " bias_ih_l0", tuple(b_ih.shape))

x = torch.rand(28, 3, 28, dtype=torch.float64)  # (rows, batch, pixels per row)
h = c = torch.zeros(3, H, dtype=torch.float64)
outputs = []
for x_t in x:  # one row per timestep
    h, c = lstm_step(x_t, h, c, w_ih, w_hh, b_ih, b_hh)
    outputs.append(h)
ours = torch.stack(outputs)  # (rows, batch, H): h after every row

with torch.no_grad():
    expected, (h_n, c_n) = reference(x)
assert torch.allclose(ours, expected) and torch.allclose(h, h_n[0]) and torch.allclose(c, c_n[0])
print("largest difference from nn.LSTM:", float((ours - expected).abs().max()))

# %% [markdown]
# **The project's loop.** [`mnist_lstm/model/lstm.py`](../mnist_lstm/model/lstm.py) computes the same thing with
# two changes for speed, not for meaning:
#
# - one **fused weight** per layer, `[weight_ih | weight_hh]`, shape $(4H, \text{input} + H)$: the gates are
#   $[x_t, h_{t-1}] \cdot W^\top + b$, one bias (the sum $b_{ih} + b_{hh}$);
# - the input half of every timestep, $x_t W_{ih}^\top$, is computed for all 28 rows in **one** matrix product
#   before the loop ("premul"); only $h_{t-1} W_{hh}^\top$, which needs the previous step, stays inside it.
#
# `lstm_loop(x, weight, bias, h0, c0)` is that loop over one layer:

# %%
weight = torch.cat([w_ih, w_hh], dim=1)  # (4H, 28 + H)
zeros = torch.zeros(3, H, dtype=torch.float64)
looped, (h_last, c_last) = lstm_loop(x, weight, b_ih + b_hh, zeros, zeros)
assert torch.allclose(looped, expected) and torch.allclose(c_last, c_n[0])
print("lstm_loop: largest difference from nn.LSTM:", float((looped - expected).abs().max()))

# %% [markdown]
# `LSTMLayer` holds that fused weight as an `nn.Linear` called `gates`, and adds TensorFlow's `forget_bias`: 1.0
# added to the forget gate's pre-activation, so that a freshly initialised cell starts by *keeping* its memory
# (the TensorFlow tutorial this project reproduces uses it). In `nn.LSTM`'s terms that is +1 on rows $H..2H$ of
# the bias:

# %%
layer = LSTMLayer(input_size=28, hidden_size=H, forget_bias=1.0).double()
with torch.no_grad():
    layer.gates.weight.copy_(weight)
    layer.gates.bias.copy_(b_ih + b_hh)
    reference.bias_ih_l0[H : 2 * H] += 1.0  # the forget bias, in nn.LSTM's layout
    expected_with_bias, _ = reference(x)
    from_layer, _ = layer(x)
assert torch.allclose(from_layer, expected_with_bias)
print("LSTMLayer: largest difference from nn.LSTM:", float((from_layer - expected_with_bias).abs().max()))

# %% [markdown]
# The project's tests check the same for outputs, states and gradients, for stacks of layers, and for every
# faster implementation of the loop (`tests/test_lstm.py`, `tests/test_fast_paths.py`).
#
# ## 3. The project's model, from its config
#
# Everything a run can change lives in [`conf/`](../conf): `conf/train.yaml` and one folder per group. Hydra
# composes them; a published recipe is one override, `experiment=speedrun`
# ([`conf/experiment/speedrun.yaml`](../conf/experiment/speedrun.yaml): one layer of 96 units, batches of 512, a
# one-cycle learning-rate schedule, training images shifted by up to 2 pixels). Here the config is composed with
# Hydra's compose API, as `scripts/train.py` composes it from its command line, and the paths a Hydra run would
# make up are set by hand.

# %%
overrides = [
    "experiment=speedrun",  # the recipe
    f"max_steps={MAX_STEPS}",  # its budget cut to this notebook's (the schedule follows: total_steps=max_steps)
    "trainer=cpu",  # leave this out to train on a GPU when there is one
]
with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose(config_name="train", overrides=overrides)
run_dir = LOG_DIR / "tutorial" / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
cfg.paths.data_dir = str(DATA_DIR)
cfg.paths.output_dir = str(run_dir)  # in scripts/train.py, Hydra makes this directory

knobs = ["layer_num", "hidden_size", "dropout", "lr", "batch_size", "max_steps", "val_every", "seed"]
print(OmegaConf.to_yaml({key: cfg[key] for key in knobs}))

# %% [markdown]
# `build_model` (in [`mnist_lstm/run/train.py`](../mnist_lstm/run/train.py)) turns `cfg.model` plus those top-level
# knobs into the LightningModule. Its `net` is the plain-PyTorch `RowLSTMClassifier`: a `StackedLSTM` of
# `LSTMLayer`s, then a linear classifier from the top layer's last hidden state to 10 classes.

# %%
module = build_model(cfg)
print(module.net)
shapes = {name: tuple(p.shape) for name, p in module.net.named_parameters()}
count = sum(p.numel() for p in module.net.parameters())
print(pd.Series(shapes, name="shape").to_string())
print(f"{count:,} parameters")

# Per layer: the fused gate weight 4H x (input + H) and its bias 4H; then the classifier H x 10 and its bias 10.
hidden, layers = cfg.hidden_size, cfg.layer_num
inputs = [28] + [hidden] * (layers - 1)
assert count == sum(4 * hidden * (n + hidden + 1) for n in inputs) + hidden * 10 + 10

# %% [markdown]
# ## 4. Train it
#
# `train(cfg)` is the body of `scripts/train.py` (what `python scripts/train.py experiment=speedrun max_steps=300
# trainer=cpu` runs): it builds the data, the model, the callbacks and the Trainer from the config, trains, and
# tests the checkpoint best on validation on the official 10,000 test images. The data are 55,000 training and
# 5,000 validation images from MNIST's training set.
#
# With `MAX_STEPS = 300` this takes about half a minute on two CPU cores and reaches about 98% on the test set;
# the full recipe (`MAX_STEPS = 1000`) reaches 99% in under a minute.

# %%
metrics = train(cfg)
print({key: round(value, 4) for key, value in metrics.items()})
print("run directory:", run_dir)

# %% [markdown]
# The run directory holds the checkpoints and the TensorBoard events: `tensorboard --logdir logs/tutorial` shows
# the curves, the test confusion matrix and how the model reads three test digits. The checkpoint carries the
# model's own architecture, so `load_model` rebuilds it without the config:

# %%
best = next((run_dir / "checkpoints").glob("step*.ckpt"))  # the best on validation: the one tested
model = load_model(best).net  # RowLSTMClassifier, in eval mode, on the CPU
print(best.name)

# %% [markdown]
# ## 5. Watch it read
#
# The classifier can read the top layer's hidden state after *any* row, not only the last: that is the model's
# answer having read the image that far. `per_row_probabilities` gives the 10 class probabilities after each of
# the 28 rows, and `reading_figure` draws them (the figure of the TensorFlow tutorial). Test digit #3869 is a 9
# that even a fully trained model gets wrong (see the README); change `INDEX` to look at any other of the 10,000.

# %%
images, labels = load_mnist(DATA_DIR, train=False)  # (10000, 28, 28) in [0, 1], (10000,)
INDEX = 3869
image, label = images[INDEX], int(labels[INDEX])
probabilities = per_row_probabilities(model, image[None])[0]  # (rows, classes)
reading_figure(image, probabilities, label=label, title=f"test digit #{INDEX} after {MAX_STEPS} steps of training")

# %% [markdown]
# **Inside the cell.** `read_cell` runs the model's own loop (`lstm_loop` with `record=`) and keeps every gate
# it computed: each field of its answer is `(layers, images, rows, units)`. Here are the forget gates of the
# top layer's six units whose forget gate moves most while this digit is read, every third row:

# %%
readings = read_cell(model, image[None])
i, f, g, o, c, h = (field[-1, 0] for field in readings)  # the top layer, this image: each (rows, units)
units = f.std(dim=0).argsort(descending=True)[:6].tolist()
rows = pd.RangeIndex(1, 29, name="row")
pd.DataFrame(f[:, units].numpy(), index=rows, columns=[f"unit {u}" for u in units]).iloc[::3].round(2)

# %% [markdown]
# They are the equations of section 1, exactly: each cell state is the previous one, kept by the forget gate,
# plus the candidate, let in by the input gate; and the classifier reading the last hidden state gives the model's
# answer.

# %%
c_before = torch.cat([torch.zeros_like(c[:1]), c[:-1]])  # c_{t-1}, starting from 0
assert torch.allclose(c, f * c_before + i * g, atol=1e-6)
assert torch.allclose(h, o * torch.tanh(c), atol=1e-6)
assert torch.allclose(model.classifier(h[-1]), model(image[None])[0], atol=1e-5)

fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), width_ratios=[1, 2, 2, 2], layout="constrained")
axes[0].imshow(image, cmap="gray")
axes[0].set(title=f"test digit #{INDEX}", xticks=[], yticks=[0, 6, 13, 20, 27], yticklabels=[1, 7, 14, 21, 28])
titles = ["forget gate $f_t$", "input gate $i_t$", "cell state $c_t$"]
for ax, values, name in zip(axes[1:], [f, i, c], titles, strict=True):
    ax.plot(range(1, 29), values[:, units].numpy(), label=[f"unit {u}" for u in units])
    ax.set(title=name, xlabel="row read", xticks=[1, 7, 14, 21, 28])
    ax.grid(alpha=0.3)
axes[-1].legend(fontsize=8, loc="best")
plt.show()

# %% [markdown]
# **Which rows matter?** `row_importance` blanks one row at a time and measures how much the probability of the
# model's answer falls: a tall bar is a row the answer depends on; a grey one, pointing left, a row without which
# the model would be surer.

# %%
importance = row_importance(model, image)  # (rows,)
answer = int(probabilities[-1].argmax())
fig, (ax_digit, ax_bars) = plt.subplots(1, 2, figsize=(9, 4), width_ratios=[1, 2], layout="constrained")
ax_digit.imshow(image, cmap="gray")
ax_digit.set(title=f"test digit #{INDEX}", xticks=[], yticks=[0, 6, 13, 20, 27], yticklabels=[1, 7, 14, 21, 28])
ax_bars.barh(range(1, 29), importance.numpy(), color=["C7" if v < 0 else "C0" for v in importance.tolist()])
ax_bars.set(ylim=(28.5, 0.5), ylabel="row blanked", xlabel=f"fall in the probability of {answer}")
ax_bars.grid(axis="x", alpha=0.3)
plt.show()

# %% [markdown]
# `cell_figure` puts it all together: the digit, the answer after each row, which rows matter, and the gates of
# the units of one layer (by default the top one) as it reads.

# %%
cell_figure(image, probabilities, readings, importance, label=label, title=f"inside the cell: test digit #{INDEX}")

# %% [markdown]
# ## 6. Where to go next
#
# - **Train the published recipes** from the command line: `python scripts/train.py experiment=best` (99.3% on the
#   test set), `experiment=tutorial` (the TensorFlow tutorial's recipe, exactly), or any knob:
#   `python scripts/train.py layer_num=3 hidden_size=128`. `python scripts/train.py --help` lists every key; the
#   [README](../README.md) has the results and what each run costs.
# - **Sweeps**: a grid with `-m layer_num=1,2,3 hidden_size=64,128,256`, Optuna with `hparams_search=optuna`, in
#   parallel or on SLURM: [docs/sweeps.md](sweeps.md).
# - **Look at a trained model**: `python scripts/visualize.py ckpt_path=<checkpoint> wrong=5` draws the digits it
#   gets most confidently wrong; the live demo lets you draw your own digit and watch it being read:
#   `python scripts/demo.py ckpt_path=<checkpoint>` ([docs/demo.md](demo.md)). The checkpoint of this notebook's
#   run is `best` above.
# - **The model and its fast paths**: [docs/model.md](model.md) explains `mnist_lstm/model/lstm.py`, the
#   hand-written backward of the fused loop, the Triton kernels and CUDA graphs, all tested against `nn.LSTM`.
#
# *This notebook is generated from its text twin [`docs/tutorial.py`](tutorial.py) (jupytext's percent format),
# the file to edit: after a change, `jupytext --to ipynb docs/tutorial.py` writes the notebook anew, without
# outputs; the tests check that the two agree and run the notebook top to bottom.*
