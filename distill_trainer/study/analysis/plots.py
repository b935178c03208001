"""The study's figures as PNG files (matplotlib, no display needed). Each takes the table that
`distill_trainer.analysis` computes and a path, and returns the path."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


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
