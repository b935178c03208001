"""REPORT.md's sections on study v3's two other parts (`v3_parts`): the low-resource regime, beside the full-label
SST-2 numbers (never pooled with them), and the 6-layer student, its own family of tests and its differences from
the 3-layer student. Formatting only: every number comes from the result dict."""

from __future__ import annotations

from .v3_format import comparison_rows, interval, named, pct, pp, share, summary_lines, table, task_section
from .v3_parts import NOT_RUN

SIX_LAYER_CUTS = (
    "The plan had MNLI and SST-2; SST-2's 6-layer student and seeds 45 and 46 of `confidence` and `fitted` were "
    "cut for the compute budget, in the plan's order, before any 6-layer run (PREREGISTRATION.md, Changes)."
)
SIX_LAYER_PLAN = "seeds 42-46 of each method, 42-44 of `confidence` and `fitted`"
COMPARISON_HEADER = ["comparison", "A", "B", "paired seeds", "A - B", "95% CI (pp)", "p (A = B)", "Holm p", "TOST p"]


def sentence(text: str) -> str:
    """A status ("not run yet") as a sentence: capitalised, with a full stop.

    Args:
        text: The status.
    """
    return f"{text[:1].upper()}{text[1:]}."


def seeds_of(t: dict | None, method: str | None) -> str:
    """A method's validation mean and its number of seeds, or what is missing.

    Args:
        t: A task's results (`analyze_task`); None when the study has no such task.
        method: The method's name.
    """
    row = next((m for m in (t or {}).get("methods", []) if m["method"] == method), None)
    if row is None:
        return "not run yet"
    count = len(row["seeds"])
    return f"{pct(row['validation_mean'])} ({count} seed{'s' if count != 1 else ''})"


def primary_cell(t: dict | None) -> str:
    """The primary difference, its interval, paired seeds and verdict (or why it did not run).

    Args:
        t: A task's results (`analyze_task`); None when the study has no such task.
    """
    c = (t or {}).get("comparisons", {}).get("primary")
    if not c:
        return "not run yet"
    if c.get("difference") is None:
        return c["verdict"]
    return f"{pp(c['difference'])} {interval(c)}, {len(c['paired_seeds'])} paired seeds: {c['verdict']}"


def missing_lines(missing: list[str], what: str, plan: str = "seeds 42-46 of each method") -> list[str]:
    """What the plan asks for (3 teachers, 5 seeds of each method or 3 of a cut one) that the folder lacks.

    Args:
        missing: The lacking runs (`planned_missing`).
        what: What they are missing from, as the sentence names it.
        plan: The seeds the plan asks of this part's methods, as the sentence says them.
    """
    if not missing:
        return [f"Nothing of the plan is missing from {what}.", ""]
    return [f"Missing from {what} (the plan: 3 teachers, {plan}): {'; '.join(missing)}.", ""]


def low_resource_lines(result: dict) -> list[str]:
    """The low-resource regime's section: status, beside-table, its task section, its tests vs `none`.

    Args:
        result: The whole v3 result dict (`analyze_v3_parts`): the main study's SST-2 is read for the beside-table.
    """
    part = result.get("low_resource") or {"status": NOT_RUN}
    lines = ["## Low-resource regime (SST-2, 1,000 labelled rows; dev = 100 of them)", ""]
    if part["status"] != "analyzed":
        lines += [sentence(part["status"]), ""]
        return lines + (missing_lines(part["missing"], "the low-resource regime") if "missing" in part else [])
    low, full = part["results"], result["tasks"].get("sst2")
    if part["missing"]:
        lines += [
            "**Interim**: not every run the plan asks of this regime is recorded yet (listed at the end of this "
            "section); its numbers will change.",
            "",
        ]
    lines += [
        "Its own teachers, fine-tuned on the 1,000 labelled rows; the other training rows are unlabelled for everyone "
        "and `none` gets as many optimizer steps as the distilled students. Beside the main study's full-label SST-2 "
        "numbers, never pooled with them; every choice on each study's own dev scores. Validation: mean over seeds.",
        "",
    ]
    chosen = [
        f"{named(t['chosen']['single'])} {seeds_of(t, t['chosen']['single'])}"
        if t and t["chosen"]["single"]
        else "not run yet"
        for t in (full, low)
    ]
    rows = [["`none`", seeds_of(full, "none"), seeds_of(low, "none")], ["single of the best teacher by dev", *chosen]]
    rows += [[f"`{m}`", seeds_of(full, m), seeds_of(low, m)] for m in ("average", "confidence")]
    rows.append(["primary: `average` - that single", primary_cell(full), primary_cell(low)])
    gaps = [share(t["gap"]["gap_closed"]) if t and t.get("gap") else "n/a" for t in (full, low)]
    rows.append(["gap closed (best chosen on dev)", *gaps])
    lines += [table(["SST-2", "full labels (main study)", "1,000 labelled rows"], rows), ""]
    lines += task_section("sst2, low-resource", low, ("primary",), "###")
    family = ", ".join(f"`{m}`" for m in part["holm_family"]) or "none ran"
    floor = 2 * max(len(part["holm_family"]), 1) / result["resamples"]  # the raw bound times this family's size
    lines += [
        "Does distilling on the unlabelled rows help? Each distilled method vs `none`, Holm over these tests "
        f"({family}; a Holm p printed as 0.0000 is below {floor:g} here):",
        "",
        table([*COMPARISON_HEADER, "verdict"], [comparison_rows("vs `none`", c) for c in part["vs_none"]]),
        "",
    ]
    return lines + missing_lines(part["missing"], "the low-resource regime")


