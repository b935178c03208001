"""The layout: the core never imports the study layer, modules stay small, run records have one definition."""

import ast
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from distill_trainer.study.runs import RECORD_FORMAT_VERSION, StudentResult, TeacherRecord

PACKAGE = Path(__file__).resolve().parents[1] / "distill_trainer"
CORE = [
    "__init__.py",
    "config.py",
    "trainer.py",
    "trainable_fusion.py",
    "sampling.py",
    "card.py",
    "losses.py",
    "fusion.py",
    "fitting.py",
    "labels.py",
    "logits.py",
    "collator.py",
    "monitoring.py",
    "kd_losses.py",
    "signals.py",
    "tokens.py",
    "token_fusion.py",
    "topk.py",
]


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


def test_no_module_is_much_over_300_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 320
    }
    assert not long, long


def test_run_records_round_trip_and_refuse_what_they_do_not_define(tmp_path):
    record = TeacherRecord(
        name="t", base_model="b", task="sst2", metric="accuracy", validation_score=0.9, train_rows=10
    )
    path = record.save(str(tmp_path))
    assert TeacherRecord.load(str(tmp_path)) == record == TeacherRecord.load(path)
    assert json.loads(Path(path).read_text())["format_version"] == RECORD_FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["teacher_info.json"]  # no partial file left behind
    legacy = {k: v for k, v in asdict(record).items()}  # before format_version existed: version 1
    Path(path).write_text(json.dumps(legacy))
    assert TeacherRecord.load(path) == record
    for broken, message in [
        ({**legacy, "validaton_score": 1}, "unknown fields \\['validaton_score'\\]"),
        ({k: v for k, v in legacy.items() if k != "task"}, "missing fields \\['task'\\]"),
        ({**legacy, "format_version": RECORD_FORMAT_VERSION + 1}, "upgrade"),
    ]:
        Path(path).write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message):
            TeacherRecord.load(path)
    with pytest.raises(FileNotFoundError, match="eval_results.json"):
        StudentResult.load(str(tmp_path))


def test_student_result_names_its_method():
    teachers = [{"name": "mpnet-sst2"}, {"name": "tfidf-sst2"}]
    common = dict(task="sst2", metric="accuracy", score=0.8, temperature=6.0, alpha=0.7, seed=1, teachers=teachers)
    assert StudentResult(fusion="none", **common).method == ("none", "baseline")
    assert StudentResult(fusion="single", teacher_index=1, **common).method == ("single: tfidf", "single")
    assert StudentResult(fusion="average", **common).method == ("average", "multi")
