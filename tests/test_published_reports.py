"""Every published study report rebuilds byte for byte from the run records archived beside it, by the command the
README gives (`tar xJf results/<study>/runs.tar.xz -C DIR` then `distill-trainer analyze --plan <plan> --study_dir
DIR/<study>`): a number in a report is a number its records give, with nobody's code but ours in between."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

PUBLISHED = [  # results folder, the analysis plan, the study folder inside its archive, the plan's JSON
    ("causal", "causal", "causal", "causal_results.json"),
]


@pytest.mark.parametrize("folder, plan, study, results_file", PUBLISHED)
def test_a_published_report_rebuilds_byte_for_byte_from_its_archive(tmp_path, folder, plan, study, results_file):
    import analyze

    published = ROOT / "results" / folder
    if not (published / "runs.tar.xz").exists():
        pytest.skip(f"results/{folder} has no runs.tar.xz yet: its study has not reported")
    with tarfile.open(published / "runs.tar.xz") as archive:
        archive.extractall(tmp_path / "runs", filter="data")
    output = tmp_path / "out"
    analyze.main(["--plan", plan, "--study_dir", str(tmp_path / "runs" / study), "--output_dir", str(output)])
    for name in ("REPORT.md", results_file):
        assert (output / name).read_bytes() == (published / name).read_bytes(), name
