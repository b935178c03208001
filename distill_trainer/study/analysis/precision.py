"""The bf16 settlement (issue 28, results/v3/PREREGISTRATION.md): does bf16 autocast on this CPU cost a student
accuracy? Pairs of student runs that differ only in precision (the same method and seed, one trained under bf16
autocast and one in float32), read from their records; the plan's rule: if the paired differences have one sign,
the cost is systematic and bf16 is no longer a default.

    distill-trainer analyze --plan precision --study_dir runs/v3-bf16 --output_dir results/v3-bf16

Scores are the records' validation scores; the predictions (`validation_logits.npy`) give how often the two
precisions' students agree. No model is run, and nothing here needs the task's labels.
"""

from __future__ import annotations

import glob
import os

import numpy as np
from scipy import stats

from ..questions import question_differences
from ..runs import StudentResult
from .collect import processor_counts, run_settings, student_predictions
from .render import to_plain
from .v3_format import table, write_report_files

RESULTS_FILE = "precision_results.json"
PRECISIONS = ("bf16", "float32")


def precision_of(record: StudentResult) -> str:
    """`bf16`, `fp16` or `float32`: the autocast the device the record names says (`device_name`).

    Args:
        record: The student's record (`device`, e.g. "cpu with bf16 autocast", written by `device_name`).
    """
    device = record.device or ""
    return "bf16" if "with bf16" in device else "fp16" if "with fp16" in device else "float32"


def load_pairs(study_dir: str) -> tuple[dict, str, str]:
    """Every student record under `study_dir` by (method, seed) and precision, their one task and its metric;
    refuses records of several tasks, two runs of one method, seed and precision, or a record without its device.

    Args:
        study_dir: A folder of student run folders (at any depth), each with its record.
    """
    paths = sorted(glob.glob(os.path.join(study_dir, "**", StudentResult.FILE), recursive=True))
    if not paths:
        raise ValueError(f"{study_dir} holds no student record ({StudentResult.FILE}): nothing to settle.")
    runs, tasks, metrics = {}, set(), set()
    for path in paths:
        record, folder = StudentResult.load(path), os.path.dirname(path)
        if record.device is None:
            raise ValueError(f"{path} does not record its device: its precision is unknown.")
        tasks.add(record.task)
        metrics.add(record.metric)
        by_precision = runs.setdefault((record.method[0], record.seed), {})
        precision = precision_of(record)
        if precision not in PRECISIONS:
            raise ValueError(f"{path} was trained under {precision} autocast: this plan settles bf16 against float32.")
        if precision in by_precision:
            raise ValueError(
                f"two {precision} runs of {record.method[0]}, seed {record.seed}: {by_precision[precision][0]} and "
                f"{folder}; a pair is one run in each precision."
            )
        by_precision[precision] = (folder, record)
    if len(tasks) > 1:
        raise ValueError(f"{study_dir} holds records of several tasks ({', '.join(sorted(tasks))}): settle one.")
    return runs, tasks.pop(), metrics.pop()


def check_only_precision_differs(bf16_dir: str, bf16: StudentResult, fp32_dir: str, fp32: StudentResult) -> None:
    """Refuse a pair whose runs differ in more than their precision: another device, or another setting (layers,
    T, rows, ...) would be read as bf16's effect.

    Args:
        bf16_dir: The bf16 run's folder; `bf16`: its record.
        fp32_dir: The float32 run's folder; `fp32`: its record.
    """
    differ = {"device": (bf16.device, fp32.device)} if bf16.device.split(" with ")[0] != fp32.device else {}
    differ |= {
        key: pair
        for key, pair in question_differences(run_settings(bf16), run_settings(fp32)).items()
        if "<absent>" not in pair and not key.split(".")[-1].startswith(("bf16", "fp16"))
    }
    if differ:
        shown = "; ".join(f"{key}: {a!r} vs {b!r}" for key, (a, b) in list(differ.items())[:6])
        raise ValueError(f"{bf16_dir} and {fp32_dir} differ in more than their precision ({shown}): not a pair.")


