"""The statistics study v3's plan fixes (results/v3/PREREGISTRATION.md): a bootstrap over validation rows and
seeds paired by seed number, two one-sided tests against a +-1 pp margin, the verdict that follows from the
interval, Holm's correction, MRPC's all-positive check, and which methods predicted the same labels."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from .stats import metric_on_resamples, seed_resampled_mean

MARGIN = 0.01  # the equivalence margin, +-1 pp of a 0-1 score
ALPHA = 0.05  # a corrected test detects a difference when its Holm p is below this
# Scores and differences are compared (and bootstrapped) at this precision: float noise decides nothing.
SCORE_DECIMALS = 12
VERDICT_RULE = (  # what `verdict` says, as the reports say it
    "Verdicts: better or worse when the interval excludes 0 (by less than the margin when it also lies inside it, by "
    "more when it lies wholly beyond it); no difference detected when it includes 0 and lies inside the margin; "
    "inconclusive when it includes 0 and crosses a margin. A test corrected with Holm is better or worse only when "
    f'its Holm p is also below {ALPHA:g}; otherwise it reads as if its interval included 0, with "after Holm".'
)
WITHIN_MARGIN = f"no difference detected within +-{100 * MARGIN:g} pp"


def paired_seed_bootstrap(
    predictions_a: np.ndarray,
    predictions_b: np.ndarray,
    labels: np.ndarray,
    metric: str,
    resamples: int = 10_000,
    seed: int | list[int] = 0,
    margin: float = MARGIN,
    chunk: int = 500,
    scorer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    unit: str = "pp",
    higher_is_better: bool = True,
) -> dict:
    """metric(A) - metric(B), the mean over seeds, with a 95% bootstrap interval and equivalence tests.

    Each resample draws the validation rows once (the same rows for both methods) and then the seeds with
    replacement; row s of both arrays is the same seed number, so a drawn seed brings its A - B difference (seeds
    paired, as the plan says, not drawn separately per method as `stats.paired_bootstrap` does for v2). The metric
    is recomputed on every resample from the predictions, so F1 is F1 of the resampled rows, not a mean of rows.

    p-values are read off the same bootstrap distribution (no normal approximation): `p_value`, of the difference
    from 0, two-sided (twice the smaller tail share at or beyond 0, at most 1); the two one-sided tests of TOST,
    H0 difference <= -margin (p = the share of resamples at or below -margin) and H0 difference >= +margin (the
    share at or above +margin), and `tost_p` = the larger of the two: below 0.05 exactly when the 90% percentile
    interval lies inside +-margin. With `resamples` draws a p-value resolves to 1 / resamples; 0 means none. The
    resampled differences are read at `SCORE_DECIMALS` decimals, so two scores equal but for float rounding differ by
    exactly 0 and never decide a verdict.

    Args:
        predictions_a: Class ids `[seeds, n]` of method A, one row per paired seed.
        predictions_b: Class ids `[seeds, n]` of method B, row s the same seed number as A's row s.
        labels: The validation labels `[n]`, the rows of the logit dataset's validation split.
        metric: The task's metric (`metric_on_resamples`): accuracy or f1 here.
        resamples: Bootstrap resamples; fixed with `seed`, so the same records give the same numbers.
        seed: Seed (or seed sequence) of the generator: fixed, for a byte-identical report.
        margin: The equivalence margin on the 0-1 scale (0.01 = 1 pp).
        chunk: Resamples drawn at once (memory: chunk x n indices).
        scorer: Instead of `metric`: `scorer(rows, indices)` -> the score of each resample `[resamples]`, from one
            seed's `rows` (`[n, ...]`) and the drawn row indices `[resamples, n]` (e.g. the causal study's per-token
            NLL: summed NLL over summed tokens of the drawn rows); `labels` and `metric` are then unused.
        unit: The verdict's unit (`verdict`): "pp" (the margin x 100) or another unit, as in "0.01 nats".
        higher_is_better: False for a loss: a difference below 0 is then "better".
    """
    a, b = np.atleast_2d(predictions_a), np.atleast_2d(predictions_b)
    n = a.shape[1] if scorer else len(labels)
    if a.shape != b.shape or a.shape[1] != n:
        raise ValueError(f"paired predictions {a.shape} and {b.shape} must both be [seeds, {n}, ...].")

    def score(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        return scorer(x, indices) if scorer else metric_on_resamples(metric, x, np.asarray(labels), indices)

    every = np.arange(n)[None]
    per_seed = [float(score(x, every)[0] - score(y, every)[0]) for x, y in zip(a, b, strict=True)]
    generator = np.random.default_rng(seed)
    differences = []
    for start in range(0, resamples, chunk):
        indices = generator.integers(0, n, size=(min(chunk, resamples - start), n))
        seed_differences = [score(x, indices) - score(y, indices) for x, y in zip(a, b, strict=True)]
        differences.append(seed_resampled_mean(seed_differences, generator))
    # Float noise off: a resample where A and B score the same is 0, not +-1e-17, which would decide "excludes 0"
    # (+ 0.0 turns -0.0 into 0.0).
    differences = np.round(np.concatenate(differences), SCORE_DECIMALS) + 0.0
    low, high = np.round(np.percentile(differences, [2.5, 97.5]), SCORE_DECIMALS) + 0.0
    below, above = float((differences <= -margin).mean()), float((differences >= margin).mean())
    return {
        "difference": float(np.mean(per_seed)),
        "per_seed": per_seed,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(min(1.0, 2 * min((differences <= 0).mean(), (differences >= 0).mean()))),
        "tost_p_lower": below,
        "tost_p_upper": above,
        "tost_p": max(below, above),
        "verdict": verdict(float(low), float(high), margin, unit, higher_is_better),
        "resamples": resamples,
        "margin": margin,
    }


def verdict(
    ci_low: float,
    ci_high: float,
    margin: float = MARGIN,
    unit: str = "pp",
    higher_is_better: bool = True,
    holm_p: float | None = None,
) -> str:
    """What a 95% interval of A - B says, in the plan's words; never "equal".

    "better" / "worse" when it excludes 0: with ", by less than 1 pp" when it also lies inside the margin (a
    difference, and a small one), ", by more than 1 pp" when it lies wholly beyond it, and nothing more when it
    crosses the margin (a difference whose size against the margin is not settled); "no difference detected within
    +-1 pp" when it includes 0 and lies inside +-margin (strictly: an end on the margin is not inside, as TOST at
    2.5% a side reads it); "inconclusive" when it includes 0 and crosses or touches a margin.

    Args:
        ci_low: The interval's lower end (0-1 scale).
        ci_high: Its upper end.
        margin: The equivalence margin (0.01 = 1 pp).
        unit: "pp": the margin reads as percentage points (x 100); any other unit is written after the margin as it
            is ("0.01 nats").
        higher_is_better: Whether a positive difference is "better" (scores) or "worse" (losses, such as NLL).
        holm_p: The test's Holm-adjusted p, for a test corrected with Holm: an interval that excludes 0 reads as
            detecting no difference ("... after Holm") when this is not below `ALPHA`. None: not corrected.
    """
    inside = -margin < ci_low and ci_high < margin  # strictly: a bound on the margin is TOST p >= 0.025
    size = f"{100 * margin:g} pp" if unit == "pp" else f"{margin:g} {unit}"
    excludes_zero = ci_low > 0 or ci_high < 0
    undone = excludes_zero and holm_p is not None and holm_p >= ALPHA  # a difference the correction undoes
    if excludes_zero and not undone:
        direction = "better" if (ci_low > 0) == higher_is_better else "worse"
        if inside:
            return f"{direction}, by less than {size}"
        return f"{direction}, by more than {size}" if ci_low > margin or ci_high < -margin else direction
    reading = f"no difference detected within +-{size}" if inside else "inconclusive"
    return f"{reading} after Holm" if undone else reading


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error), by name: the i-th smallest of m p-values is
    multiplied by m - i (i from 0), capped at 1, and kept at least as large as every smaller one's. Ties are
    taken in name order, so the result does not depend on the dict's order.

    Args:
        p_values: The raw p-values of the family (the plan: the four tasks' secondary tests), by name.
    """
    order = sorted(p_values, key=lambda name: (p_values[name], name))
    adjusted, running = {}, 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[name]))
        adjusted[name] = running
    return {name: adjusted[name] for name in sorted(adjusted)}


