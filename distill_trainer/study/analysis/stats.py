"""Statistics over many runs: the study's single-seed numbers become means with 95% confidence intervals,
and "multi-teacher beats single-teacher" becomes a paired test with a p-value.

`results` tables have one row per run: `task`, `method`, `type` (teacher / baseline / single / multi),
`seed`, `score` (the task's metric, 0-1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

STUDENT_TYPES = ("baseline", "single", "multi")


def aggregate_seeds(results: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per task and method: number of seeds, mean, standard deviation and a t-interval for the mean.

    With one seed the deviation and interval are NaN: there is nothing to estimate them from.

    Args:
        results: One row per run (`task`, `method`, `type`, `score`; see the module's docstring).
        confidence: The interval's confidence level (0-1).
    """
    rows = []
    for (task, method, kind), group in results.groupby(["task", "method", "type"], sort=False):
        scores = group["score"].to_numpy(dtype=float)
        n, mean = len(scores), scores.mean()
        std = scores.std(ddof=1) if n > 1 else np.nan
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n) if n > 1 else np.nan
        rows.append(
            {
                "task": task,
                "method": method,
                "type": kind,
                "n": n,
                "mean": mean,
                "std": std,
                "ci_low": mean - half,
                "ci_high": mean + half,
            }
        )
    return pd.DataFrame(rows)


def gap_closed(student: float, baseline: float, best_teacher: float) -> float:
    """(student - baseline) / (best teacher - baseline): the share of the teacher-student gap closed.

    NaN when the best teacher is not above the baseline (there is no gap to close).

    Args:
        student: The student's score.
        baseline: The baseline's (the student trained without distillation) score.
        best_teacher: The best teacher's score, on the same scale as the other two.
    """
    gap = best_teacher - baseline
    return (student - baseline) / gap if gap > 0 else float("nan")


def gap_table(aggregated: pd.DataFrame) -> pd.DataFrame:
    """For every distilled student of every task: its mean score and the gap it closes (mean scores).

    Args:
        aggregated: `aggregate_seeds`'s table; a task without a baseline or a teacher row is left out.
    """
    rows = []
    for task, group in aggregated.groupby("task", sort=False):
        baseline = group.loc[group.type == "baseline", "mean"]
        teachers = group.loc[group.type == "teacher", "mean"]
        if baseline.empty or teachers.empty:
            continue
        for _, row in group[group.type.isin(["single", "multi"])].iterrows():
            rows.append(
                {
                    "task": task,
                    "method": row.method,
                    "type": row.type,
                    "mean": row["mean"],
                    "baseline": baseline.iloc[0],
                    "best_teacher": teachers.max(),
                    "gap_closed": gap_closed(row["mean"], baseline.iloc[0], teachers.max()),
                }
            )
    return pd.DataFrame(rows)


def multi_teacher_advantage(aggregated: pd.DataFrame) -> pd.DataFrame:
    """Per task: the best multi-teacher and best single-teacher students (by mean) and their difference.

    Args:
        aggregated: `aggregate_seeds`'s table; a task without both kinds of student is left out.
    """
    rows = []
    for task, group in aggregated.groupby("task", sort=False):
        multi, single = group[group.type == "multi"], group[group.type == "single"]
        if multi.empty or single.empty:
            continue
        best_multi, best_single = multi.loc[multi["mean"].idxmax()], single.loc[single["mean"].idxmax()]
        rows.append(
            {
                "task": task,
                "best_multi": best_multi.method,
                "best_multi_mean": best_multi["mean"],
                "best_single": best_single.method,
                "best_single_mean": best_single["mean"],
                "advantage": best_multi["mean"] - best_single["mean"],
            }
        )
    return pd.DataFrame(rows)


