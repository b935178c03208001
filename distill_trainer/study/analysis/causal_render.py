"""REPORT.md of the causal study from `analyze_causal_study`'s dict: formatting only, every number and verdict comes
from it. The same dict gives the same bytes (no dates, no paths, fixed order)."""

from __future__ import annotations

from .causal import K_GRID_METHODS, analyze_causal_study
from .figures import COMPARISONS_FIGURE, compared, k_curves, nll_by_k_figure, write_causal_figures
from .v3_format import SUMMARY_HEADER, p, share, table, write_report_files, zero_p_sentence
from .v3_stats import VERDICT_RULE

RESULTS_FILE = "causal_results.json"


def nats(value: float | None, sign: bool = False) -> str:
    """A per-token NLL in nats with four decimals (signed for a difference); None as n/a.

    Args:
        value: The NLL, or a difference of two, in nats per token; None where there is none.
        sign: Whether to always write the sign (`+0.0123`), as for a difference.
    """
    return "n/a" if value is None else (f"{value:+.4f}" if sign else f"{value:.4f}")


def spread(mean: float | None, sd: float | None, digits: int = 4) -> str:
    """mean +- sd (sd n/a with one seed).

    Args:
        mean: The mean over seeds; None gives n/a for the whole cell.
        sd: The standard deviation over seeds; None (one seed) gives n/a for it alone.
        digits: Decimals of both.
    """
    return "n/a" if mean is None else f"{mean:.{digits}f} +- " + ("n/a" if sd is None else f"{sd:.{digits}f}")


def named(run: str | None) -> str:
    """A run's name in backticks, or "none run yet".

    Args:
        run: The run's (or teacher's) name; None where it cannot be named yet.
    """
    return f"`{run}`" if run else "none run yet"


def comparison_row(name: str, c: dict) -> list[str]:
    """One table row of a comparison: A, B, paired seeds, difference, CI, p-values, verdict.

    Args:
        name: The row's label (`primary`, `dense`, `average-k8`).
        c: The comparison (`causal.compare`); one that was not run gives n/a cells and its verdict.
    """
    unpaired = [f"{m}: {', '.join(map(str, s))}" for m, s in sorted(c["unpaired_seeds"].items()) if s]
    seeds = f"{len(c['paired_seeds'])}" + (f" (left out {'; '.join(unpaired)})" if unpaired else "")
    if c.get("difference") is None:
        return [name, named(c["a"]), named(c["b"]), seeds, "n/a", "n/a", "n/a", "n/a", "n/a", c["verdict"]]
    interval = f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
    values = [nats(c["difference"], True), interval, p(c["p_value"]), p(c.get("holm_p")), p(c["tost_p"])]
    return [name, f"`{c['a']}`", f"`{c['b']}`", seeds, *values, c["verdict"]]


COMPARISON_HEADER = ["comparison", "A", "B", "paired seeds", "A - B (nats)", "95% CI", "p (A = B)", "Holm p", "TOST p"]


def teacher_lines(t: dict) -> list[str]:
    """The teachers' dev and validation NLL and perplexity, and their pairwise top-1 agreement.

    Args:
        t: One task's results (`causal.analyze_task`); without a `teachers.json` the agreement table is left out.
    """
    best = t["chosen"]["best_teacher"]
    rows = [
        [f"{r['index']}: `{r['name']}`{' *' if r['name'] == best else ''}", nats(r["dev_nll"])]
        + [f"{1 / r['dev_score']:.3f}", nats(r["validation_nll"]), f"{1 / r['validation_score']:.3f}"]
        for r in t["teachers"]
    ]
    lines = ["Teachers (a `*` marks the one chosen on dev; NLL in nats per token, from their token likelihoods):", ""]
    lines += [table(["teacher", "dev NLL", "dev perplexity", "validation NLL", "validation perplexity"], rows), ""]
    agreement = (t["agreement"] or {}).get("top1_agreement")
    if agreement:
        names = [str(r["index"]) for r in t["teachers"]]
        cells = [
            [name, *(f"{d:.3f} / {v:.3f}" for d, v in zip(dev, val, strict=True))]
            for name, dev, val in zip(names, agreement["dev"], agreement["validation"], strict=True)
        ]
        lines += ["Pairwise top-1 agreement of the teachers (dev / validation completions):", ""]
        lines += [table(["teacher", *names], cells), ""]
    return lines


