"""Per-example analyses on one validation split: how confident the teachers are, where they agree, and
why each student error happened. Inputs are plain arrays: teacher logits `[n, teachers, labels]`,
labels `[n]`, and student predictions (class ids `[n]` or logits `[n, labels]`) by method name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

AGREEMENT_REGIONS = ("all_agree", "partial_disagree", "full_disagree")
# Precedence, so every error has exactly one cause: teachers that are all wrong cannot teach the answer;
# otherwise a disagreement means the student picked the wrong side; otherwise all teachers were right
# and agreed, and the knowledge did not transfer.
FAILURE_CATEGORIES = ("all_teachers_wrong", "error_on_disagreement", "teachers_right")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed stably (the max subtracted first).

    Args:
        logits: Logits of any shape; the labels are the last axis.
    """
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def as_class_ids(predictions: np.ndarray) -> np.ndarray:
    """Class ids `[n]`: the argmax of logits `[n, labels]`, or the ids themselves.

    Args:
        predictions: Class ids `[n]` or logits `[n, labels]`.
    """
    predictions = np.asarray(predictions)
    return predictions.argmax(-1) if predictions.ndim == 2 else predictions


def teacher_confidence(
    teacher_logits: np.ndarray, teacher_names: Sequence[str], threshold: float = 0.95
) -> pd.DataFrame:
    """Per teacher: mean max probability, mean entropy (nats) and % of examples with max probability > threshold.

    Near-one-hot teachers (the reference study: > 96% mean max probability) leave little dark knowledge.

    Args:
        teacher_logits: `[n, teachers, labels]` teacher logits.
        teacher_names: The teachers' names, in column order (one table row each).
        threshold: The max probability above which an example counts as high-confidence (0-1).
    """
    probs = softmax(np.asarray(teacher_logits, dtype=np.float64))
    max_prob = probs.max(-1)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(-1)
    return pd.DataFrame(
        {
            "teacher": list(teacher_names),
            "mean_max_prob": max_prob.mean(0),
            "mean_entropy": entropy.mean(0),
            "pct_high_confidence": 100.0 * (max_prob > threshold).mean(0),
        }
    )


def agreement_regions(teacher_logits: np.ndarray) -> np.ndarray:
    """Each example's region: all teachers predict the same class; all predict different classes
    (with two teachers, any disagreement); or some agree and some do not.

    Args:
        teacher_logits: `[n, teachers, labels]` teacher logits (each teacher's vote is its argmax).
    """
    votes = np.asarray(teacher_logits).argmax(-1)  # [n, teachers]
    distinct = np.array([len(set(row)) for row in votes])
    teachers = votes.shape[1]
    return np.where(distinct == 1, "all_agree", np.where(distinct == teachers, "full_disagree", "partial_disagree"))


def accuracy_by_region(regions: np.ndarray, predictions: Mapping[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """Accuracy of each method (rows) in each agreement region (columns), plus each region's size.

    A region no example falls in has NaN accuracies and an `examples` count of 0.

    Args:
        regions: `[n]` each example's region (`agreement_regions`).
        predictions: Method name -> its class ids `[n]` or logits `[n, labels]`.
        labels: `[n]` class ids.
    """
    labels = np.asarray(labels)
    table = {}
    for method, predicted in predictions.items():
        correct = as_class_ids(predicted) == labels
        table[method] = {
            region: correct[regions == region].mean() if (regions == region).any() else np.nan
            for region in AGREEMENT_REGIONS
        }
    frame = pd.DataFrame.from_dict(table, orient="index", columns=list(AGREEMENT_REGIONS))
    frame.loc["examples"] = [int((regions == region).sum()) for region in AGREEMENT_REGIONS]
    return frame


def failure_categories(teacher_logits: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each example's failure category, or "" where the student is right (see FAILURE_CATEGORIES).

    Args:
        teacher_logits: `[n, teachers, labels]` teacher logits.
        predictions: One student's class ids `[n]` or logits `[n, labels]`.
        labels: `[n]` class ids.
    """
    labels = np.asarray(labels)
    votes = np.asarray(teacher_logits).argmax(-1)
    teacher_right = votes == labels[:, None]
    disagree = (votes != votes[:, :1]).any(1)
    category = np.where(
        ~teacher_right.any(1), "all_teachers_wrong", np.where(disagree, "error_on_disagreement", "teachers_right")
    )
    return np.where(as_class_ids(predictions) == labels, "", category)


def failure_table(
    teacher_logits: np.ndarray, predictions: Mapping[str, np.ndarray], labels: np.ndarray
) -> pd.DataFrame:
    """Number of errors of each method (rows) in each failure category (columns), plus the total.

    Args:
        teacher_logits: `[n, teachers, labels]` teacher logits.
        predictions: Method name -> its class ids `[n]` or logits `[n, labels]`.
        labels: `[n]` class ids.
    """
    rows = {}
    for method, predicted in predictions.items():
        categories = failure_categories(teacher_logits, predicted, labels)
        rows[method] = {category: int((categories == category).sum()) for category in FAILURE_CATEGORIES}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(FAILURE_CATEGORIES))
    frame["errors"] = frame.sum(1)
    return frame


# Regression (STS-B): no classes, so no confidence, agreement regions or failure categories. Their analogue is
# how far the teachers' predictions spread on a row: where they disagree, is the student's error larger?
SPREAD_BUCKETS = ("low_spread", "mid_spread", "high_spread")


def spread_buckets(teacher_predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's standard deviation of the teachers' predictions (`[n, teachers, 1]`) and its tercile bucket.

    Args:
        teacher_predictions: `[n, teachers, 1]` the teachers' regression scores.
    """
    spread = np.asarray(teacher_predictions, dtype=np.float64)[..., 0].std(axis=1)
    cuts = np.quantile(spread, [1 / 3, 2 / 3])
    return spread, np.array(SPREAD_BUCKETS)[np.searchsorted(cuts, spread, side="right")]


def error_by_spread(buckets: np.ndarray, predictions: Mapping[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """Mean absolute error of each method (rows) in each teacher-spread bucket (columns), plus bucket sizes.

    Args:
        buckets: `[n]` each row's spread bucket (`spread_buckets`).
        predictions: Method name -> its scores (`[n]`, or any shape holding n scores).
        labels: `[n]` gold scores.
    """
    labels = np.asarray(labels, dtype=np.float64)
    table = {
        method: {
            bucket: np.abs(np.asarray(p, dtype=np.float64).reshape(-1) - labels)[buckets == bucket].mean()
            for bucket in SPREAD_BUCKETS
        }
        for method, p in predictions.items()
    }
    frame = pd.DataFrame.from_dict(table, orient="index", columns=list(SPREAD_BUCKETS))
    frame.loc["examples"] = [int((buckets == bucket).sum()) for bucket in SPREAD_BUCKETS]
    return frame
