"""The README's quickstart is `examples/quickstart.py` and its figure is what that file prints, so the landing page
cannot drift from the code; the two set-up commands stay what CI runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
PRINTED = "SST-2 validation accuracy of the distilled student: "


def test_readme_example_is_examples_quickstart():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    assert f"```python\n{example}```" in readme
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_docs_include_the_quickstart_file_itself():
    """The getting-started page includes the file at build time (pymdownx.snippets), so it cannot hold a copy."""
    assert '--8<-- "examples/quickstart.py"' in (ROOT / "docs" / "getting-started.md").read_text()


@pytest.mark.slow
def test_the_quickstart_prints_the_readme_figure(tmp_path):
    """Seeded before the student is built, the example is reproducible: it prints the figure the README states."""
    stated = re.search(re.escape(PRINTED) + r"(\d\.\d{4})", (ROOT / "README.md").read_text())
    assert stated, "the README states no figure for the quickstart"
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(GLUE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{PRINTED}{stated.group(1)}" in run.stdout, run.stdout[-1000:]
