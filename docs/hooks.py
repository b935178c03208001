"""mkdocs hook: serve the repository's generated study reports (`results/**/REPORT.md` and their plots) as pages.

They are written by `recipes/analyze.py` and live beside their runs' CSVs, outside `docs/`; copying them would let
the copies go stale. Added here under the same paths (`results/v2/REPORT.md`), the docs link to them and the strict
build checks those links like any other. `CHANGELOG.md` at the repository root is served as `changelog.md`.
"""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for path in sorted((ROOT / "results").rglob("*")):
        if path.suffix in (".md", ".png") and path.is_file():
            files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    files.append(File.generated(config, "changelog.md", abs_src_path=str(ROOT / "CHANGELOG.md")))
    return files
