"""Recipe arguments: list-valued options as lists (space or comma form, YAML string or list), --config in
--help, cross-field checks before any work."""

import importlib
import sys
from pathlib import Path

import pytest

from distill_trainer import DistillationConfig
from distill_trainer.study.args import StudentArguments, StudyArguments, TaskArguments, parse_recipe_args
from distill_trainer.study.runner import method_runs
from distill_trainer.study.runs import method_temperatures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
STUDY = (TaskArguments, StudyArguments, DistillationConfig)


def test_list_options_take_spaces_commas_and_both():
    _, study, _ = parse_recipe_args(STUDY, ["--seeds", "42,43", "44", "--teachers=a,b", "--output_dir", "out"])
    assert study.seeds == [42, 43, 44] and study.teachers == ["a", "b"]
    assert study.methods[0] == "none" and study.student_layers == [0, 2, 4]  # defaults are lists too
    _, student, _ = parse_recipe_args(
        (TaskArguments, StudentArguments, DistillationConfig),
        ["--output_dir", "out", "--logit_dataset", "l", "--student_model", "s"],
    )
    assert student.student_layers is None


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
