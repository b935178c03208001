"""The README's own-script example is the file `make demo` runs, so the docs cannot drift from the code."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_is_examples_quickstart():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    assert f"```python\n{example}```" in readme
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
