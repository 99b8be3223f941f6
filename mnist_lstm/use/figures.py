"""What the model believes after each row it reads, what its cells do meanwhile, and where it goes wrong, as plain
matplotlib `Figure`s (no pyplot state): the scripts save them, the training callback logs them."""

from __future__ import annotations

import math
from typing import Any

import torch
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.patches import Rectangle
from matplotlib.ticker import PercentFormatter
from torch import Tensor

from mnist_lstm.model.lstm import RowLSTMClassifier
from mnist_lstm.use.cell import CellReadings, changing_units

TRUE = "#2ca02c"  # the true class, in green
WRONG = "#d62728"  # the predicted class where it is not the true one, in red
ANSWER = "#1f77b4"  # the predicted class where the true one is unknown (your own image), in blue
OTHER = "#b8b8b8"
UNREAD = "#7f7f7f"  # veil over the rows the model has not read yet


@torch.no_grad()
def per_row_probabilities(model: RowLSTMClassifier | Any, images: Tensor) -> Tensor:
    """images (batch, 28, 28) -> class probabilities (batch, 28, 10) after each row read (the last: the answer)."""
    return model.per_row_logits(images).softmax(dim=-1)


# The grid of the rows read, in units of one digit pixel. A cell: the digit, a gap (the 0..1 labels in the first
# column), the bar chart, a margin; above it, its title; below the bottom cells, the classes.
DIGIT, GAP, CHART, MARGIN, TITLE, LABELS = 28, 7, 67, 9, 8, 3
CELL_WIDTH, CELL_HEIGHT = DIGIT + GAP + CHART + MARGIN, TITLE + DIGIT + LABELS


