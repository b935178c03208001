"""REPORT.md of study v3 from `analyze_v3_study`'s dict: formatting only, every number and verdict comes from it.

The same dict gives the same bytes (no dates, no paths, fixed order), so the report can be rebuilt from the run
records and compared byte for byte.
"""

from __future__ import annotations

import json
import os

from .reference import REFERENCE_AVG_GAP, V2_AVG_GAP
from .v3 import PRIMARY_METHOD, analyze_v3_study

RESULTS_FILE = "v3_results.json"
SAW_GLUE_PAIRS = ("all-mpnet-base-v2", "all-MiniLM-L6-v2")  # the plan: the report says what they were trained on


def pct(value: float | None) -> str:
    """A 0-1 score as a percentage with two decimals; None (not computable) as n/a."""
    return "n/a" if value is None else f"{100 * value:.2f}"


def pp(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f} pp"


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def named(method: str | None) -> str:
    return f"`{method}`" if method else "none run yet"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def comparison_rows(name: str, comparison: dict | None) -> list[str]:
    """One table row of a comparison: A, B, paired seeds, difference, CI, p-values, verdict."""
    if comparison is None:
        return [name, "n/a", "n/a", "0", "n/a", "n/a", "n/a", "n/a", "n/a", "not run: a method is missing"]
    c = comparison
    unpaired = [f"{m}: {', '.join(map(str, s))}" for m, s in sorted(c["unpaired_seeds"].items()) if s]
    seeds = f"{len(c['paired_seeds'])}" + (f" (left out {'; '.join(unpaired)})" if unpaired else "")
    if c.get("difference") is None:
        return [name, c["a"], c["b"], seeds, "n/a", "n/a", "n/a", "n/a", "n/a", c["verdict"]]
    return [
        name,
        f"`{c['a']}`",
        f"`{c['b']}`",
        seeds,
        pp(c["difference"]),
        f"[{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}]",
        p(c["p_value"]),
        p(c.get("holm_p")),
        p(c["tost_p"]),
        c["verdict"],
    ]


def task_section(name: str, t: dict) -> list[str]:
    """One task: its dev choices, teachers, methods, comparisons, gap closed and (MRPC) the all-positive check."""
    chosen = t["chosen"]
    lines = [f"## {name} ({t['metric']}, {t['validation_rows']} validation rows)", ""]
    lines.append(
        f"Chosen on dev: best teacher {named(chosen['best_teacher'])} (column {chosen['teacher_index']}), its "
        f"single student {named(chosen['single'])}; best multi-teacher method {named(chosen['best_multi'])}; best "
        f"distilled student {named(chosen['best_student'])}."
    )
    devices = ", ".join(t["devices"])
    lines += [
        "",
        f"Trained on: {devices}."
        if len(t["devices"]) == 1
        else f"Trained on {len(t['devices'])} devices ({devices}): the plan asks for one device and one precision "
        "per task.",
    ]
    lines += ["", "Teachers (a `*` marks the one chosen on dev):", ""]
    lines.append(
        table(
            ["teacher", "dev", "validation"],
            [
                [
                    f"{r['method']}{' *' if r['method'] == chosen['best_teacher'] else ''}",
                    pct(r["dev_score"]),
                    pct(r["validation_score"]),
                ]
                for r in t["teachers"]
            ],
        )
    )
    lines += ["", "Students, mean over seeds (validation: mean +- sd; dev: mean, what chooses):", ""]
    rows = [
        [
            f"`{m['method']}`",
            m["type"],
            f"{len(m['seeds'])} ({', '.join(map(str, m['seeds']))})",
            f"{pct(m['validation_mean'])} +- {pct(m['validation_sd'])}",
            pct(m["dev_mean"]),
        ]
        for m in t["methods"]
    ]
    lines.append(table(["method", "type", "seeds", "validation", "dev"], rows))
    lines += ["", "Comparisons (A - B on validation, seeds paired by seed number):", ""]
    header = ["comparison", "A", "B", "paired seeds", "A - B", "95% CI (pp)", "p (A = B)", "Holm p", "TOST p"]
    comparisons = t["comparisons"]
    rows = [comparison_rows(k, comparisons.get(k)) for k in ("primary", "secondary")]
    lines.append(table([*header, "verdict"], rows))
    gap = t["gap"]
    if gap:
        lines += [
            "",
            f"Gap closed (best chosen on dev): ({pct(gap['best_student'])} - {pct(gap['baseline'])}) / "
            f"({pct(gap['best_teacher'])} - {pct(gap['baseline'])}) = {share(gap['gap_closed'])}.",
        ]
    check = t["all_positive"]
    if check:
        above = ", ".join(f"`{m}`" for m in check["methods_above"])
        lines += [
            "",
            f"All-positive F1 on the validation labels: {pct(check['all_positive_f1'])}. "
            + (
                f"Students whose 95% interval over seeds lies above it: {above}."
                if check["methods_above"]
                else "No student's validation F1 beats it by more than its method's 95% interval over seeds: "
                f"{name} is left out of the averages across tasks."
            ),
        ]
    return [*lines, ""]