def run_lines(t: dict) -> list[str]:
    """Every run: seeds, validation NLL and perplexity (mean +- sd over seeds), mean dev NLL, agreement, wall time.

    Args:
        t: One task's results (`causal.analyze_task`).
    """
    rows = [
        [
            f"`{r['run']}`",
            str(r["k"] if r["k"] is not None else "-"),
            f"{len(r['seeds'])} ({r['seeds'] and ', '.join(map(str, r['seeds']))})",
        ]
        + [
            spread(r["validation_nll_mean"], r["validation_nll_sd"]),
            spread(r["perplexity_mean"], r["perplexity_sd"], 3),
        ]
        + [nats(r["dev_nll_mean"]), "n/a" if r["top1_best_teacher"] is None else f"{r['top1_best_teacher']:.3f}"]
        + ["n/a" if r["train_s_mean"] is None else f"{r['train_s_mean']:.0f}"]
        for r in t["runs"]
    ]
    header = ["run", "k", "seeds", "validation NLL", "perplexity", "dev NLL", "top-1 agr. best teacher", "train s"]
    lines = ["Students (validation: mean +- sd over seeds; dev NLL: the mean, what chooses; train s: the mean):", ""]
    return [*lines, table(header, rows), ""]


def storage_lines(t: dict) -> list[str]:
    """Quality against k for the best single and `average` (with bytes on disk and extraction time), dense vs k.

    Args:
        t: One task's results (`causal.analyze_task`).
    """
    runs, largest = {r["run"]: r for r in t["runs"]}, t["largest_k"]
    single = t["chosen"]["single"]
    rows = []
    for entry in t["topk"]:
        k = entry["k"]
        cells = [str(k), "n/a" if entry.get("bytes") is None else f"{entry['bytes']:,}"]
        cells.append("n/a" if entry.get("wall_time_s") is None else f"{entry['wall_time_s']:.0f}")
        for run in (single if k == largest else f"best_single-k{k}", f"average-k{k}"):
            r = runs.get(run)
            cells.append(
                f"{spread(r['validation_nll_mean'], r['validation_nll_sd'])} ({len(r['seeds'])})" if r else "not run"
            )
        rows.append(cells)
    dense = runs.get("average-dense")
    rows.append(
        [
            "dense (live)",
            "-",
            "-",
            "-",
            f"{spread(dense['validation_nll_mean'], dense['validation_nll_sd'])} ({len(dense['seeds'])})"
            if dense
            else "not run",
        ]
    )
    header = ["k", "bytes on disk", "extraction s", "best single NLL (seeds)", "`average` NLL (seeds)"]
    lines = [
        "### What sparse storage costs (descriptive)",
        "",
        f"Validation NLL (mean +- sd over seeds; how many in brackets) against k. The top-k at k = {largest} was "
        "extracted by every teacher; each smaller k was cut from it, so its time is the cut's.",
        "",
        table(header, rows),
        "",
    ]
    smaller = [entry["k"] for entry in t["topk"] if entry["k"] != largest]
    keys = ["dense", *(f"{m}-k{k}" for m in K_GRID_METHODS for k in smaller if f"{m}-k{k}" in t["comparisons"])]
    rows = [comparison_row(k, t["comparisons"][k]) for k in keys]
    return [*lines, table([*COMPARISON_HEADER, "verdict"], rows), ""]


def task_section(name: str, t: dict) -> list[str]:
    """One task: its dev choices, teachers, runs, comparisons, gap closed, storage, what is missing, checks.

    Args:
        name: The task's name (the section's heading).
        t: The task's results (`causal.analyze_task`).
    """
    chosen = t["chosen"]
    lines = [f"## {name} ({t['validation_rows']} validation rows; largest k {t['largest_k']})", ""]
    if t["unscored_rows"]:
        lines += [
            f"{t['unscored_rows']} more validation row(s) have no scored token (cut at max_length): left out.",
            "",
        ]
    lines += [
        f"Chosen on dev: best teacher {named(chosen['best_teacher'])}, its single student {named(chosen['single'])}; "
        f"best multi-teacher method (lowest mean student dev NLL) {named(chosen['best_multi'])}.",
        "",
        f"Students trained on: {', '.join(t['devices'])}."
        + ("" if len(t["devices"]) == 1 else " The plan asks for one device and one precision."),
        "",
        *teacher_lines(t),
        *run_lines(t),
        "Comparisons (A - B in validation NLL per token: negative, A is better; seeds paired by seed number):",
        "",
        table(
            [*COMPARISON_HEADER, "verdict"], [comparison_row(k, t["comparisons"][k]) for k in ("primary", "secondary")]
        ),
        "",
    ]
    for key, gap in sorted(t["gap"].items()):
        lines += [
            f"Gap closed by `{gap['run']}` ({key}): ({nats(gap['none'])} - {nats(gap['student'])}) / "
            f"({nats(gap['none'])} - {nats(gap['teacher'])}) = {share(gap['gap_closed'])} (NLL of `none`, the "
            "student and the best teacher by dev).",
            "",
        ]
    lines += storage_lines(t)
    if t["missing"]:
        missing = "; ".join(f"`{run}` seed {', '.join(map(str, s))}" for run, s in t["missing"].items())
        lines += [f"Missing (the plan's runs and seeds without a record yet): {missing}.", ""]
    if t["checks"]:
        lines += ["Checks that failed: " + "; ".join(t["checks"]) + ".", ""]
    return lines


