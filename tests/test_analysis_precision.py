"""The bf16 settlement's analysis (`--plan precision`): pairs by method and seed, signs, the plan's verdict, and
refusals of records it cannot pair."""

import re

import numpy as np
import pytest
from scipy import stats

from distill_trainer.study.analysis.precision import analyze_precision, render, verdict
from distill_trainer.study.cli.analyze import main
from distill_trainer.study.runs import StudentResult

LABELS = np.r_[np.ones(50, int), np.zeros(50, int)]


def write_run(root, fusion, seed, bf16, wrong, task="sst2", device=True, processor="Xeon (avx512_bf16)"):
    """A student folder as distill.py leaves it, wrong on the first `wrong` rows (its score follows)."""
    folder = root / f"student-{fusion}-bf16_{str(bf16).lower()}-seed{seed}"
    folder.mkdir(parents=True)
    predicted = LABELS.copy()
    predicted[:wrong] = 1 - predicted[:wrong]
    np.save(folder / "validation_logits.npy", np.eye(2)[predicted].astype(np.float32))
    StudentResult(
        task=task,
        metric="accuracy",
        score=float(np.mean(predicted == LABELS)),
        fusion=fusion,
        temperature=6.0,
        alpha=0.7,
        seed=seed,
        device=("cpu with bf16 autocast" if bf16 else "cpu") if device else None,
        train_runtime=100.0,
        processor=processor,
    ).save(str(folder))


def test_one_sign_is_systematic_with_the_sign_test_and_interval_by_hand(tmp_path):
    wrong = {42: (12, 10), 43: (13, 10), 44: (11, 10)}  # bf16, float32: bf16 lower on every seed
    for seed, (bf16, fp32) in wrong.items():
        write_run(tmp_path, "none", seed, True, bf16)
        write_run(tmp_path, "none", seed, False, fp32)
    result = analyze_precision(str(tmp_path))
    differences = [(fp32 - bf16) / 100 for bf16, fp32 in wrong.values()]
    assert [p["difference"] for p in result["pairs"]] == pytest.approx(differences)
    assert [p["agreement"] for p in result["pairs"]] == pytest.approx([0.98, 0.97, 0.99])
    summary = result["summary"]
    assert (summary["bf16_lower"], summary["bf16_higher"], summary["one_sign"]) == (3, 0, True)
    assert summary["sign_test_p"] == pytest.approx(0.25)  # 3 of 3 one way: 2 x 1/8
    half = stats.t.ppf(0.975, 2) * np.std(differences, ddof=1) / np.sqrt(3)
    assert summary["ci"] == pytest.approx([np.mean(differences) - half, np.mean(differences) + half])
    assert "scored lower in every pair: a systematic difference" in render(result)
    assert "Processors (runs): Xeon (avx512_bf16) (6); both runs of a pair share one." in render(result)


def test_mixed_signs_are_not_systematic_and_a_run_without_partner_is_listed(tmp_path):
    for seed, (bf16, fp32) in {42: (10, 12), 43: (12, 10)}.items():
        write_run(tmp_path, "average", seed, True, bf16)
        write_run(tmp_path, "average", seed, False, fp32)
    write_run(tmp_path, "none", 44, True, 10)
    result = analyze_precision(str(tmp_path))
    assert not result["summary"]["one_sign"] and len(result["pairs"]) == 2
    assert result["unpaired"] == [{"method": "none", "seed": 44, "precision": "bf16"}]
    report = render(result)
    assert "mixed signs (bf16 higher in 1, lower in 1, equal in 0): no systematic difference" in report
    assert "`none` seed 44 (bf16 only)" in report


def test_the_command_writes_the_report(tmp_path):
    for bf16, wrong in ((True, 10), (False, 10)):
        write_run(tmp_path / "runs" / "sst2", "none", 42, bf16, wrong)
    out = tmp_path / "out"
    result = main(["--plan", "precision", "--study_dir", str(tmp_path / "runs"), "--output_dir", str(out)])
    assert result["summary"]["equal"] == 1
    assert "not enough pairs to settle" in (out / "REPORT.md").read_text()
    assert (out / "precision_results.json").is_file()


@pytest.mark.parametrize(
    "runs, message",
    [
        ([], "holds no student record"),
        ([("none", 42, True, 1, "sst2", True), ("none", 42, False, 1, "mrpc", True)], "several tasks (mrpc, sst2)"),
        ([("none", 42, True, 1, "sst2", False)], "does not record its device"),
    ],
)
def test_records_it_cannot_pair_are_refused(tmp_path, runs, message):
    (tmp_path / "runs").mkdir()
    for i, (fusion, seed, bf16, wrong, task, device) in enumerate(runs):
        write_run(tmp_path / "runs" / str(i), fusion, seed, bf16, wrong, task, device)
    with pytest.raises(ValueError, match=re.escape(message)):
        analyze_precision(str(tmp_path / "runs"))


def test_two_runs_of_one_precision_are_refused(tmp_path):
    write_run(tmp_path / "a", "none", 42, True, 1)
    write_run(tmp_path / "b", "none", 42, True, 2)
    with pytest.raises(ValueError, match="two bf16 runs of none, seed 42"):
        analyze_precision(str(tmp_path))


def test_a_pair_whose_runs_name_different_processors_is_refused(tmp_path):
    write_run(tmp_path, "none", 42, True, 1)
    write_run(tmp_path, "none", 42, False, 1, processor="AMD EPYC")
    with pytest.raises(ValueError, match="ran on Xeon .avx512_bf16. and .* on AMD EPYC: a pair must share its CPU"):
        analyze_precision(str(tmp_path))


def test_a_pair_that_differs_in_more_than_its_precision_is_refused(tmp_path):
    """Found by a review, each reproduced first: fp16 counted as float32, a GPU run paired with a CPU run, and a
    pair with other layers or T read as bf16's effect."""
    write_run(tmp_path / "a", "none", 42, True, 1)
    write_run(tmp_path / "a", "none", 42, False, 1)
    folder = tmp_path / "a" / "student-none-bf16_false-seed42"
    record = StudentResult.load(str(folder))
    for change, message in (
        ({"device": "cpu with fp16 autocast"}, "trained under fp16 autocast: this plan settles bf16 against float32"),
        ({"device": "NVIDIA H200"}, "differ in more than their precision .device: 'cpu with bf16 autocast' vs"),
        ({"temperature": 3.0}, "differ in more than their precision .*temperature: 6.0 vs 3.0"),
    ):
        StudentResult(**{**record.__dict__, **change}).save(str(folder))
        with pytest.raises(ValueError, match=message):
            analyze_precision(str(tmp_path / "a"))


def test_pairs_of_one_sign_and_ties_are_not_called_mixed():
    summary = {"pairs": 6, "bf16_higher": 0, "bf16_lower": 5, "equal": 1, "one_sign": False}
    assert verdict(summary).startswith("not one sign in every pair (bf16 higher in 0, lower in 5, equal in 1)")