def metric_on_resamples(metric: str, predictions: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The metric on each bootstrap resample (`indices` is `[resamples, n]`), vectorised: accuracy, f1, mcc,
    and Pearson's r for regression scores.

    Args:
        metric: The task's metric: `accuracy`, `f1`, `matthews_correlation` (binary labels 0/1) or `pearson`.
        predictions: `[n]` one run's class ids (or regression scores).
        labels: `[n]` the labels (or gold scores).
        indices: `[resamples, n]` drawn row indices.
    """
    predicted, truth = predictions[indices], labels[indices]
    if metric == "pearson":
        x, y = predicted - predicted.mean(1, keepdims=True), truth - truth.mean(1, keepdims=True)
        denominator = np.sqrt((x * x).sum(1) * (y * y).sum(1))
        return np.divide((x * y).sum(1), denominator, out=np.zeros(len(x)), where=denominator > 0)
    if metric == "accuracy":
        return (predicted == truth).mean(1)
    tp = ((predicted == 1) & (truth == 1)).sum(1).astype(float)
    fp = ((predicted == 1) & (truth == 0)).sum(1).astype(float)
    fn = ((predicted == 0) & (truth == 1)).sum(1).astype(float)
    if metric == "f1":
        return np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    if metric == "matthews_correlation":
        tn = indices.shape[1] - tp - fp - fn
        denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return np.divide(tp * tn - fp * fn, denominator, out=np.zeros_like(tp), where=denominator > 0)
    raise ValueError(f"paired_bootstrap supports accuracy, f1, matthews_correlation and pearson, not {metric!r}.")


def seed_resampled_mean(per_seed: list[np.ndarray], generator: np.random.Generator) -> np.ndarray:
    """`per_seed[s][r]` is seed s's metric on resample r: per resample, the mean over seeds drawn with replacement.

    Args:
        per_seed: One `[resamples]` array per seed.
        generator: Draws the seeds (its state advances).
    """
    scores = np.stack(per_seed)  # [seeds, resamples]
    drawn = generator.integers(0, len(scores), size=scores.shape)
    return np.take_along_axis(scores, drawn, axis=0).mean(0)


def paired_bootstrap(
    predictions_a: np.ndarray,
    predictions_b: np.ndarray,
    labels: np.ndarray,
    metric: str = "accuracy",
    resamples: int = 10_000,
    seed: int = 0,
    chunk: int = 1_000,
) -> dict:
    """Paired bootstrap over validation examples of metric(A) - metric(B).

    `predictions_a` / `predictions_b` are class ids (or regression scores) `[n]` or `[seeds, n]` (one row per
    seed). Every resample draws the examples (the same ones for both methods) and, for each method, its seeds
    with replacement, and averages the metric over the drawn seeds: seed-to-seed noise counts as well as
    example noise (averaging over fixed seeds would call a difference far inside the seed spread
    significant). Returns the observed difference (of the means over the seeds), a 95% percentile interval and
    a two-sided p-value (twice the share of resamples on the far side of zero, at most 1).

    Args:
        predictions_a: Method A's predictions, `[n]` or `[seeds, n]`.
        predictions_b: Method B's, the same rows in the same order (its seeds need not match A's in number).
        labels: `[n]` the labels (or gold scores).
        metric: The task's metric (`metric_on_resamples`).
        resamples: Bootstrap resamples.
        seed: The generator's seed: the same inputs and seed give the same interval and p-value.
        chunk: Resamples drawn at a time (memory grows with `chunk x n`); another chunk draws other resamples, so
            it is fixed as the seed is.
    """
    a, b = np.atleast_2d(predictions_a), np.atleast_2d(predictions_b)
    labels = np.asarray(labels, dtype=np.float64) if metric == "pearson" else np.asarray(labels)
    if a.shape[1] != len(labels) or b.shape[1] != len(labels):
        raise ValueError(f"predictions cover {a.shape[1]} and {b.shape[1]} examples, labels {len(labels)}.")
    every = np.arange(len(labels))[None]
    observed = np.mean([metric_on_resamples(metric, p, labels, every)[0] for p in a]) - np.mean(
        [metric_on_resamples(metric, p, labels, every)[0] for p in b]
    )
    generator = np.random.default_rng(seed)
    differences = []
    for start in range(0, resamples, chunk):
        indices = generator.integers(0, len(labels), size=(min(chunk, resamples - start), len(labels)))
        differences.append(
            seed_resampled_mean([metric_on_resamples(metric, p, labels, indices) for p in a], generator)
            - seed_resampled_mean([metric_on_resamples(metric, p, labels, indices) for p in b], generator)
        )
    differences = np.concatenate(differences)
    p_value = min(1.0, 2 * min((differences <= 0).mean(), (differences >= 0).mean()))
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "difference": float(observed),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p_value),
        "resamples": resamples,
        "seeds": (a.shape[0], b.shape[0]),
    }