def render_causal_report(result: dict) -> str:
    """REPORT.md of the causal study from `analyze_causal_study`'s dict.

    Args:
        result: The dict `analyze_causal_study` returns (or its JSON read back): nothing is recomputed here.
    """
    tasks = {name: result["tasks"][name] for name in result["task_order"]}
    margin = f"+-{result['margin']:g} {result['unit']}"
    lines = [
        "# The causal study (issue 31): the pre-registered comparisons",
        "",
        f"Plan: `{result['plan']}`, fixed before the runs. Every choice is made on dev (the best single teacher by "
        "its dev token likelihood, the best multi-teacher method by its students' mean dev NLL); validation is only "
        "reported. A difference is the student's validation per-token NLL minus the comparison's (negative: the "
        "student is better), the mean over seeds, with a paired 95% bootstrap interval "
        f"({result['resamples']} resamples, seed {result['bootstrap_seed']}): validation rows drawn once per "
        "resample for every seed and both runs, the per-token NLL recomputed on them (summed NLL over summed "
        "tokens), and seeds drawn in pairs (by seed number). TOST p: the larger of the two one-sided bootstrap "
        f"p-values against {margin}; a verdict of no difference needs the "
        "95% interval inside the margin, which is TOST at 2.5% a side (TOST p below 0.025), stricter than a 5% "
        "TOST's 90% interval: a TOST p between 0.025 and 0.05 still reads inconclusive. "
        f"{zero_p_sentence(result['resamples'], len(result['holm_family']))} {VERDICT_RULE} "
        "Holm p: the secondary tests corrected over the tasks "
        f'({", ".join(result["holm_family"]) or "none"}). A verdict is never "equal". Wall times were measured on a '
        "CPU shared with other work. What SmolLM2's pretraining and instruction data contain of MNLI or QQP is "
        "not known to us.",
        "",
    ]
    partial = result["missing_tasks"] or any(t["missing"] for t in tasks.values())
    if partial:
        lines += [
            "**This study is not finished**: "
            + "; ".join(
                [f"{n}: no student record yet" for n in result["missing_tasks"]]
                + [
                    f"{n}: {sum(len(s) for s in t['missing'].values())} of the plan's runs (run x seed) missing"
                    for n, t in tasks.items()
                    if t["missing"]
                ]
            )
            + " (each task's section lists them). What is there is reported below.",
            "",
        ]
    lines += SUMMARY_HEADER
    for name, t in tasks.items():
        cells = []
        for key in ("primary", "secondary"):
            c = t["comparisons"][key]
            ran = c.get("difference") is not None
            interval = f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]" if ran else ""
            cells += (
                [f"`{c['a']}` {nats(c['difference'], True)} {interval}", c["verdict"]]
                if ran
                else ["n/a", c["verdict"]]
            )
        lines.append("| " + " | ".join([name, *cells, p(t["comparisons"]["secondary"].get("holm_p"))]) + " |")
    lines.append("")
    if compared(tasks):
        lines += [f"![Each task's primary and secondary differences against the margin]({COMPARISONS_FIGURE})", ""]
    for name, t in tasks.items():
        lines += task_section(name, t)
        if k_curves(t):
            lines += [f"![{name}: validation NLL and storage against k]({nll_by_k_figure(name)})", ""]
    return "\n".join(lines)


def write_causal_report(study_dir: str, output_dir: str, resamples: int = 10_000, seed: int = 0) -> dict:
    """Analyse a causal study folder and write `REPORT.md`, `causal_results.json` (sorted keys) and the report's
    figures (`figures.write_causal_figures`) to `output_dir`.

    Args:
        study_dir: The causal study folder (`runs/causal`).
        output_dir: Where the files go.
        resamples: Bootstrap resamples per comparison.
        seed: The bootstrap's base seed.
    """
    result = analyze_causal_study(study_dir, resamples, seed)
    write_report_files(output_dir, RESULTS_FILE, result, render_causal_report(result))
    write_causal_figures(result, output_dir)
    return result