def analyze_precision(study_dir: str) -> dict:
    """The paired differences (bf16 minus float32 validation score), their signs, an exact sign test, the mean with
    its t-interval over pairs, and the plan's verdict (one sign: systematic); runs without a partner are listed, and
    the processors the runs name (a pair whose runs name different CPUs is refused: it would not isolate precision).

    Args:
        study_dir: The settlement's folder of student runs.
    """
    runs, task, metric = load_pairs(study_dir)
    pairs, unpaired = [], []
    for (method, seed), by_precision in sorted(runs.items()):
        if set(by_precision) != set(PRECISIONS):
            unpaired.append({"method": method, "seed": seed, "precision": next(iter(by_precision))})
            continue
        (bf16_dir, bf16), (fp32_dir, fp32) = by_precision["bf16"], by_precision["float32"]
        if bf16.processor != fp32.processor:  # the pair would differ in its machine as well as its precision
            raise ValueError(
                f"{bf16_dir} ran on {bf16.processor} and {fp32_dir} on {fp32.processor}: a pair must share its CPU."
            )
        check_only_precision_differs(bf16_dir, bf16, fp32_dir, fp32)
        agreement = np.mean(student_predictions(bf16_dir, task) == student_predictions(fp32_dir, task))
        pairs.append(
            {
                "method": method,
                "seed": seed,
                "bf16": bf16.score,
                "float32": fp32.score,
                "difference": bf16.score - fp32.score,
                "agreement": float(agreement),
                "train_seconds": {"bf16": bf16.train_runtime, "float32": fp32.train_runtime},
            }
        )
    differences = np.array([p["difference"] for p in pairs])
    higher, lower = int((differences > 0).sum()), int((differences < 0).sum())
    summary = {"pairs": len(pairs), "bf16_higher": higher, "bf16_lower": lower, "equal": len(pairs) - higher - lower}
    if higher + lower:
        summary["sign_test_p"] = float(stats.binomtest(higher, higher + lower).pvalue)
    if len(pairs) >= 2:
        mean, sem = float(differences.mean()), float(stats.sem(differences))
        half = float(stats.t.ppf(0.975, len(pairs) - 1) * sem)
        summary.update(mean_difference=mean, ci=[mean - half, mean + half])
    summary["one_sign"] = len(pairs) >= 2 and (higher == len(pairs) or lower == len(pairs))
    records = [record for by_precision in runs.values() for _, record in by_precision.values()]
    return {
        "task": task,
        "metric": metric,
        "pairs": pairs,
        "unpaired": unpaired,
        "summary": summary,
        "processors": processor_counts(records),
    }


def verdict(summary: dict) -> str:
    """The plan's rule in words: one sign over the pairs is a systematic difference; mixed signs are not.

    Args:
        summary: `analyze_precision`'s summary.
    """
    if summary["pairs"] < 2:
        return "not enough pairs to settle (at least 2 are needed)."
    if summary["one_sign"]:
        side = "lower" if summary["bf16_lower"] else "higher"
        return f"bf16 autocast scored {side} in every pair: a systematic difference by the plan's rule."
    counts = f"bf16 higher in {summary['bf16_higher']}, lower in {summary['bf16_lower']}, equal in {summary['equal']}"
    signs = "mixed signs" if summary["bf16_higher"] and summary["bf16_lower"] else "not one sign in every pair"
    return f"{signs} ({counts}): no systematic difference by the plan's rule."


def render(result: dict) -> str:
    """REPORT.md: the pairs, the summary and the verdict.

    Args:
        result: `analyze_precision`'s result.
    """
    s = result["summary"]
    rows = [
        [
            f"`{p['method']}`",
            p["seed"],
            f"{100 * p['bf16']:.2f}",
            f"{100 * p['float32']:.2f}",
            f"{100 * p['difference']:+.2f}",
            f"{100 * p['agreement']:.1f}%",
            " / ".join("n/a" if p["train_seconds"][k] is None else f"{p['train_seconds'][k]:.0f}" for k in PRECISIONS),
        ]
        for p in result["pairs"]
    ]
    header = ["method", "seed", "bf16", "float32", "bf16 - float32 (pp)", "same prediction", "train s (bf16 / fp32)"]
    lines = [
        f"# bf16 autocast vs float32 ({result['task']}, {result['metric']})",
        "",
        "The plan (results/v3/PREREGISTRATION.md): students that differ only in precision, paired by method and seed; "
        "if the paired differences have one sign, bf16 costs (or gains) systematically. Scores are the records' "
        'validation scores; "same prediction" is the share of validation rows both students predict alike. Train '
        "times were measured on cores shared with other work.",
        "",
        table(header, rows),
        "",
    ]
    if "ci" in s:
        lines.append(
            f"Mean difference over {s['pairs']} pairs: {100 * s['mean_difference']:+.2f} pp, 95% t-interval "
            f"[{100 * s['ci'][0]:+.2f}, {100 * s['ci'][1]:+.2f}]"
            + (f"; exact sign test p = {s['sign_test_p']:.3f}." if "sign_test_p" in s else ".")
        )
    lines.append(f"Verdict: {verdict(s)}")
    processors = ", ".join(f"{name} ({count})" for name, count in result["processors"].items())
    lines.append(f"Processors (runs): {processors}; both runs of a pair share one.")
    if result["unpaired"]:
        missing = ", ".join(f"`{u['method']}` seed {u['seed']} ({u['precision']} only)" for u in result["unpaired"])
        lines.append(f"Not finished (no partner yet): {missing}.")
    return "\n".join(lines) + "\n"


def write_precision_report(study_dir: str, output_dir: str) -> dict:
    """Analyze the settlement and write REPORT.md and precision_results.json to `output_dir`.

    Args:
        study_dir: The settlement's folder of student runs.
        output_dir: Where the report goes (created).
    """
    result = to_plain(analyze_precision(study_dir))
    write_report_files(output_dir, RESULTS_FILE, result, render(result))
    return result
