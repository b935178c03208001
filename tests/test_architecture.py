"""The two layers: the core (what a user's own script imports) never imports the study layer."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "distill_trainer"
CORE = ["__init__.py", "config.py", "trainer.py", "losses.py", "fusion.py", "logits.py", "collator.py"]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against the package."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "distill_trainer" if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return modules


def test_the_core_imports_nothing_from_the_study_layer():
    assert sorted(path.name for path in PACKAGE.glob("*.py")) == sorted(CORE), "a new top-level module: core or study?"
    for name in CORE:
        study_imports = {m for m in imported_modules(PACKAGE / name) if m.startswith("distill_trainer.study")}
        assert not study_imports, f"{name} imports {study_imports}"


def test_no_module_is_over_300_lines():
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 300}
    assert not long, long
