"""The report's figures: a heatmap over bits x hidden, one panel per cell (success, steps to solve,
proved), and accuracy against test width (generalisation); matplotlib with the Agg backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnn_jax.apps.report_jobs import Group


def _grid(groups: list[Group], cell: str, value) -> tuple[list, list, np.ndarray]:
    bits = sorted({g.bits for g in groups})
    hidden = sorted({g.hidden for g in groups})
    grid = np.full((len(hidden), len(bits)), np.nan)
    for g in groups:
        if g.cell == cell:
            grid[hidden.index(g.hidden), bits.index(g.bits)] = value(g)
    return bits, hidden, grid


def heatmap(path: Path, groups: list[Group], value, title: str, cmap: str, vmin=None, vmax=None, fmt="{:.2f}") -> None:
    """One panel per cell: `value(group)` over bits (columns) x hidden (rows); blank where none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({g.cell for g in groups})
    if vmin is None or vmax is None:  # one colour scale for every panel, under the one colorbar
        values = np.array([value(g) for g in groups], dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            vmin = values.min() if vmin is None else vmin
            vmax = values.max() if vmax is None else vmax
    # At least 6 inches wide, so that the title of a one-cell, 2 x 2 sweep is not cut off.
    fig, axes = plt.subplots(
        1, len(cells), figsize=(max(6.0, 1.2 + 2.6 * len(cells)), 3.2), squeeze=False, constrained_layout=True
    )
    image = None
    for ax, cell in zip(axes[0], cells):
        bits, hidden, grid = _grid(groups, cell, value)
        image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_facecolor("0.85")
        ax.set_xticks(range(len(bits)), [str(b) for b in bits])
        ax.set_yticks(range(len(hidden)), [str(h) for h in hidden])
        ax.set_xlabel("bits")
        ax.set_title(cell)
        for (r, c), v in np.ndenumerate(grid):
            if not np.isnan(v):
                red, green, blue, _ = image.cmap(image.norm(v))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7, color="w" if dark else "k")
    axes[0][0].set_ylabel("hidden units")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def generalization_plot(path: Path, groups: list[Group]) -> None:
    """Accuracy against test width: the training width (final accuracy) then each generalisation
    width; one panel per (training bits, cell), one line per hidden size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({g.cell for g in groups})
    bits = sorted({g.bits for g in groups})
    hidden = sorted({g.hidden for g in groups})
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(hidden)))
    fig, axes = plt.subplots(
        len(bits),
        len(cells),
        figsize=(2.8 * len(cells), 2.0 * len(bits) + 0.6),
        squeeze=False,
        sharex=True,
        sharey=True,
        constrained_layout=True,
    )
    for g in groups:
        ax = axes[bits.index(g.bits)][cells.index(g.cell)]
        curve = {g.bits: g.final_accuracy, **g.generalization()}
        xs = sorted(curve)
        ax.plot(
            xs, [curve[x] for x in xs], marker="o", ms=3, color=colors[hidden.index(g.hidden)], label=f"h={g.hidden}"
        )
    for r, b in enumerate(bits):
        for c, cell in enumerate(cells):
            ax = axes[r][c]
            ax.set_xscale("log", base=2)
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{cell}, trained on {b} bits", fontsize=8)
            ax.grid(alpha=0.3)
        axes[r][0].set_ylabel("exact accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("test bits")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.savefig(path, dpi=80)
    plt.close(fig)


FIGURES = {
    "success.png": "success rate over bits x hidden, one panel per cell",
    "proved.png": "fraction of seeds proved correct at every length",
    "steps.png": "median steps to solve (seeds that solved)",
    "generalization.png": "accuracy vs test bit width",
}
