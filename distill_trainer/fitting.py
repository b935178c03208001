"""Fitting on held-out teacher logits (a dev split carved from training rows where there is one, else validation):
per-teacher temperatures (calibration) and task-adaptive fusion weights.

The fits are numpy/scipy on `[n, n_teachers, n_labels]` arrays, so the same ones run at extraction (stored in
the logit metadata) and when the trainer is built (`temperatures_and_weights`: stored fits first).
"""

from __future__ import annotations

import logging

import datasets
import numpy as np

from .logits import read_metadata, teacher_logits_array

logger = logging.getLogger(__name__)
TEMPERATURE_BOUNDS = (1e-2, 1e2)  # where temperature scaling searches; a fit at either end is reported


def fit_teacher_temperatures(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """One temperature per teacher by temperature scaling (Guo et al., 2017): the T > 0 minimising the
    negative log-likelihood of softmax(logits / T) on the labelled rows (label -100 is left out).

    Dividing a teacher's logits by its T calibrates its confidence without changing its predictions, so a loud
    teacher (a TF-IDF model's log-probabilities beside a transformer's logits) stops dominating a fused target.

    Args:
        logits: `[n, n_teachers, n_labels]` raw logits, e.g. a logit dataset's validation split.
        labels: `[n]` class ids; rows labelled -100 are left out.

    Returns:
        One temperature per teacher, in the logits' teacher order.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 3 or len(labels) != len(logits):
        raise ValueError(
            f"logits must be [n, n_teachers, n_labels] with one label per row, got {logits.shape} "
            f"and {len(labels)} labels."
        )
    if logits.shape[-1] == 1:
        raise ValueError(
            "Teacher calibration scales class probabilities; regression predictions (one output) have none. "
            "Use fusion='fitted' to weigh regression teachers."
        )
    labelled = labels != -100
    if not labelled.any():
        raise ValueError("fit_teacher_temperatures needs labelled rows (labels other than -100).")
    rows, gold = logits[labelled], labels[labelled].astype(int)
    temperatures = []
    for teacher in range(logits.shape[1]):

        def nll(log_temperature: float, z=rows[:, teacher]) -> float:
            scaled = z / np.exp(log_temperature)
            return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(gold)), gold]))

        bounds = (np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1]))
        fit = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-6})
        temperatures.append(float(np.exp(fit.x)))
        always_right = bool((rows[:, teacher].argmax(-1) == gold).all())  # its likelihood is best as T -> 0
        if always_right or min(fit.x - bounds[0], bounds[1] - fit.x) < 0.05:
            logger.warning(
                "The calibration temperature of teacher column %d, %.3g, does not calibrate it: %s, so its logits "
                "are scaled by %.3g. Fit on more or harder rows, or leave calibrate_teachers off.",
                teacher,
                temperatures[-1],
                f"it is right on every one of the {len(gold)} fit rows"
                if always_right
                else f"the fit on {len(gold)} rows ends at the search's bound {TEMPERATURE_BOUNDS}",
                1 / temperatures[-1],
            )
    return temperatures


def fit_fusion_weights(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """Task-adaptive fusion: one weight per teacher, on the simplex, minimising the NLL of softmax of the
    weighted mean of the teachers' logits on the labelled rows (e.g. the validation split). For regression
    (`n_labels == 1`, float labels) the mean squared error of the weighted mean prediction instead.

    It learns how much better one teacher is than another on this task, which `weighted`'s validation scores
    only approximate.

    Args:
        logits: `[n, n_teachers, n_labels]` raw logits (`[n, n_teachers, 1]` predictions for regression).
        labels: `[n]` class ids (-100 left out) or float targets.

    Returns:
        One non-negative weight per teacher, summing to 1 (`fusion="fitted"`'s `fusion_weights`).
    """
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    regression = logits.ndim == 3 and logits.shape[-1] == 1
    labelled = (labels != -100) & np.isfinite(labels.astype(np.float64))
    if logits.ndim != 3 or len(labels) != len(logits) or not labelled.any():
        raise ValueError("fit_fusion_weights needs [n, n_teachers, n_labels] logits and labelled rows.")
    rows, gold = logits[labelled], labels[labelled] if regression else labels[labelled].astype(int)

    def nll(theta: np.ndarray) -> float:
        weights = np.exp(theta - theta.max()) / np.exp(theta - theta.max()).sum()  # softmax: on the simplex
        fused = np.einsum("ntl,t->nl", rows, weights)
        if regression:
            return float(np.mean((fused[:, 0] - gold) ** 2))
        return float(-log_softmax(fused, axis=1)[np.arange(len(gold)), gold].mean())

    theta = minimize(nll, np.zeros(logits.shape[1]), method="L-BFGS-B").x
    weights = np.exp(theta - theta.max())
    return (weights / weights.sum()).tolist()


def fit_on_validation(
    logits, labels, calibrate: bool, fit_weights: bool
) -> tuple[list[float] | None, list[float] | None]:
    """Teacher temperatures (when `calibrate`) and then fusion weights (when `fit_weights`, fitted on the
    calibrated logits, as they will be fused), from `[n, n_teachers, n_labels]` validation logits.

    Args:
        logits: `[n, n_teachers, n_labels]` raw validation logits.
        labels: `[n]` class ids (-100 left out) or float targets.
        calibrate: Fit one temperature per teacher (None in the result otherwise).
        fit_weights: Fit fusion weights (None in the result otherwise).
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    temperatures = fit_teacher_temperatures(logits, labels) if calibrate else None
    if temperatures is not None:
        logits = logits / np.asarray(temperatures)[None, :, None]
    return temperatures, fit_fusion_weights(logits, labels) if fit_weights else None


def validation_fits(logits, labels) -> dict | None:
    """What extraction stores in the logit metadata (`LogitDatasetMetadata.fitted`): teacher temperatures, fusion
    weights fitted on the raw and on the calibrated logits, and the number of labelled rows (negative labels, e.g.
    GLUE test's -1, count as unlabelled); None without any.

    Args:
        logits: `[n, n_teachers, n_labels]` raw validation logits (`[n, n_teachers, 1]` for regression).
        labels: `[n]` class ids (negative: unlabelled) or float targets (-100: unlabelled).
    """
    labels, regression = np.asarray(labels), np.asarray(logits).shape[-1] == 1
    if not regression:
        labels = np.where(labels < 0, -100, labels)
    if not ((labels != -100) & np.isfinite(labels.astype(np.float64))).any():
        return None
    temperatures = weights_calibrated = None  # regression: calibration does not apply (`fit_teacher_temperatures`)
    if not regression:
        temperatures, weights_calibrated = fit_on_validation(logits, labels, calibrate=True, fit_weights=True)
    return {
        "teacher_temperatures": temperatures,
        "fusion_weights": fit_fusion_weights(logits, labels),
        "fusion_weights_calibrated": weights_calibrated,
        "num_rows": int((labels != -100).sum()),
    }


def temperatures_and_weights(
    train_dataset, eval_dataset, column: str, calibrate: bool, fit_weights: bool
) -> tuple[list[float] | None, list[float] | None]:
    """For `calibrate_teachers` and strategies that fit weights: the fits stored in the train set's logit metadata
    (made at extraction on the logit dataset's dev split, or its validation split where none was carved: the
    metadata's `fit_split`), else fitted now on the first eval split
    with teacher logits and labels. A `ValueError` when neither exists, before any training.

    Args:
        train_dataset: The train set, whose logit metadata's fits are used when it has them.
        eval_dataset: One split or a dict of them; the first with `column` and `label` is fitted on otherwise.
        column: The dense teacher column's name.
        calibrate: Return teacher temperatures (`calibrate_teachers`); the weights are then the calibrated ones.
        fit_weights: Return fitted fusion weights (a strategy that declares `fits_weights`).
    """
    metadata = read_metadata(train_dataset) if isinstance(train_dataset, datasets.Dataset) else None
    stored = metadata.fitted if metadata else None
    if stored:
        temperatures = stored["teacher_temperatures"] if calibrate else None
        weights = stored["fusion_weights_calibrated" if calibrate else "fusion_weights"]
        source = f"the logit metadata (fitted at extraction on {stored['num_rows']} {metadata.fit_split} rows)"
    else:
        candidates = eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]
        split = next(
            (d for d in candidates if isinstance(d, datasets.Dataset) and {column, "label"} <= set(d.column_names)),
            None,
        )
        if split is None:
            raise ValueError(
                "fusion='fitted' and calibrate_teachers fit on held-out rows (dev or validation): the train set's "
                f"logit metadata has no fits, so pass an eval_dataset with {column!r} and 'label' columns."
            )
        temperatures, weights = fit_on_validation(
            teacher_logits_array(split, column), split["label"][:], calibrate, fit_weights
        )
        source = f"{len(split)} validation rows"
    weights = weights if fit_weights else None
    logger.info("Teacher temperatures %s, fitted fusion weights %s, from %s.", temperatures, weights, source)
    return temperatures, weights


def check_fits(temperatures, weights, n_teachers: int) -> None:
    """Refuse fits that would train silently wrong (a `ValueError` naming the field): the metadata is a file a user
    or a tool may have edited, and a NaN, zero or negative temperature, or a list of the wrong length, would
    otherwise give NaN weights, flip a teacher's logits, or broadcast one value to every teacher.

    Args:
        temperatures: `fitted["teacher_temperatures"]`: one finite temperature > 0 per teacher, or None.
        weights: the fitted fusion weights in use: one finite weight >= 0 per teacher, not all 0, or None.
        n_teachers: The number of teachers in the teacher-logit column.
    """
    for name, values, positive in (("teacher_temperatures", temperatures, True), ("fusion_weights", weights, False)):
        if values is None:
            continue
        field = f'metadata.fitted["{name}"]'
        if not isinstance(values, (list, tuple)) or len(values) != n_teachers:
            raise ValueError(f"{field} must list one value per teacher ({n_teachers}), got {values!r}.")
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{field} must be numbers, got {values!r}.") from None
        valid = np.isfinite(array).all() and (
            (array > 0).all() if positive else (array >= 0).all() and array.sum() > 0
        )
        if not valid:
            wanted = "finite and > 0" if positive else "finite, >= 0 and not all 0"
            raise ValueError(f"{field} must be {wanted} for every teacher, got {values!r}; re-extract the logits.")
