"""`make demo`'s table in the docs (`docs/study.md`) is what the command printed: `results/demo/master_results.csv`
is its output, committed with the run records it came from (`results/demo/runs.tar.xz`), and a demo student
retrained from the archived logits scores what its record, and the docs, say. The README's results quote the
same run: every score in its demo sentence is one of that file's."""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill_trainer.study.runs import StudentResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
DEMO = ROOT / "results" / "demo"
HEADING = "## What `make demo` printed"


def docs_demo_table() -> dict[str, float]:
    """The docs' demo table as {method: score in percent}."""
    text = (ROOT / "docs" / "study.md").read_text()
    section = text[text.index(HEADING) :]
    table = next(block for block in section.split("\n\n") if block.startswith("| method"))
    rows = table.splitlines()[1:]
    cells = [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows[1:]]  # not |---|
    return {method: float(score) for method, _, score in cells}


def test_the_docs_demo_table_is_what_make_demo_wrote():
    written = pd.read_csv(DEMO / "master_results.csv")
    assert docs_demo_table() == {row.method: round(100 * row.score, 2) for row in written.itertuples()}


def test_the_readme_results_quote_the_demo_as_it_printed():
    written = {f"{100 * score:.2f}" for score in pd.read_csv(DEMO / "master_results.csv").score}
    paragraphs = (ROOT / "README.md").read_text().split("\n\n")
    row = next(p for p in paragraphs if p.startswith("`make demo` (SST-2, 2,000 rows, one seed) printed:"))
    quoted = re.findall(r"\b\d+\.\d\d\b", row)
    assert len(quoted) == 4 and set(quoted) <= written, (quoted, sorted(written))


@pytest.mark.slow
def test_a_demo_student_retrains_to_the_score_it_recorded(tmp_path):
    """The `average` student again from the archived teachers' logits, through `compare.py` as `make demo` runs it
    (its teachers' records and logit dataset are reused): the same predictions, so the same table."""
    import compare

    with tarfile.open(DEMO / "runs.tar.xz") as archive:
        archive.extractall(tmp_path, filter="data")
    folder = tmp_path / "demo" / "sst2" / "student-average-seed42"
    recorded = StudentResult.load(str(folder))
    archived_logits = np.load(folder / "validation_logits.npy")
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()
    table = compare.main(
        ["--config", str(ROOT / "recipes" / "configs" / "demo.yaml"), "--data", str(ROOT.parent / "shared/data/glue")]
        + ["--study_dir", str(tmp_path / "demo"), "--methods", "average", "--results_csv", str(tmp_path / "r.csv")]
        + ["--output_dir", str(tmp_path / "unused"), "--disable_tqdm", "true"]
    )
    retrained = StudentResult.load(str(folder))
    assert retrained.score == recorded.score and round(100 * recorded.score, 2) == docs_demo_table()["average"]
    np.testing.assert_allclose(np.load(folder / "validation_logits.npy"), archived_logits, atol=1e-4)
    assert list(table.method)[-1] == "average"