def gap_lines(result: dict) -> list[str]:
    """The gap closed both ways, beside the reference's and v2's same-definition figures."""
    mean = result["mean_gap_closed"]
    lines = [
        "## Gap closed",
        "",
        f"Mean of the per-task gaps closed over {', '.join(mean['tasks']) or 'no task'}: {share(mean['value'])}.",
        "",
    ]
    earlier = (
        ("reference (recomputed; 4 tasks)", "single DeBERTa-base", "RoBERTa-large", REFERENCE_AVG_GAP),
        ("study v2 (4 tasks)", "`average+calibrated`", "n/a", V2_AVG_GAP),
    )
    rows = [
        [
            label,
            student,
            f"{g['best_student_avg']:.2f}",
            teacher,
            f"{g['best_teacher_avg']:.2f}",
            f"{g['baseline_avg']:.2f}",
            share((g["best_student_avg"] - g["baseline_avg"]) / (g["best_teacher_avg"] - g["baseline_avg"])),
        ]
        for label, student, teacher, g in earlier
    ]
    for label, key in (("study v3", "avg_column_gap"), ("study v3, every task", "avg_column_gap_all_tasks")):
        g = result[key]
        if g and (key == "avg_column_gap" or result["excluded_from_averages"]):
            rows.append(
                [
                    f"{label} ({', '.join(g['tasks'])})",
                    f"`{g['best_student']}`",
                    pct(g["best_student_avg"]),
                    f"`{g['best_teacher']}`",
                    pct(g["best_teacher_avg"]),
                    pct(g["baseline_avg"]),
                    share(g["gap_closed"]),
                ]
            )
    lines.append(
        "The reference's own definition, on the averaged columns (each row's mean over the tasks; v3's best rows "
        "chosen by their averaged dev scores):"
    )
    lines += ["", table(["study", "best student row", "AVG", "best teacher row", "AVG", "baseline AVG", "gap"], rows)]
    return [*lines, ""]


def render_v3_report(result: dict) -> str:
    """REPORT.md of study v3 from `analyze_v3_study`'s dict.

    Args:
        result: The dict `analyze_v3_study` returns (or its JSON read back): nothing is recomputed here.
    """
    tasks = {name: result["tasks"][name] for name in result["task_order"]}  # JSON read back sorts its keys
    lines = [
        "# Study v3: the pre-registered comparisons",
        "",
        f"Plan: `{result['plan']}`, fixed before the runs. Every choice below is made on dev scores; validation "
        "scores are only reported. Differences are means over seeds of validation-score differences, with a paired "
        f"95% bootstrap interval ({result['resamples']} resamples, seed {result['bootstrap_seed']}) over validation "
        "rows (drawn once per resample for both methods, the metric recomputed on them) and seeds (paired by seed "
        "number). TOST p: the larger of the two one-sided bootstrap p-values against "
        f"+-{100 * result['margin']:g} pp. "
        "Holm p: the secondary tests corrected over the tasks "
        f'({", ".join(result["holm_family"]) or "none"}). A verdict is never "equal".',
        "",
        "| task | primary (`" + PRIMARY_METHOD + "` - best single by dev) | verdict | secondary (best multi by dev - "
        "best single by dev) | verdict | Holm p |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in tasks.items():
        cells = []
        for key in ("primary", "secondary"):
            c = t["comparisons"].get(key)
            ran = c and c.get("difference") is not None
            interval = f"[{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}]" if ran else ""
            cells += [f"`{c['a']}` {pp(c['difference'])} {interval}", c["verdict"]] if ran else ["n/a", "not run"]
        secondary = t["comparisons"].get("secondary") or {}
        lines.append("| " + " | ".join([name, *cells, p(secondary.get("holm_p"))]) + " |")
    lines.append("")
    for name, t in tasks.items():
        lines += task_section(name, t)
    lines += gap_lines(result)
    teachers = sorted({t["method"] for task in tasks.values() for t in task["teachers"]} & set(SAW_GLUE_PAIRS))
    if teachers:
        lines += [
            f"Teachers {', '.join(f'`{t}`' for t in teachers)}: their sentence-embedding pretraining included "
            "MNLI, SNLI and QQP pairs (two of this study's tasks).",
            "",
        ]
    if result["excluded_from_averages"]:
        lines.append(f"Left out of the averages across tasks: {', '.join(result['excluded_from_averages'])}.")
        lines.append("")
    return "\n".join(lines)


def write_v3_report(study_dir: str, output_dir: str, resamples: int = 10_000, seed: int = 0) -> dict:
    """Analyse a v3 study folder and write `REPORT.md` and `v3_results.json` (sorted keys) to `output_dir`.

    Args:
        study_dir: The v3 study folder.
        output_dir: Where the two files go.
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed.
    """
    result = analyze_v3_study(study_dir, resamples, seed)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, RESULTS_FILE), "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
        handle.write("\n")
    with open(os.path.join(output_dir, "REPORT.md"), "w") as handle:
        handle.write(render_v3_report(result))
    return result
