"""`make demo`'s table in the README is what the command printed: `results/demo/master_results.csv` is its output,
committed with the run records it came from (`results/demo/runs.tar.xz`), and a demo student retrained from
the archived logits scores what its record, and the README, say."""

from __future__ import annotations

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
HEADING = "### What `make demo` printed"


def readme_demo_table() -> dict[str, float]:
    """The README's demo table as {method: score in percent}."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(HEADING) :]
    table = next(block for block in section.split("\n\n") if block.startswith("| method"))
    rows = table.splitlines()[1:]
    cells = [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows[1:]]  # not |---|
    return {method: float(score) for method, _, score in cells}


def test_the_readme_demo_table_is_what_make_demo_wrote():
    written = pd.read_csv(DEMO / "master_results.csv")
    assert readme_demo_table() == {row.method: round(100 * row.score, 2) for row in written.itertuples()}


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
    assert retrained.score == recorded.score and round(100 * recorded.score, 2) == readme_demo_table()["average"]
    np.testing.assert_allclose(np.load(folder / "validation_logits.npy"), archived_logits, atol=1e-4)
    assert list(table.method)[-1] == "average"
