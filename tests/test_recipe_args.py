"""Recipe arguments: list-valued options as lists (space or comma form, YAML string or list), --config in
--help, cross-field checks before any work; the `distill-trainer` command and its subcommands, the recipes' options."""

import configparser
import importlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from distill_trainer import DistillationConfig
from distill_trainer.study import cli
from distill_trainer.study.args import StudentArguments, StudyArguments, TaskArguments, parse_recipe_args
from distill_trainer.study.runner import method_runs
from distill_trainer.study.runs import method_temperatures

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
STUDY = (TaskArguments, StudyArguments, DistillationConfig)
RECIPES = {  # subcommand -> the recipe script that runs it
    "prepare-causal": "prepare_causal",
    "train-teacher": "train_teacher",
    "extract": "extract_logits",
    "distill": "distill",
    "sweep": "sweep",
    "study": "compare",
    "causal-study": "causal_study",
    "analyze": "analyze",
}


def test_list_options_take_spaces_commas_and_both():
    _, study, _ = parse_recipe_args(STUDY, ["--seeds", "42,43", "44", "--teachers=a,b", "--output_dir", "out"])
    assert study.seeds == [42, 43, 44] and study.teachers == ["a", "b"]
    assert study.methods[0] == "none" and study.student_layers == [0, 2, 4]  # defaults are lists too
    _, student, _ = parse_recipe_args(
        (TaskArguments, StudentArguments, DistillationConfig),
        ["--output_dir", "out", "--logit_dataset", "l", "--student_model", "s"],
    )
    assert student.student_layers is None
    _, study, _ = parse_recipe_args(STUDY, ["--student-layers", "0,2", "--seeds=1,2", "--output_dir", "out"])
    assert study.student_layers == [0, 2] and study.seeds == [1, 2]  # argparse's dash spelling too


@pytest.mark.parametrize("seeds", ['"42,43"', "[42, 43]", "42"])
def test_list_options_from_a_config_file(tmp_path, seeds):
    config = tmp_path / "config.yaml"
    config.write_text(f"seeds: {seeds}\nstudent_layers: '1,3'\noutput_dir: out\n")
    _, study, _ = parse_recipe_args(STUDY, ["--config", str(config)])
    assert study.seeds == ([42] if seeds == "42" else [42, 43]) and study.student_layers == [1, 3]
    _, overridden, _ = parse_recipe_args(STUDY, ["--config", str(config), "--seeds", "7"])
    assert overridden.seeds == [7]


def test_every_recipe_shows_config_in_its_help(capsys):
    for name in ("train_teacher", "extract_logits", "distill", "sweep", "compare", "analyze"):
        with pytest.raises(SystemExit):
            importlib.import_module(name).main(["--help"])
        assert "--config FILE.yaml" in capsys.readouterr().out, name


def test_publishing_without_a_repo_id_is_refused_before_any_work():
    with pytest.raises(ValueError, match="--hub_dataset_id"):
        importlib.import_module("extract_logits").main(
            ["--teachers", "missing-teacher", "--output_dir", "out", "--push_to_hub"]
        )
    with pytest.raises(ValueError, match="Repo id"):
        importlib.import_module("extract_logits").main(
            ["--teachers", "missing", "--output_dir", "out", "--push_to_hub", "--hub_dataset_id", "not a/valid//id"]
        )


