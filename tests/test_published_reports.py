"""Every published study report rebuilds byte for byte from the run records archived beside it, by the command the
README gives (`tar xJf results/<study>/runs.tar.xz -C DIR`, and the same for the study's `logits.tar.xz` where it
keeps its logit datasets apart, then `distill-trainer analyze` on DIR's folders, as `make report-<study>` ran it): a
number in a report is a number its records give, with nothing in between."""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

PUBLISHED = {  # results folder: the analysis' options ({runs}: where the archive is unpacked), the plan's JSON
    "causal": (["--plan", "causal", "--study_dir", "{runs}/causal"], "causal_results.json"),
    "v3": (["--plan", "v3", "--study_dir", "{runs}/v3"], "v3_results.json"),
    "v3-bf16": (["--plan", "precision", "--study_dir", "{runs}/v3-bf16"], "precision_results.json"),
}
SUMMARIZED = ("causal", "v3")  # studies whose summary table the README gives (the bf16 settlement: a sentence)
PARTS = {"v3": {"--low_resource_dir": "v3-low-resource", "--six_layer_dir": "v3-6layer"}}  # given when archived


@pytest.mark.parametrize("folder", sorted(PUBLISHED))
def test_a_published_report_rebuilds_byte_for_byte_from_its_archive(tmp_path, folder):
    import analyze

    published, (options, results_file) = ROOT / "results" / folder, PUBLISHED[folder]
    if not (published / "runs.tar.xz").exists():
        pytest.skip(f"results/{folder} has no runs.tar.xz yet: its study has not reported")
    for path in sorted(published.glob("*.tar.xz")):  # runs.tar.xz, and logits.tar.xz where the study has one
        with tarfile.open(path) as archive:
            archive.extractall(tmp_path / "runs", filter="data")
    runs, output = tmp_path / "runs", tmp_path / "out"
    parts = [[option, str(runs / part)] for option, part in PARTS.get(folder, {}).items() if (runs / part).is_dir()]
    options = [option.format(runs=runs) for option in options] + sum(parts, [])  # as make report-<study> passes them
    analyze.main([*options, "--output_dir", str(output)])
    for name in ("REPORT.md", results_file):
        assert (output / name).read_bytes() == (published / name).read_bytes(), name
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (published / "REPORT.md").read_text())
    for figure in figures:  # drawn from the same dict; PNG bytes vary with matplotlib's version, so only present
        assert (output / figure).is_file() and (published / figure).is_file(), figure


def first_table(markdown: str) -> str:
    """The first markdown table of a text: its consecutive lines that start with `|`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("folder", SUMMARIZED)
def test_the_readme_gives_a_published_reports_summary_table_as_it_is(folder):
    """The README's results for a study are its report's summary table, copied as it is: the README gives no number
    that the archive does not rebuild."""
    published = ROOT / "results" / folder
    if not (published / "runs.tar.xz").exists():
        pytest.skip(f"results/{folder} has no runs.tar.xz yet: its study has not reported")
    summary = first_table((published / "REPORT.md").read_text())
    assert summary in (ROOT / "README.md").read_text(), f"README.md lacks results/{folder}/REPORT.md's summary table"