def reading_figure(image: Tensor, probabilities: Tensor, label: int | None = None, title: str = "") -> Figure:
    """The tutorial's figure: the digit, every class's probability against the rows read, and the row grid.
    image (28, 28) in [0, 1]; probabilities (28, 10) from per_row_probabilities; label the true class if known."""
    image, probabilities = image.cpu(), probabilities.detach().cpu()
    rows, classes = probabilities.shape
    answer = int(probabilities[-1].argmax())
    # Fixed positions (GridSpec), not constrained layout: the row grid below keeps the aspect it is drawn in.
    fig = Figure(figsize=(16, 17))
    outer = GridSpec(
        2, 1, figure=fig, height_ratios=[1, 1.75], hspace=0.12, left=0.05, right=0.98, top=0.94, bottom=0.02
    )

    # The digit and the whole story at a glance.
    head = outer[0].subgridspec(1, 2, width_ratios=[1, 3.4], wspace=0.12)
    ax_digit, ax_lines = fig.add_subplot(head[0]), fig.add_subplot(head[1])
    ax_digit.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax_digit.set_yticks([0, 6, 13, 20, 27], ["row 1", "row 7", "row 14", "row 21", "row 28"])
    ax_digit.set_xticks([])
    truth = f"true {label}, " if label is not None else ""
    ax_digit.set_title(f"{truth}predicted {answer} ({probabilities[-1, answer]:.0%})", fontsize=13)
    steps = torch.arange(1, rows + 1)
    for k in range(classes):
        width, alpha, weight = (3.0, 1.0, "bold") if k in (label, answer) else (1.2, 0.6, "normal")
        ax_lines.plot(steps, probabilities[:, k], color=f"C{k}", linewidth=width, alpha=alpha, label=str(k))
        at_end = (rows, float(probabilities[-1, k]))
        style = {"color": f"C{k}", "fontsize": 11, "va": "center", "fontweight": weight}
        ax_lines.annotate(str(k), at_end, xytext=(4, 0), textcoords="offset points", **style)
    ax_lines.set(xlim=(1, rows + 1), ylim=(-0.02, 1.02), xlabel="rows read", ylabel="probability")
    ax_lines.set_xticks([1, 4, 7, 10, 13, 16, 19, 22, 25, 28])
    ax_lines.grid(alpha=0.3)
    ax_lines.legend(title="class", loc="upper left", ncols=10, fontsize=10, columnspacing=1.2, handlelength=1.5)
    ax_lines.set_title("probability of each class after each row read", fontsize=13)

    # The 7x4 grid of the tutorial: after row t, the digit with the rows not read yet veiled, beside a bar chart of
    # the 10 probabilities (0..1). All in one axes placed by hand, the shapes in a few collections: matplotlib's
    # time to build and draw a figure grows with its axes and artists.
    ax = fig.add_subplot(outer[1])
    columns, bar_width, answer_colour = 4, CHART / classes, ANSWER if label is None else WRONG
    bars, bar_colours, veils, cuts, frames, halves = [], [], [], [], [], []
    for t in range(rows):
        read, (r, c) = t + 1, divmod(t, columns)
        x, top = c * CELL_WIDTH, r * CELL_HEIGHT + TITLE  # the digit's top left corner (y grows downwards)
        chart, bottom = x + DIGIT + GAP, top + DIGIT
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", extent=(x, x + DIGIT, bottom, top))
        if read < rows:  # the rows not read yet, veiled under a red line
            veils.append(Rectangle((x, top + read), DIGIT, DIGIT - read))
            cuts.append([(x, top + read), (x + DIGIT, top + read)])
        predicted = int(probabilities[t].argmax())
        centres = [chart + (k + 0.5) * bar_width for k in range(classes)]
        for centre, probability in zip(centres, probabilities[t].tolist(), strict=True):  # up from the bottom
            bars.append(Rectangle((centre - 0.4 * bar_width, bottom), 0.8 * bar_width, -DIGIT * probability))
        bar_colours += [TRUE if k == label else answer_colour if k == predicted else OTHER for k in range(classes)]
        frames.append(Rectangle((chart, top), CHART, DIGIT))
        halves.append([(chart, top + DIGIT / 2), (chart + CHART, top + DIGIT / 2)])
        caption = f"row {read}: {predicted} ({probabilities[t, predicted]:.0%})"
        ax.text(chart + CHART / 2, top - 0.8, caption, ha="center", va="bottom", fontsize=9)
        if c == 0:  # the probability scale, shared by every chart
            for value in (0, 0.5, 1):
                ax.text(chart - 0.8, bottom - value * DIGIT, f"{value:g}", ha="right", va="center", fontsize=7)
        if t + columns >= rows:  # the classes under the bottom charts (every chart has them in the same order)
            for k, centre in enumerate(centres):
                ax.text(centre, bottom + 0.6, str(k), ha="center", va="top", fontsize=7)
    ax.add_collection(PatchCollection(bars, facecolors=bar_colours, linewidth=0))
    ax.add_collection(PatchCollection(veils, facecolor=UNREAD, alpha=0.75, linewidth=0))
    ax.add_collection(LineCollection(cuts, colors=WRONG, linewidths=1.0))
    ax.add_collection(PatchCollection(frames, facecolor="none", edgecolor="black", linewidth=0.8))
    ax.add_collection(LineCollection(halves, colors="black", linewidths=0.8, alpha=0.3))
    cell_rows = math.ceil(rows / columns)
    ax.set(xlim=(-GAP, columns * CELL_WIDTH - MARGIN), ylim=(cell_rows * CELL_HEIGHT, 0), aspect="equal")
    ax.set_anchor("N")  # right under the heading; the fixed aspect leaves any spare height below
    ax.set_axis_off()
    colours = "(the predicted class blue)" if label is None else "(true class green, a wrong answer red)"
    heading = f"after each row: the rows read so far (unread rows veiled) and the class probabilities {colours}"
    fig.text(0.5, ax.get_position().y1 + 0.012, heading, ha="center", fontsize=12)
    if title:
        fig.suptitle(title, fontsize=15, fontweight="bold")
    return fig


CAPTION = (
    "Read across: row t of the digit, the model's answer having read rows 1..t, and what layer {layer}'s cells do at "
    "row t. Forget gate near 1: the cell keeps its memory; near 0: it forgets. Input gate near 1: it writes the new\n"
    "candidate into its memory. Cell state: that memory (red +, blue -), which the output gate shows to the next "
    "layer and, after row 28, to the classifier. Units: the {units} whose cell state ranges most over the rows,\n"
    "ordered by their cell state after row 28. Row importance: how much the probability of the answer ({answer}) "
    "falls when that row alone is blanked (grey: blanking it makes the answer surer)."
)