def difference_rows(differences: dict) -> list[list[str]]:
    """One row per method of the 6-layer minus 3-layer differences: paired seeds, difference, interval.

    Args:
        differences: One task's differences (`v3_parts.layer_differences`).
    """
    rows = []
    for d in differences["rows"]:
        unpaired = [f"{kind}: {', '.join(map(str, s))}" for kind, s in sorted(d["unpaired_seeds"].items()) if s]
        seeds = f"{len(d['paired_seeds'])}" + (f" (left out {'; '.join(unpaired)})" if unpaired else "")
        if d["difference"] is None:
            rows.append([f"`{d['method']}`", seeds, "n/a", d["note"]])
        else:
            rows.append([f"`{d['method']}`", seeds, pp(d["difference"]), interval(d)])
    return rows


def six_layer_lines(result: dict) -> list[str]:
    """The 6-layer student's section: its summary table (its own Holm family), each task, the 6 - 3 differences.

    Args:
        result: The whole v3 result dict (`analyze_v3_parts`).
    """
    part = result.get("six_layer") or {"status": NOT_RUN}
    lines = ["## 6-layer student (MNLI)", "", SIX_LAYER_CUTS, ""]
    if part["status"] != "analyzed":
        return [*lines, "Not run yet.", ""]
    tasks = {name: part["tasks"][name] for name in part["task_order"]}
    ready = {name: t for name, t in tasks.items() if "comparisons" in t}
    lines += [
        "The whole all-MiniLM-L6-v2 (6 layers) as the student, on the main study's teachers and logits. Its choices "
        "are its own, on dev; its secondary tests are a family of their own: Holm p over "
        f"{', '.join(part['holm_family']) or 'its tasks (none has a secondary test yet)'}, not over the main study's.",
        "",
        *(summary_lines(ready, {n for n, lacking in part["missing"].items() if lacking}) if ready else []),
        "",
    ]
    for name, t in tasks.items():
        if name not in ready:
            lines += [f"### {name}, 6-layer student", "", sentence(t["status"]), ""]
            continue
        lines += task_section(f"{name}, 6-layer student", t, level="###")
        differences = part["layer_differences"][name]
        lines += [f"6-layer minus 3-layer on {name} (descriptive: the same paired bootstrap, no test):", ""]
        if differences["note"]:
            lines += [sentence(differences["note"]), ""]
        else:
            header = ["method", "paired seeds", "6-layer - 3-layer", "95% CI (pp)"]
            lines += [table(header, difference_rows(differences)), ""]
        if differences["three_layer_single"] not in (None, t["chosen"]["single"]):
            lines += [
                f"The main study chose {named(differences['three_layer_single'])} on its dev scores; the row above "
                f"is the 6-layer study's choice, {named(t['chosen']['single'])}.",
                "",
            ]
    for name, missing in sorted(part["missing"].items()):
        lines += missing_lines(missing, f"the 6-layer student's {name}", SIX_LAYER_PLAN)
    return lines


def parts_lines(result: dict) -> list[str]:
    """Both parts' sections, after the main study's report (which they leave as it was).

    Args:
        result: The whole v3 result dict; a dict from before the parts were analysed reads as "not run yet".
    """
    return [*low_resource_lines(result), *six_layer_lines(result)]
