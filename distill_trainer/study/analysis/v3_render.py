"""REPORT.md of study v3 from `analyze_v3_study`'s dict: formatting only, every number and verdict comes from it.

The same dict gives the same bytes (no dates, no paths, fixed order), so the report can be rebuilt from the run
records and compared byte for byte.
"""

from __future__ import annotations

from .figures import COMPARISONS_FIGURE, compared, scores_figure, write_v3_figures
from .reference import REFERENCE_AVG_GAP, V2_AVG_GAP
from .v3_format import (
    ROUNDING_RULE,
    fixed,
    pct,
    share,
    summary_lines,
    table,
    task_section,
    write_report_files,
    zero_p_sentence,
)
from .v3_parts import analyze_v3_parts
from .v3_parts_render import parts_lines
from .v3_stats import VERDICT_RULE

RESULTS_FILE = "v3_results.json"
BUDGET_CUTS = (
    "Cut for the compute budget, in the plan's order and before the runs they remove (PREREGISTRATION.md, Changes, "
    "2026-12-05): the 6-layer student on SST-2; on QQP and SST-2, every method but `none`, the singles, `average`, "
    "`weighted`, `fitted` and `confidence`; seeds 45 and 46 of `fitted` and `confidence` (3 seeds, 42-44)."
)
SAW_GLUE_PAIRS = ("all-mpnet-base-v2", "all-MiniLM-L6-v2")  # the plan: the report says what they were trained on


def gap_lines(result: dict) -> list[str]:
    """The gap closed both ways, beside the reference's and v2's same-definition figures.

    Args:
        result: The dict `analyze_v3_study` returns (its `mean_gap_closed`, `avg_column_gap` and
            `avg_column_gap_all_tasks`, `excluded_from_averages`).
    """
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
            fixed(g["best_student_avg"]),
            teacher,
            fixed(g["best_teacher_avg"]),
            fixed(g["baseline_avg"]),
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


def unfinished_lines(missing: list | None) -> list[str]:
    """The main study's unfinished tasks, said before any number (nothing when it is complete, or from a dict
    analysed without the plan's parts).

    Args:
        missing: `v3_parts.main_missing`'s [task, what it lacks] pairs.
    """
    if not missing:
        return []
    said = "; ".join(f"{task}: {', '.join(lacking)}" for task, lacking in missing)
    return [f"**This study is not finished.** The main study's runs that have no record yet: {said}.", ""]


def render_v3_report(result: dict) -> str:
    """REPORT.md of study v3 from `analyze_v3_parts`'s dict: the main study, then its two other parts (a dict
    without them, `analyze_v3_study`'s, gives the same main part and "not run yet" for both).

    Args:
        result: The dict `analyze_v3_parts` returns (or its JSON read back): nothing is recomputed here.
    """
    tasks = {name: result["tasks"][name] for name in result["task_order"]}  # JSON read back sorts its keys
    lines = [
        "# Study v3: the pre-registered comparisons",
        "",
        f"Plan: `{result['plan']}`, fixed before the runs. Every choice below is made on dev scores; validation "
        "scores are only reported. Differences are means over seeds of validation-score differences, with a paired "
        f"95% bootstrap interval ({result['resamples']} resamples, seed {result['bootstrap_seed']}) over validation "
        "rows (drawn once per resample, the same rows for both methods and every seed, since every run is scored on "
        "the same validation set; the metric recomputed on them) and seeds (paired by seed number). TOST p: the "
        "larger of the two one-sided bootstrap p-values against "
        f"+-{100 * result['margin']:g} pp; a verdict of no difference needs the 95% interval inside the margin, "
        "which is TOST at 2.5% a side (TOST p below 0.025), stricter than a 5% TOST's 90% interval: a TOST p "
        "between 0.025 and 0.05 still reads inconclusive. "
        f"{zero_p_sentence(result['resamples'], len(result['holm_family']))[:-1]}, over the tasks; the "
        f"low-resource regime's family below gives its own. {VERDICT_RULE} "
        "Holm p: the secondary tests corrected over the tasks "
        f'({", ".join(result["holm_family"]) or "none"}). A verdict is never "equal". {ROUNDING_RULE}',
        "",
        BUDGET_CUTS,
        "",
        *unfinished_lines(result.get("main_missing")),
        *summary_lines(tasks, {task for task, _ in result.get("main_missing") or []}),
        "",
    ]
    if compared(tasks):
        lines += [f"![Each task's primary and secondary differences against the margin]({COMPARISONS_FIGURE})", ""]
    for name, t in tasks.items():
        lines += task_section(name, t)
        if t["methods"]:
            lines += [f"![{name}: students' validation scores against the teachers']({scores_figure(name)})", ""]
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
    return "\n".join(lines + parts_lines(result))


def write_v3_report(
    study_dir: str,
    output_dir: str,
    resamples: int = 10_000,
    seed: int = 0,
    low_resource_dir: str | None = None,
    six_layer_dir: str | None = None,
) -> dict:
    """Analyse a v3 study folder and its two parts, and write `REPORT.md`, `v3_results.json` (sorted keys) and the
    report's figures (`figures.write_v3_figures`) to `output_dir`.

    Args:
        study_dir: The v3 study folder.
        output_dir: Where the files go.
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed.
        low_resource_dir: The low-resource regime's study folder; None or absent: its section says "not run yet".
        six_layer_dir: The 6-layer student's study folder; None or absent: likewise.
    """
    result = analyze_v3_parts(study_dir, low_resource_dir, six_layer_dir, resamples, seed)
    write_report_files(output_dir, RESULTS_FILE, result, render_v3_report(result))
    write_v3_figures(result, output_dir)
    return result