def cell_figure(
    image: Tensor,
    probabilities: Tensor,
    readings: CellReadings,
    importance: Tensor,
    label: int | None = None,
    layer: int = -1,
    units: int = 16,
    title: str = "",
) -> Figure:
    """Inside the cell, one digit, every panel on the same row axis (row 1 at the top, as in the digit): the digit;
    the class probabilities after each row; `layer`'s forget gate, input gate and cell state of the `units` units
    that change most (changing_units); each row's importance. image (28, 28) in [0, 1]; probabilities (28, 10) from
    per_row_probabilities; readings read_cell's of this one image (a batch of one); importance (28,) from
    row_importance; label the true class if known."""
    image, probabilities, importance = image.cpu(), probabilities.detach().cpu(), importance.detach().cpu()
    forget, write, cell = (field[layer, 0].detach().cpu() for field in (readings.forget, readings.input, readings.cell))
    chosen = changing_units(cell, units)
    rows, classes = probabilities.shape
    answer, layers = int(probabilities[-1].argmax()), readings.cell.shape[0]
    number = range(1, layers + 1)[layer]  # counted from 1, the layer reading the pixels

    fig = Figure(figsize=(15, 7.5), layout="constrained")
    axes = fig.subplots(1, 6, sharey=True, width_ratios=[28, 10, len(chosen), len(chosen), len(chosen), 14])
    ax_digit, ax_probs, ax_forget, ax_input, ax_cell, ax_rows = axes

    def heatmap(ax, values: Tensor, heading: str, xlabel: str, **style):
        ax.set_title(heading, fontsize=11)
        ax.set_xlabel(xlabel)
        extent = (-0.5, values.shape[1] - 0.5, rows + 0.5, 0.5)  # row t drawn at t: the axis all panels share
        return ax.imshow(values, aspect="auto", interpolation="nearest", extent=extent, **style)

    truth = f"true {label}, " if label is not None else ""
    heading = f"{truth}predicted {answer} ({probabilities[-1, answer]:.0%})"
    heatmap(ax_digit, image, heading, "", cmap="gray", vmin=0, vmax=1)
    ax_digit.set(xticks=[], yticks=[1, 7, 14, 21, 28], ylabel="row read (one per step)")
    shown = heatmap(ax_probs, probabilities, "answer after the row", "class", cmap="Greys", vmin=0, vmax=1)
    ax_probs.set_xticks(range(classes))
    answer_colour = ANSWER if label is None else WRONG
    for k, tick in enumerate(ax_probs.get_xticklabels()):  # the true class green, a wrong answer red
        tick.set_color(TRUE if k == label else answer_colour if k == answer else "black")
    fig.colorbar(shown, ax=ax_probs, location="bottom", label="probability")
    where = f"unit of layer {number} of {layers}"
    heatmap(ax_forget, forget[:, chosen], "forget gate f", where, cmap="viridis", vmin=0, vmax=1)
    shown = heatmap(ax_input, write[:, chosen], "input gate i", where, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(shown, ax=[ax_forget, ax_input], location="bottom", label="gate: 0 shut, 1 open")
    extreme = float(cell[:, chosen].abs().max()) or 1.0
    shown = heatmap(ax_cell, cell[:, chosen], "cell state c", where, cmap="RdBu_r", vmin=-extreme, vmax=extreme)
    fig.colorbar(shown, ax=ax_cell, location="bottom", label="memory c (0: none)")
    for ax in (ax_forget, ax_input, ax_cell):
        ax.set_xticks(range(len(chosen)), [str(u) for u in chosen.tolist()], rotation=90, fontsize=7)

    steps = torch.arange(1, rows + 1)
    ax_rows.barh(steps, importance, height=0.8, color=[ANSWER if v >= 0 else OTHER for v in importance.tolist()])
    ax_rows.axvline(0, color="black", linewidth=0.8)
    ax_rows.set_title("row importance", fontsize=11)
    ax_rows.set_xlabel(f"fall of P({answer}), row blanked")
    ax_rows.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax_rows.locator_params(axis="x", nbins=3)
    ax_digit.set_ylim(rows + 0.5, 0.5)  # shared: row 1 at the top in every panel
    fig.supxlabel(CAPTION.format(layer=number, units=len(chosen), answer=answer), fontsize=9, ha="center")
    if title:
        fig.suptitle(title, fontsize=14, fontweight="bold")
    return fig


def confusion_figure(confusion: Tensor, title: str = "") -> Figure:
    """Counts of (true, predicted) pairs, coloured by the share of each true class; each row's accuracy at right."""
    confusion = confusion.detach().cpu().long()
    classes = confusion.shape[0]
    shares = confusion / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    accuracy = confusion.diag().sum() / confusion.sum().clamp(min=1)

    fig = Figure(figsize=(8.5, 7.5), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, j in confusion.nonzero().tolist():
        colour = "white" if shares[i, j] > 0.5 else ("#b00000" if i != j else "black")
        ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=9, color=colour)
    ax.set(xticks=range(classes), yticks=range(classes), xlabel="predicted digit", ylabel="true digit")
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(classes), [f"{float(a):.1%}" for a in shares.diag()])
    right.set_ylabel("accuracy of the true digit")
    fig.colorbar(shown, ax=ax, location="bottom", shrink=0.6, label="share of the true digit's images")
    ax.set_title(f"{title + ': ' if title else ''}accuracy {float(accuracy):.2%} on {int(confusion.sum()):,} images")
    return fig
