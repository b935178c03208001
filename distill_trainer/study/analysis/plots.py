"""The study's figures as PNG files (matplotlib, no display needed). Each takes the table that
`distill_trainer.analysis` computes and a path, and returns the path."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REFERENCE_STYLES = [("tab:red", "--"), ("tab:green", ":"), ("tab:purple", "-."), ("tab:brown", "--"), ("black", ":")]


def reference_style(index: int) -> dict:
    """The colour and dash of the index-th reference line, cycling, so lines at nearly one value stay apart.

    Args:
        index: The line's position among the figure's reference lines.
    """
    color, linestyle = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
    return {"color": color, "linestyle": linestyle, "linewidth": 1.1}


def save(figure, path: str) -> str:
    """Lay out a figure, write it as a PNG (120 dpi), close it and return the path.

    Args:
        figure: The matplotlib figure; it is closed, so it cannot be drawn on afterwards.
        path: The PNG file to write.
    """
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def gap_bars(gaps: pd.DataFrame, path: str) -> str:
    """Share of the teacher-baseline gap each student closes, one group of bars per task.

    Args:
        gaps: `stats.gap_table`'s rows (task, method, gap_closed as a fraction; plotted in %).
        path: The PNG file to write.
    """
    tasks, methods = list(dict.fromkeys(gaps.task)), list(dict.fromkeys(gaps.method))
    figure, axis = plt.subplots(figsize=(3 + 0.5 * len(methods) * len(tasks), 4))
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        values = [gaps[(gaps.task == t) & (gaps.method == method)].gap_closed.mean() for t in tasks]
        axis.bar(np.arange(len(tasks)) + i * width, 100 * np.array(values), width, label=method)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(np.arange(len(tasks)) + width * (len(methods) - 1) / 2, tasks)
    axis.set_ylabel("% of teacher-baseline gap closed")
    axis.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(figure, path)


def grouped_bars(table: pd.DataFrame, path: str, ylabel: str, title: str) -> str:
    """Rows of `table` as groups, columns as bars (accuracy by agreement region, errors by category).

    Args:
        table: The values to plot: one group per row (its index labels the groups), one bar per column.
        path: The PNG file to write.
        ylabel: The y axis's label.
        title: The figure's title.
    """
    figure, axis = plt.subplots(figsize=(max(5, 1.1 * len(table)), 4))
    width = 0.8 / max(len(table.columns), 1)
    for i, column in enumerate(table.columns):
        axis.bar(np.arange(len(table)) + i * width, table[column].to_numpy(dtype=float), width, label=column)
    axis.set_xticks(
        np.arange(len(table)) + width * (len(table.columns) - 1) / 2, table.index, rotation=30, ha="right", fontsize=8
    )
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(figure, path)


def heatmap(
    matrix: pd.DataFrame,
    path: str,
    title: str,
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    xlabel: str = "",
    ylabel: str = "",
) -> str:
    """A labelled heatmap with the values written in the cells (ranking of methods x tasks, T x alpha grids).

    Args:
        matrix: The values; its index labels the rows, its columns the columns. A NaN cell is left unwritten.
        path: The PNG file to write.
        title: The figure's title.
        fmt: The format of each cell's value.
        cmap: The matplotlib colormap's name.
        xlabel: The x axis's label.
        ylabel: The y axis's label.
    """
    figure, axis = plt.subplots(figsize=(max(4.5, 1.5 + 1.2 * matrix.shape[1]), 1 + 0.45 * matrix.shape[0]))
    values = matrix.to_numpy(dtype=float)
    image = axis.imshow(values, cmap=cmap, aspect="auto")
    axis.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns])
    axis.set_yticks(range(matrix.shape[0]), [str(i) for i in matrix.index], fontsize=8)
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            red, green, blue, _ = image.cmap(image.norm(value))
            light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5  # dark text on light cells
            axis.text(
                column,
                row,
                fmt.format(value),
                ha="center",
                va="center",
                color="black" if light else "white",
                fontsize=8,
            )
    axis.set_title(title, fontsize=10)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    figure.colorbar(image, ax=axis)
    return save(figure, path)


def intervals(
    rows: list[tuple[str, float, float, float]],
    path: str,
    xlabel: str,
    title: str,
    lines: list[tuple[str, float]] = (),
    band: tuple[float, float] | None = None,
) -> str:
    """Estimates with their intervals, one labelled row each, top to bottom (methods' scores, paired differences).

    Args:
        rows: (label, estimate, low, high) per row, drawn in this order from the top.
        path: The PNG file to write.
        xlabel: The x axis's label (the rows' unit).
        title: The figure's title.
        lines: (label, x) reference values drawn as labelled vertical lines (a teacher's score, zero).
        band: (low, high) shaded behind the rows: the margin within which a difference counts as none.
    """
    figure, axis = plt.subplots(figsize=(8, 1.8 + 0.32 * len(rows)))
    positions = -np.arange(len(rows))
    estimates = np.array([row[1] for row in rows], dtype=float)
    errors = np.array([[row[1] - row[2] for row in rows], [row[3] - row[1] for row in rows]], dtype=float)
    if band is not None:
        axis.axvspan(*band, color="0.9", label="margin")
    for index, (label, x) in enumerate(lines):
        axis.axvline(x, label=label, **reference_style(index))
    axis.errorbar(estimates, positions, xerr=errors, fmt="o", color="tab:blue", capsize=3, markersize=4)
    axis.set_yticks(positions, [row[0] for row in rows], fontsize=8)
    axis.set_xlabel(xlabel)
    axis.set_title(textwrap.fill(title, 70), fontsize=10)
    if lines or band is not None:
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(figure, path)


def by_k(
    curves: dict[str, list[tuple[int, float, float]]],
    storage: list[tuple[int, float]],
    path: str,
    ylabel: str,
    title: str,
    lines: list[tuple[str, float]] = (),
) -> str:
    """Quality and storage against the number of stored logits per position (k), side by side.

    Args:
        curves: Per method, (k, mean, sd over seeds) points, drawn as a line with error bars on a log2 k axis.
        storage: (k, megabytes) of the stored logit dataset at each k.
        path: The PNG file to write.
        ylabel: The quality axis' label (its unit).
        title: The left panel's title.
        lines: (label, y) references without a k (no distillation, dense teachers), as horizontal lines.
    """
    figure, (quality, size) = plt.subplots(1, 2, figsize=(10, 3.8))
    for shift, (name, points) in zip(np.linspace(0.96, 1.04, len(curves)), curves.items(), strict=True):
        ks, means, sds = (np.array(column, dtype=float) for column in zip(*sorted(points), strict=True))
        quality.errorbar(ks * shift, means, yerr=sds, marker="o", capsize=3, label=name)  # shifted apart to read
    for index, (label, y) in enumerate(lines):
        quality.axhline(y, label=label, **reference_style(index))
    ks, megabytes = zip(*sorted(storage), strict=True)
    size.plot(ks, megabytes, marker="o", color="tab:gray")
    for axis in (quality, size):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.set_xlabel("k (stored logits per position)")
    quality.set_ylabel(ylabel)
    quality.set_title(title, fontsize=10)
    quality.legend(fontsize=7)
    size.set_ylabel("logit dataset size (MB)")
    size.set_title("storage", fontsize=10)
    return save(figure, path)
