"""The pieces of study v3's REPORT.md: scores, differences and p-values as text, markdown tables, a task's section
and the summary table (shared by `v3_render`, `v3_parts_render` and `causal_render`)."""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from decimal import ROUND_HALF_UP, Decimal

from .v3 import PRIMARY_METHOD, PRIMARY_ON_SECONDARY_SEEDS


def write_report_files(output_dir: str, results_file: str, result: dict, report: str) -> None:
    """Write a plan's result dict (sorted keys: the same dict, the same bytes) and its REPORT.md into `output_dir`.

    Args:
        output_dir: Created if missing.
        results_file: The JSON file's name (`v3_results.json`, `causal_results.json`).
        result: The analysis' JSON-able dict.
        report: REPORT.md's text, rendered from `result`.
    """
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, results_file), "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
        handle.write("\n")
    with open(os.path.join(output_dir, "REPORT.md"), "w") as handle:
        handle.write(report)


ROUNDING_RULE = (
    "Figures print rounded half away from zero after snapping to 9 decimals (65.925 prints 65.93, -7.725 prints "
    "-7.73), so they do not depend on the order a mean was summed in."
)


def fixed(value: float, places: int = 2, signed: bool = False) -> str:
    """`value` with `places` decimals, an exact decimal half rounded away from zero (`ROUNDING_RULE`).

    A mean over an even number of seeds of scores on 1,000 rows often ends in a 5 just past the printed decimals
    (65.925); as a binary float it is 65.92500000000001 or 65.92499999999999 depending on the order it was summed
    in, and plain `f"{x:.2f}"` prints either. Snapping to 9 decimals first makes the figure depend on the value
    alone, so an auditor recomputing it with other code gets the same digits.

    Args:
        value: The number (already in the printed unit: percent, points).
        places: Decimals printed.
        signed: Print `+` before positive numbers (differences).
    """
    snapped = Decimal(f"{value:.9f}") + 0  # + 0: a value that snaps to zero loses its sign (+0.00, not -0.00)
    exact = snapped.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{exact:+f}" if signed else f"{exact:f}"


def pct(value: float | None) -> str:
    """A 0-1 score as a percentage with two decimals; None (not computable) as n/a.

    Args:
        value: The score (0-1), or None.
    """
    return "n/a" if value is None else fixed(100 * value)


def pp(value: float | None) -> str:
    """A difference of two 0-1 scores in signed percentage points (`+1.15 pp`); None as n/a.

    Args:
        value: The difference, as a fraction (0.0115 is +1.15 pp), or None.
    """
    return "n/a" if value is None else f"{fixed(100 * value, signed=True)} pp"


def interval(test: dict) -> str:
    """A test's 95% interval of the difference in signed percentage points (`[-0.18, +1.72]`).

    Args:
        test: A comparison or difference with `ci_low` and `ci_high` as fractions.
    """
    return f"[{fixed(100 * test['ci_low'], signed=True)}, {fixed(100 * test['ci_high'], signed=True)}]"


def share(value: float | None) -> str:
    """A share (the gap closed) as a percentage with one decimal; None as n/a.

    Args:
        value: The share as a fraction (0.283 is 28.3%), or None (not computable).
    """
    return "n/a" if value is None else f"{fixed(100 * value, 1)}%"


SUMMARY_HEADER = (  # the v3 and causal reports' summary tables: one wording, as both plans define the comparisons
    f"| task | primary (`{PRIMARY_METHOD}` - single of the best teacher by dev) | verdict | secondary (best multi "
    "by dev - that single) | verdict | Holm p |",
    "|---|---|---|---|---|---|",
)


def zero_p_sentence(resamples: int, family_size: int) -> str:
    """What a p-value printed as 0.0000 means: no resample crossed zero or the margin, so the p-value is below the
    bootstrap's resolution, which differs per kind of p (a reader cannot otherwise tell "zero" from "small").

    Args:
        resamples: The bootstrap's number of resamples.
        family_size: How many tests Holm corrects over (it multiplies the raw bound by up to this).
    """
    return (
        "A p-value printed as 0.0000 means no resample crossed zero or the margin: p below "
        f"{2 / resamples:g} (two-sided), TOST p below {1 / resamples:g}, Holm p below "
        f"{2 * max(family_size, 1) / resamples:g} (the raw bound times the family's size)."
    )


def p(value: float | None) -> str:
    """A p-value with four decimals; None as n/a.

    Args:
        value: The p-value, or None (the test was not run, or a Holm p outside the family).
    """
    return "n/a" if value is None else f"{value:.4f}"


ROLES = {
    "best_teacher": "best teacher",
    "best_multi": "best multi-teacher method",
    "best_student": "best distilled student",
}