def all_positive_f1(labels: np.ndarray) -> float:
    """F1 of predicting the positive class on every row: 2P / (2P + N), P positives and N negatives. What a
    student that learnt nothing but the majority class scores on MRPC (68% positive), so a student must beat it.

    Args:
        labels: The validation labels (0/1).
    """
    labels = np.asarray(labels)
    positives = int((labels == 1).sum())
    return 2 * positives / (2 * positives + int((labels != 1).sum())) if positives else 0.0


def apply_holm(tests: dict[str, dict], unit: str = "pp") -> list[str]:
    """Holm over `tests` (one family, by name): each adjusted p written into its test as `holm_p`, and a test whose
    interval excludes 0 but whose Holm p is not below `ALPHA` re-read as detecting no difference ("... after Holm"),
    so no verdict says "better" where the correction the plan asks for does not; returns the family's names, sorted.
    Tests that did not run are left out.

    Args:
        tests: The family's comparisons (`paired_seed_bootstrap`'s dicts, with `a` and `b`), by name; changed in place.
        unit: The unit their margin reads in (`verdict`).
    """
    adjusted = holm({name: c["p_value"] for name, c in tests.items() if c.get("difference") is not None})
    for name, value in adjusted.items():
        test = tests[name]
        test["holm_p"] = value
        if value >= ALPHA:  # only a verdict the correction changes is read again (its direction is not needed)
            test["verdict"] = verdict(test["ci_low"], test["ci_high"], test["margin"], unit, holm_p=value)
    return sorted(adjusted)


