"""The documentation site builds with `mkdocs build --strict`: a broken link, a page missing from the site, an
`Args:` entry naming no parameter or an API reference that does not resolve fails the build, and so this test
(CI runs `make test`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        cwd=config.parent,
    )


def test_the_docs_build_strict(tmp_path):
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    for page in ["getting-started", "logit-datasets", "fusion", "loss", "causal-lm", "recipes", "hub", "api"]:
        assert (tmp_path / "site" / page / "index.html").is_file(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    import distill_trainer

    anchors = set(re.findall(r'id="distill_trainer\.[\w.]*?\.(\w+)"', api))
    missing = sorted(set(distill_trainer.__all__) - anchors)
    assert not missing, f"not in the API reference: {missing}"
    # the study's generated reports are pages of the site, so links to them are checked too
    assert (tmp_path / "site" / "results" / "v2" / "REPORT" / "index.html").is_file()


def test_a_broken_link_fails_the_build(tmp_path):
    """The same site with one link to a page that does not exist: strict mode must refuse it."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    for name in ["distill_trainer", "results", "CHANGELOG.md"]:
        (project / name).symlink_to(ROOT / name)
    with open(project / "docs" / "index.md", "a") as page:
        page.write("\nSee [a page that does not exist](no-such-page.md).\n")
    result = build(project / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and "no-such-page.md" in result.stderr, result.stderr