def named(method: str | None) -> str:
    """A method's name in backticks, or "not run yet".

    Args:
        method: The method's (or teacher's) name; None where none was chosen yet.
    """
    return f"`{method}`" if method else "not run yet"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table.

    Args:
        header: The column names.
        rows: The cells, one list per row, as many as the header; each is written with `str`.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def comparison_rows(name: str, comparison: dict | None) -> list[str]:
    """One table row of a comparison: A, B, paired seeds, difference, CI, p-values, verdict.

    Args:
        name: The row's label (`primary`, `secondary`).
        comparison: The comparison (`v3.compare`; differences in 0-1 score units, shown in pp); None where the
            task has no such comparison, shown as not run.
    """
    if comparison is None:
        return [name, "n/a", "n/a", "0", "n/a", "n/a", "n/a", "n/a", "n/a", "not run: a method is missing"]
    c = comparison
    unpaired = [f"{m}: {', '.join(map(str, s))}" for m, s in sorted(c["unpaired_seeds"].items()) if s]
    seeds = f"{len(c['paired_seeds'])}" + (f" (left out {'; '.join(unpaired)})" if unpaired else "")
    if c.get("difference") is None:
        return [name, named(c["a"]), named(c["b"]), seeds, "n/a", "n/a", "n/a", "n/a", "n/a", c["verdict"]]
    return [
        name,
        f"`{c['a']}`",
        f"`{c['b']}`",
        seeds,
        pp(c["difference"]),
        interval(c),
        p(c["p_value"]),
        p(c.get("holm_p")),
        p(c["tost_p"]),
        c["verdict"],
    ]


def task_section(
    name: str, t: dict, comparisons: tuple[str, ...] = ("primary", "secondary"), level: str = "##"
) -> list[str]:
    """One task: its dev choices, teachers, methods, comparisons, gap closed and (MRPC) the all-positive check.

    Args:
        name: The section's title (the task's name).
        t: The task's results (`analyze_task`).
        comparisons: The comparisons tabulated, by key (a plan that defines no secondary test leaves it out).
        level: The heading's markdown level.
    """
    chosen = t["chosen"]
    lines = [f"{level} {name} ({t['metric']}, {t['validation_rows']} validation rows)", ""]
    lines.append(
        f"Chosen on dev: best teacher {named(chosen['best_teacher'])} (column {chosen['teacher_index']}), its "
        f"single student {named(chosen['single'])}; best multi-teacher method {named(chosen['best_multi'])}; best "
        f"distilled student {named(chosen['best_student'])}."
        + "".join(
            f" The {ROLES[role]} {named(chosen[role])} ties on dev with {', '.join(map(named, names))}; a tie goes to "
            "the first name in sort order."
            for role, names in chosen.get("ties", {}).items()
        )
    )
    devices = ", ".join(t["devices"])
    lines += [
        "",
        f"Trained on: {devices}."
        if len(t["devices"]) == 1
        else f"Trained on {len(t['devices'])} devices ({devices}): the plan asks for one device and one precision "
        "per task.",
        "",
        "Processors (runs): "
        + ", ".join(f"{name} ({count})" for name, count in t.get("processors", {}).items())
        + ". Run records name their machine's CPU model from session 14 (2026-12-05) on: sessions may land on "
        "different machines. In float32 a CPU model changes only the order of floating-point sums, as the thread "
        "count does.",
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
    lines.append(table(["method", "type", "seeds", "validation", "dev"], rows) if rows else "No student recorded yet.")
    for pair in t.get("identical_predictions", []):
        a, b = pair["methods"]
        seeds = ", ".join(map(str, pair["seeds"]))
        lines += ["", f"`{a}` and `{b}` predicted the same validation labels on every seed both have ({seeds})."]
    lines += ["", "Comparisons (A - B on validation, seeds paired by seed number):", ""]
    header = ["comparison", "A", "B", "paired seeds", "A - B", "95% CI (pp)", "p (A = B)", "Holm p", "TOST p"]
    extra = (
        [PRIMARY_ON_SECONDARY_SEEDS]
        if "secondary" in comparisons and PRIMARY_ON_SECONDARY_SEEDS in t["comparisons"]
        else []
    )
    rows = [comparison_rows(k, t["comparisons"].get(k)) for k in [*comparisons, *extra]]
    lines.append(table([*header, "verdict"], rows))
    if extra:
        lines += [
            "",
            f"The secondary pairs only the seeds both its methods have, so the row `{extra[0]}` repeats the primary "
            "on those seeds: not one of the plan's tests, it shows how much of the two comparisons' difference comes "
            "from the seeds rather than the method.",
        ]
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
        if check["predicted_positive_share"]:
            low, high = check["predicted_positive_share"]
            lines[-1] += (
                f" The students predict the positive class on {share(low)} to {share(high)} of the validation rows "
                f"(the labels: {share(check['label_positive_share'])})."
            )
    return [*lines, ""]


def summary_lines(tasks: dict, incomplete: Collection[str] = ()) -> list[str]:
    """The summary table: per task, the primary and secondary differences, their verdicts and the Holm p. A task
    whose planned runs are not all recorded is marked interim: its numbers are not the study's answer yet.

    Args:
        tasks: The per-task results (`analyze_task`), in the order shown.
        incomplete: The tasks with planned runs still missing (`v3_parts.main_missing`).
    """
    lines = list(SUMMARY_HEADER)
    for name, t in tasks.items():
        cells = []
        for key in ("primary", "secondary"):
            c = t["comparisons"].get(key)
            ran = c and c.get("difference") is not None
            cells += [f"`{c['a']}` {pp(c['difference'])} {interval(c)}", c["verdict"]] if ran else ["n/a", "not run"]
        secondary = t["comparisons"].get("secondary") or {}
        label = f"{name} (interim)" if name in incomplete else name
        lines.append("| " + " | ".join([label, *cells, p(secondary.get("holm_p"))]) + " |")
    if any(name in incomplete for name in tasks):
        lines += ["", "Interim: a task whose planned runs are not all recorded yet; its numbers will change."]
    return lines