def test_study_methods_name_curricula_calibration_and_their_own_temperature():
    argv = ["--output_dir", "out", "--methods", "none,single,single-1,average_to_confidence,average+calibrated"]
    _, study, _ = parse_recipe_args(STUDY, argv + ["--method_temperatures", "average+calibrated=3"])
    assert method_runs(study.methods, 2, method_temperatures(study.method_temperatures, study.methods)) == [
        ("none", {"fusion": "none", "curriculum_fusion": None, "calibrate_teachers": False}),
        ("single-0", {"fusion": "single", "curriculum_fusion": None, "calibrate_teachers": False, "teacher_index": 0}),
        ("single-1", {"fusion": "single", "curriculum_fusion": None, "calibrate_teachers": False, "teacher_index": 1}),
        ("single-1", {"fusion": "single", "curriculum_fusion": None, "calibrate_teachers": False, "teacher_index": 1}),
        (
            "average_to_confidence",
            {"fusion": "average", "curriculum_fusion": "confidence", "calibrate_teachers": False},
        ),
        (
            "average+calibrated-T3",
            {"fusion": "average", "curriculum_fusion": None, "calibrate_teachers": True, "temperature": 3.0},
        ),
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--methods", "average,median"], "Unknown method 'median'"),
        (["--methods", "gating_to_average"], "fusion='gating' cannot be mixed"),
        (["--methods", "none+calibrated"], "'none' trains without teachers"),
        (["--methods", "average", "--method_temperatures", "gating=3"], "one of --methods"),
        (["--methods", "average", "--method_temperatures", "average=-1"], "T > 0"),
        (["--methods", "average", "--method_temperatures", "average"], "METHOD=T"),
        (["--methods", "none,single-2"], "there are 2 --teachers"),  # one teacher's single run: 0 or 1 here
    ],
)
def test_bad_study_methods_are_refused_before_any_work(options, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe_args(STUDY, ["--output_dir", "out", *options])
    if "--method_temperatures" in options:
        with pytest.raises(ValueError, match=message):
            importlib.import_module("sweep").main(
                ["--output_dir", "out", "--logit_dataset", "l", "--student_model", "s", *options]
            )


@pytest.mark.parametrize(
    "options, message",
    [
        (["--seeds", "42,-1"], r"--seeds must be one or more integers in \[0, 2\*\*32\), got \[42, -1\]"),
        (["--max_train_rows", "0"], "--max_train_rows must be at least 1, got 0"),
        (["--max_eval_rows", "-5"], "--max_eval_rows must be at least 1, got -5"),
    ],
)
def test_bad_seeds_and_row_limits_are_refused_before_any_teacher_trains(options, message):
    """They failed late: a negative seed after the teachers trained, a row limit of 0 half-way through writing."""
    with pytest.raises(ValueError, match=message):
        parse_recipe_args(STUDY, ["--output_dir", "out", *options])


def test_a_results_csv_that_is_not_a_results_table_is_refused_before_any_work(tmp_path):
    """It failed with an AttributeError after every run had trained; the file is left as it was."""
    foreign = tmp_path / "scores.csv"
    foreign.write_text("name,score\nmine,0.9\n")
    with pytest.raises(ValueError, match=r"--results_csv .*scores.csv exists and is not a results table"):
        parse_recipe_args(STUDY, ["--output_dir", "out", "--results_csv", str(foreign)])
    assert foreign.read_text() == "name,score\nmine,0.9\n"
    table = tmp_path / "master.csv"
    table.write_text("method,type,seed,score,task\nnone,student,42,0.8,sst2\n")
    parse_recipe_args(STUDY, ["--output_dir", "out", "--results_csv", str(table)])


@pytest.mark.parametrize(
    "options, message",
    [
        (["--alphas", "0.5,1.5"], r"--alphas must be one or more values in \[0, 1\], got \[0.5, 1.5\]"),
        (["--temperatures", "3,0"], r"--temperatures must be one or more values finite and > 0"),
    ],
)
def test_a_sweep_refuses_a_bad_grid_value_before_the_first_cell_trains(options, message):
    with pytest.raises(ValueError, match=message):
        importlib.import_module("sweep").main(
            ["--output_dir", "out", "--logit_dataset", "l", "--student_model", "s", *options]
        )


def test_config_keys_this_command_has_no_option_for_are_named_with_the_file(tmp_path, caplog):
    """One task config serves every recipe (train_teacher has no --temperature): such keys are ignored, and the
    warning names them and the file; a file that is not a mapping is refused."""
    config = tmp_path / "task.yaml"
    config.write_text("task: mrpc\ntemperature: 3\nalpha: 0.5\n")
    with caplog.at_level(logging.WARNING):
        (args,) = parse_recipe_args((TaskArguments,), [f"--config={config}"], prog="distill-trainer x")
    assert args.task == "mrpc"
    assert f"distill-trainer x ignores these keys of {config}: ['alpha', 'temperature']" in caplog.text
    config.write_text("- task\n")
    with pytest.raises(ValueError, match="must be a mapping of option names"):
        parse_recipe_args((TaskArguments,), ["--config", str(config)])


def help_of(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 0
    return capsys.readouterr().out


def test_the_command_lists_its_subcommands_with_the_recipes_options(capsys):
    """`distill-trainer --help` names every subcommand; each subcommand has exactly its recipe's options."""
    top = help_of(cli.main, ["--help"], capsys)
    assert all(name in top for name in RECIPES) and set(cli.COMMANDS) == set(RECIPES)
    for command, script in RECIPES.items():
        options = help_of(cli.main, [command, "--help"], capsys)
        assert options.startswith(f"usage: distill-trainer {command} ") and "--config FILE.yaml" in options
        recipe = help_of(importlib.import_module(script).main, ["--help"], capsys)
        assert set(re.findall(r"--\w+", options)) == set(re.findall(r"--\w+", recipe)), command
    with pytest.raises(SystemExit, match="2"):
        cli.main(["distil"])
    assert "invalid choice: 'distil'" in capsys.readouterr().err


def test_python_m_runs_the_command_and_names_the_study_extra_when_a_dependency_is_missing(tmp_path):
    """What the console script runs (setup.cfg's entry point, called as pip's script calls it: a successful command
    exits 0), in a fresh process; without a study dependency (matplotlib blocked here) a command says which extra
    to install instead of a traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "distill_trainer.study.cli"]
    run = subprocess.run(command + ["distill", "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and "usage: distill-trainer distill" in run.stdout and "--logit_dataset" in run.stdout
    entry = configparser.ConfigParser()
    entry.read(ROOT / "setup.cfg")
    script = entry["options.entry_points"]["console_scripts"].split("=")[1].strip()  # module:function
    module, function = script.split(":")
    console = f"import sys; from {module} import {function}; sys.exit({function}())"  # as pip writes the script
    data = ["--data", str(ROOT.parent / "shared/data/glue"), "--output_dir", str(tmp_path / "lm")]
    rows = ["--max_train_rows", "3", "--max_dev_rows", "2", "--max_validation_rows", "2"]
    done = [sys.executable, "-c", console, "prepare-causal", "--task", "qqp", *data, *rows]
    run = subprocess.run(done, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]  # the command's result (a record) was printed as a failure
    blocked = "import sys; sys.modules['matplotlib'] = None; from distill_trainer.study.cli import main; main()"
    run = subprocess.run(
        [sys.executable, "-c", blocked, "analyze", "--help"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 1, run.stderr
    assert "distill-trainer analyze needs matplotlib" in run.stderr
    assert "pip install 'distill-trainer[study]'" in run.stderr
