"""The layout: the core never imports the study layer nor the study's dependencies, modules stay small, run records
have one definition."""

import ast
import configparser
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tokenize
import venv
from dataclasses import asdict
from pathlib import Path

import pytest

from distill_trainer.study.runs import RECORD_FORMAT_VERSION, StudentResult, TeacherRecord

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "distill_trainer"
CORE = [
    "logit_metadata.py",
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
    "live_teachers.py",
    "vocabulary.py",
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


# Distribution name in setup.cfg -> the module it installs, where they differ.
MODULE_OF = {"Jinja2": "jinja2", "scikit-learn": "sklearn", "pyyaml": "yaml"}
STUDY_ONLY = {"pandas", "sklearn", "yaml", "tqdm", "matplotlib"}


def requirements(section: str, key: str) -> set[str]:
    """The modules of one requirement list of setup.cfg (install_requires, or an extra)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    names = [re.split(r"[<>=!~\[; ]", line.strip())[0] for line in config[section][key].splitlines() if line.strip()]
    return {MODULE_OF.get(name, name) for name in names}


def test_the_core_imports_only_what_pip_install_distill_trainer_installs():
    """Every module a core file imports (at the top or inside a function) is the standard library's, the core's, or
    one `install_requires` names; none is a dependency of the study layer only."""
    core_requirements = requirements("options", "install_requires")
    assert not core_requirements & STUDY_ONLY
    study, dev = requirements("options.extras_require", "study"), requirements("options.extras_require", "dev")
    assert STUDY_ONLY <= study <= dev
    for name in CORE:
        top_level = {module.partition(".")[0] for module in imported_modules(PACKAGE / name)}
        foreign = top_level - set(sys.stdlib_module_names) - core_requirements - {"distill_trainer", "__future__"}
        assert not foreign, f"{name} imports {foreign}: not installed by `pip install distill-trainer`"


def run_core_script(python: str, tmp_path: Path, *options: str, env: dict | None = None) -> str:
    """tests/core_only_run.py (import, attach logits, config, train 4 steps, evaluate) in a subprocess."""
    script = ROOT / "tests" / "core_only_run.py"
    run = subprocess.run(
        [python, str(script), str(tmp_path / "out"), *options],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "trained 4 steps" in run.stdout
    return run.stdout


def test_the_core_trains_with_the_study_dependencies_blocked(tmp_path):
    """The cheap check of the next test: the same script, with any import of pandas, sklearn, yaml, tqdm or
    matplotlib by a core module made to fail (at import time and while training)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run_core_script(sys.executable, tmp_path, "--block-study-imports", env=env)


@pytest.mark.slow
def test_pip_install_distill_trainer_alone_trains_a_student(tmp_path):
    """A fresh virtualenv with only the core installed (`pip install <repo>`, no extras; needs the package
    registries): the study's own dependencies are absent, and a user's script imports distill_trainer, builds a
    config and trains a student. pandas, tqdm and yaml come with datasets and transformers (so they are
    installed); scikit-learn and matplotlib must not be. Measured: 285 s on 2 shared cores (torch 67 s, the core's
    requirements 168 s, the commands and the script 48 s)."""
    started, times = time.monotonic(), {}
    source = tmp_path / "source"  # pip builds in the source folder: a copy leaves no build/ in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "runs", "results", "*.egg-info"))
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for step, install in (("torch", "torch==2.13.0"), ("the core", str(source))):  # torch: a wheel on disk here
        done = subprocess.run(pip + [install], env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        times[step] = time.monotonic() - started - sum(times.values())
    probe = "import importlib.util as u; print(*[m for m in ('sklearn', 'matplotlib') if u.find_spec(m)])"
    present = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert present.stdout.split() == [], f"study dependencies installed with the core: {present.stdout}"
    command = str(tmp_path / "venv" / "bin" / "distill-trainer")  # installed, and says what the study needs
    listed = subprocess.run([command, "--help"], env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and "train-teacher" in listed.stdout and "analyze" in listed.stdout
    refused = subprocess.run([command, "analyze", "--help"], env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "pip install 'distill-trainer[study]'" in refused.stderr, refused.stderr
    stdout = run_core_script(python, tmp_path, env=env)
    times["commands and the script"] = time.monotonic() - started - sum(times.values())
    print(stdout.splitlines()[-1], "; seconds:", {step: round(seconds) for step, seconds in times.items()})


def code_lines(text: str) -> int:
    """Lines that hold code: not blank, not only a comment, not inside a docstring (documentation never competes
    with the size limit)."""
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    skipped = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in skipped:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def test_no_module_has_more_than_250_lines_of_code():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := code_lines(path.read_text())) > 250
    }
    assert not long, long
    assert code_lines('"""Doc\nstring."""\n\n# a comment\nx = 1  # code\n') == 1


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


def test_reading_a_logit_dataset_is_not_owned_by_publishing():
    """Training, the runner and the questions read logit datasets through `study/logit_data.py`, which imports
    nothing of the package (publishing included); `hub.py` writes what it reads back."""
    study = PACKAGE / "study"
    assert not {m for m in imported_modules(study / "logit_data.py") if m.startswith("distill_trainer")}
    for name in ("training.py", "causal_lm.py", "runner.py", "questions.py", "extraction.py"):
        imported = imported_modules(study / name)
        assert "distill_trainer.logit_data" in imported or name == "extraction.py", name
        assert not any(m.endswith(".hub") or ".hub." in m for m in imported), name


def undocumented_arguments() -> list[str]:
    """Every function and method of the package that takes arguments but whose docstring has no `Args:` section.

    An `__init__` is documented by its class docstring (`Args:` or `Attributes:`), a dataclass's generated one by its
    fields (help texts, comments), an override by its base's method of the same name (`inspect.getdoc` inherits it);
    a function that is not the package's own (a `typing.Protocol`'s) is not ours to document.
    """
    import importlib
    import inspect
    import pkgutil

    import distill_trainer

    found = set()
    for info in pkgutil.walk_packages(distill_trainer.__path__, "distill_trainer."):
        module = importlib.import_module(info.name)
        for owner in [None, *(o for o in vars(module).values() if inspect.isclass(o))]:
            if getattr(owner or module, "__module__", module.__name__) != module.__name__:
                continue  # imported, checked where it is defined
            members = vars(owner or module).values()
            for function in (getattr(m, "__func__", m) for m in members):
                if not inspect.isfunction(function) or not function.__module__.startswith("distill_trainer"):
                    continue
                name = function.__name__
                if owner is None and function.__module__ != module.__name__:
                    continue
                if name.startswith("__") and name not in ("__init__", "__call__"):
                    continue
                if function.__code__.co_filename == "<string>":  # generated (a dataclass's __init__)
                    continue
                if not [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]:
                    continue
                doc = inspect.getdoc(owner if name == "__init__" else function) or ""
                if owner is not None and name != "__init__":
                    bases = [b for b in owner.__mro__[1:] if name in vars(b)]
                    doc += "".join(inspect.getdoc(getattr(b, name)) or "" for b in bases)
                if not re.search(r"^\s*(Args|Attributes):", doc, re.MULTILINE):
                    found.add(f"{function.__module__}.{function.__qualname__}")
    return sorted(found)


def test_every_function_documents_its_arguments():
    assert undocumented_arguments() == []
