"""The study's figures as PNG files (matplotlib, no display needed). Each takes the table that
`distill_trainer.analysis` computes and a path, and returns the path."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def save(figure, path: str) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def gap_bars(gaps: pd.DataFrame, path: str) -> str:
    """Share of the teacher-baseline gap each student closes, one group of bars per task."""
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
    """Rows of `table` as groups, columns as bars (accuracy by agreement region, errors by category)."""
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
    """A labelled heatmap with the values written in the cells (ranking of methods x tasks, T x alpha grids)."""
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