def adjust_secondary(tasks: dict, unit: str = "pp") -> list[str]:
    """`apply_holm` over the tasks' secondary tests that ran (one family); returns the family's task names, sorted.

    Args:
        tasks: The per-task results (`analyze_task`); a task without a secondary comparison is skipped.
        unit: The unit their margin reads in (`verdict`).
    """
    secondary = {n: t["comparisons"]["secondary"] for n, t in tasks.items() if "secondary" in t.get("comparisons", {})}
    return apply_holm(secondary, unit)


def best_by_dev(rows: list[dict], key: str = "dev_mean") -> dict | None:
    """The row with the highest dev score; a tie goes to the first name in sort order (deterministic). Scores are
    compared to 12 decimals: means over seeds of the same dev scores can differ in their last bit with the order
    they were summed in, and a choice must not rest on that.

    Args:
        rows: Rows with a `method` name and a dev score; empty gives None.
        key: The dev score's key (`dev_mean` for method rows, `dev_score` for teacher rows).
    """
    return min(rows, key=lambda r: (-_dev_score(r, key), r["method"])) if rows else None


def tied_with(rows: list[dict], best: dict | None, key: str = "dev_mean") -> list[str]:
    """The other rows whose dev score equals the chosen one's: the report names them, since sort order, not the
    dev split, made that choice.

    Args:
        rows: The rows `best_by_dev` chose from.
        best: Its choice (None: no ties).
        key: The dev score's key, as for `best_by_dev`.
    """
    return [r["method"] for r in rows if best and r is not best and _dev_score(r, key) == _dev_score(best, key)]


def _dev_score(row: dict, key: str) -> float:
    """A row's dev score at `SCORE_DECIMALS` decimals: what choices and ties are decided on.

    Args:
        row: A method or teacher row.
        key: Its dev score's key (`dev_mean` or `dev_score`).
    """
    return round(row[key], SCORE_DECIMALS)


def identical_predictions(runs: dict[str, dict[int, np.ndarray]]) -> list[dict]:
    """Pairs of methods whose students predicted the same validation labels on every seed both have: two names, one
    set of predictions (v2 counted MRPC's `average` and `weighted` as two methods that way), said beside the table.

    Args:
        runs: Each method's validation predictions by seed (`load_task`'s `predictions`).
    """
    pairs = []
    for a, b in itertools.combinations(runs, 2):
        seeds = sorted(set(runs[a]) & set(runs[b]))
        if seeds and all(np.array_equal(runs[a][s], runs[b][s]) for s in seeds):
            pairs.append({"methods": [a, b], "seeds": seeds})
    return pairs


def all_positive_check(labels: np.ndarray, methods: list[dict], runs: dict[str, dict[int, np.ndarray]]) -> dict:
    """Does any student's validation F1 beat the all-positive F1 by more than its method's 95% t-interval over
    seeds (its lower end above it)? If none does, the task is left out of the averages across tasks. Also how
    often the students predict the positive class, beside the labels' own share: how near "all positive" they are.

    Args:
        labels: The validation labels.
        methods: The task's method rows (`method_table`); a one-seed method has no interval and cannot count.
        runs: Each method's validation predictions by seed (`load_task`'s `predictions`).
    """
    f1 = all_positive_f1(labels)
    beating = sorted(m["method"] for m in methods if np.isfinite(m["validation_ci"][0]) and m["validation_ci"][0] > f1)
    shares = [float(np.mean(p == 1)) for seeds in runs.values() for p in seeds.values()]
    return {
        "all_positive_f1": f1,
        "methods_above": beating,
        "excluded_from_averages": not beating,
        "label_positive_share": float(np.mean(np.asarray(labels) == 1)),
        "predicted_positive_share": [min(shares), max(shares)] if shares else None,
    }
