"""A student's card states the loss it was trained with: classification, regression (num_labels=1) and causal LMs,
whether written by `trainer.create_model_card()` or by the recipes' publishing."""

from types import SimpleNamespace

import numpy as np
import pytest
from causal_helpers import causal_config, causal_dataset, tiny_llama, with_topk
from helpers import tiny_config, tiny_student
from transformers import TrainerState

from distill_trainer import DistillationTrainer, LogitDatasetMetadata, TeacherInfo
from distill_trainer.card import hub_link, loss_text, trainer_facts
from distill_trainer.study.cards import render_logit_dataset_card, render_student_card, render_teacher_card
from distill_trainer.study.runs import StudentResult, TeacherRecord, default_teacher_name

KL_CE = "`alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * CE(s, y)`"
MSE_MSE = "`alpha * MSE(s, t) + (1 - alpha) * MSE(s, y)`"


def test_the_loss_line_is_the_loss_of_each_kind_and_kd_loss():
    assert loss_text("forward_kl", "classification", "average").startswith(KL_CE)
    jsd = loss_text("jsd", "classification", "gating", jsd_beta=0.3)
    assert "JSD_beta(softmax(t/T), softmax(s/T)) * T^2" in jsd and "beta = 0.3" in jsd and "`gating`" in jsd
    assert loss_text("mse", "classification", "average").startswith("`alpha * MSE(s, t) + (1 - alpha) * CE(s, y)`")
    assert "KL(softmax(s/T) || softmax(t/T))" in loss_text("reverse_kl", "classification", "average")
    for kd_loss in ("forward_kl", "mse"):  # a one-output student: MSE to the teachers and to the label, no T
        regression = loss_text(kd_loss, "regression", "average")
        assert regression.startswith(MSE_MSE) and "KL" not in regression and "CE" not in regression
    causal = loss_text("forward_kl", "causal", "average")
    assert "CE(s, next token)" in causal and "per next-token position" in causal and "top-k" in causal
    assert loss_text("forward_kl", "classification", "none") == "`CE(s, y)`: the labels only, no teachers."
    assert loss_text("forward_kl", "regression", "none").startswith("`MSE(s, y)`")
    with pytest.raises(ValueError, match="does not apply to regression"):  # as the trainer refuses it
        loss_text("jsd", "regression", "average")
    with pytest.raises(ValueError, match="does not apply to per-token teachers"):
        loss_text("mse", "causal", "average")


def regression_rows(n: int = 16):
    import datasets

    rng = np.random.default_rng(0)
    return datasets.Dataset.from_dict(
        {
            "input_ids": [[2, 5 + i % 10, 3] for i in range(n)],
            "attention_mask": [[1, 1, 1]] * n,
            "labels": rng.uniform(0, 5, n).astype(np.float32).tolist(),
            "teacher_logits": rng.uniform(0, 5, (n, 2, 1)).astype(np.float32).tolist(),
        }
    )


def card_text(trainer) -> str:
    trainer.create_model_card()
    with open(f"{trainer.args.output_dir}/README.md") as handle:
        return handle.read()


def test_the_trainers_card_states_the_loss_it_trains_with(tmp_path, sentiment_data, tokenizer):
    classification = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path / "c", kd_loss="jsd", jsd_beta=0.2),
        train_dataset=sentiment_data,
    )
    text = card_text(classification)
    assert "JSD_beta(softmax(t/T), softmax(s/T)) * T^2 + (1 - alpha) * CE(s, y)" in text and "beta = 0.2" in text
    regression = DistillationTrainer(  # STS-B-like: one output
        model=tiny_student(num_labels=1),
        args=tiny_config(tmp_path / "r", temperature=6.0),
        train_dataset=regression_rows(),
    )
    text = card_text(regression)
    assert MSE_MSE in text and "KL(" not in text
    causal = DistillationTrainer(
        model=tiny_llama(), args=causal_config(tmp_path / "lm"), train_dataset=with_topk(causal_dataset(8))
    )
    text = card_text(causal)
    assert "CE(s, next token)" in text and "AutoModelForCausalLM.from_pretrained" in text and "KL(softmax(t/T)" in text
    assert "pipeline_tag: text-generation" in text


def test_the_recipes_card_states_the_recorded_loss():
    common = dict(metric="score", score=0.5, temperature=2.0, alpha=0.5, seed=0, teachers=[{"name": "t0"}])
    stsb = render_student_card(StudentResult(task="stsb", fusion="average", **common), "alice/stsb")
    assert MSE_MSE in stsb.text and "KL(" not in stsb.text
    question = {"config": {"kd_loss": "reverse_kl", "jsd_beta": 0.5}}
    sst2 = render_student_card(StudentResult(task="sst2", fusion="average", question=question, **common), "a/sst2")
    assert "KL(softmax(s/T) || softmax(t/T)) * T^2 + (1 - alpha) * CE(s, y)" in sst2.text
    old = render_student_card(StudentResult(task="sst2", fusion="average", **common), "a/old")  # before kd_loss
    assert KL_CE in old.text
    causal = render_student_card(StudentResult(task="causal_lm", fusion="average", **common), "alice/lm")
    assert "CE(s, next token)" in causal.text and "AutoModelForCausalLM" in causal.text
    assert causal.data.pipeline_tag == "text-generation" and "glue" not in causal.data.tags


def test_a_causal_students_card_shows_its_teachers_in_perplexity_too():
    """Found by a review: the teachers record their token likelihood, exp(-NLL), and the card's column is the
    student's perplexity, exp(NLL): a teacher at likelihood 0.25 read as perplexity 0.2500 beside the student's 30."""
    teachers = [{"name": "t0", "metric": "token_likelihood", "validation_score": 0.25}]
    record = StudentResult(
        task="causal_lm", fusion="average", metric="perplexity", score=30.0, temperature=1.0, alpha=0.5, seed=0,
        teachers=teachers,
    )  # fmt: skip
    text = render_student_card(record, "alice/lm").text
    assert "| teacher 0: t0 | 4.0000 |" in text and "validation perplexity 4.0000" in text
    assert "0.2500" not in text


def test_a_teacher_trained_from_a_hub_id_is_not_named_like_a_repo_that_does_not_exist():
    """Found by a review: `acme/tiny-bert` fine-tuned on SST-2 was named `acme/tiny-bert-sst2`, which cards linked."""
    assert default_teacher_name("acme/tiny-bert", "sst2") == "tiny-bert-sst2"
    assert hub_link(default_teacher_name("acme/tiny-bert", "sst2")) == "`tiny-bert-sst2`"
    assert default_teacher_name("all-MiniLM-L6-v2", "causal_lm") == "all-MiniLM-L6-v2-causal_lm"


def test_only_a_score_on_glues_whole_validation_split_enters_the_model_index():
    """Found by a review: a score on 64 of SST-2's 872 validation rows was listed as GLUE SST-2's validation score;
    so would the QQP and MNLI stand-ins cut from train (../shared/data/glue)."""
    common = dict(task="sst2", metric="accuracy", score=0.9, fusion="none", temperature=1.0, alpha=0.0, seed=0)
    whole = render_student_card(StudentResult(eval_rows=872, **common), "a/s").data.eval_results
    assert [(r.dataset_config, r.dataset_split, r.metric_value) for r in whole] == [("sst2", "validation", 0.9)]
    cut = render_student_card(StudentResult(eval_rows=64, **common), "a/s")
    assert cut.data.eval_results is None and "| validation rows | 64 |" in cut.text
    teacher = dict(name="t", base_model="t", task="qqp", metric="f1", validation_score=0.8)
    assert render_teacher_card(TeacherRecord(validation_rows=9999, **teacher), "a/t").data.eval_results is None
    assert render_teacher_card(TeacherRecord(validation_rows=40430, **teacher), "a/t").data.eval_results


def test_with_load_best_model_at_end_the_trainers_card_states_the_best_checkpoints_score(tmp_path):
    """Found by a review: the card stated the last evaluation, while the weights pushed were the best checkpoint's."""
    args = tiny_config(tmp_path, load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps")
    history = [{"eval_score": 0.54, "step": 10}, {"eval_score": 0.46, "step": 20}]
    trainer = SimpleNamespace(
        args=args, state=TrainerState(log_history=history, best_global_step=10), train_dataset=None,
        eval_dataset=None, num_labels=2, token_level=False, model=tiny_student(), n_teachers=3,
        signals=SimpleNamespace(teachers=[]),
    )  # fmt: skip
    assert trainer_facts(trainer).score == 0.54
    trainer.args = tiny_config(tmp_path)
    assert trainer_facts(trainer).score == 0.46  # without it, the last evaluation is the model's


def training_sections(text: str) -> list[str]:
    """The loss line, the fusion, T, alpha and seed rows, and the teachers: what both card paths must agree on."""
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith(("Loss:", "| fusion", "| temperature T", "| alpha", "| seed"))]
    return rows + lines[lines.index("## Teachers") :]


def test_push_to_hub_and_the_recipes_give_the_same_training_section(tmp_path, sentiment_data):
    from distill_trainer import TeacherInfo, attach_teacher_logits
    from distill_trainer.study.questions import run_question

    infos = [
        TeacherInfo(name=f"alice/teacher-{i}", metric="accuracy", validation_score=0.9 - i / 10) for i in range(3)
    ]
    logits = np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float32)
    rows = sentiment_data.remove_columns("teacher_logits")
    train = attach_teacher_logits(rows, logits, infos, ["negative", "positive"], ["sentence"], task="sst2")
    options = dict(fusion="weighted", kd_loss="reverse_kl", alpha=0.3, alpha_end=0.9, alpha_schedule="linear")
    trainer = DistillationTrainer(model=tiny_student(), args=tiny_config(tmp_path, **options), train_dataset=train)
    config = trainer.args
    recorded = StudentResult(  # as `distill_student` records the run
        task="sst2",
        metric="accuracy",
        score=0.5,
        fusion=config.fusion,
        temperature=config.temperature,
        alpha=config.alpha,
        seed=config.seed,
        alpha_schedule=config.alpha_schedule,
        alpha_end=config.alpha_end,
        temperature_schedule=config.temperature_schedule,
        temperature_end=config.temperature_end,
        teacher_index=config.teacher_index,
        teachers=[vars(t) for t in infos],
        question=run_question(config),
    )
    own = training_sections(card_text(trainer))
    assert own == training_sections(render_student_card(recorded, "alice/student").text)
    assert (
        any(line.startswith("Loss:") and "KL(softmax(s/T) || softmax(t/T))" in line for line in own)
        and "| alpha | 0.3 -> 0.9 (linear schedule) |" in own
    )
    assert any("[alice/teacher-2](" in line for line in own)


@pytest.mark.parametrize(("fit_split", "dev"), [("dev", 0.91), ("validation", None), ("dev", None)])
def test_a_logit_datasets_card_says_which_split_weighs_and_fits_the_teachers(fit_split, dev):
    teachers = [TeacherInfo("alice/teacher-sst2", validation_score=0.9, metric="accuracy", dev_score=dev)]
    metadata = {
        split: LogitDatasetMetadata(
            teachers, ["negative", "positive"], ["sentence"], rows, "0" * 64, task="sst2", fit_split=fit_split
        )
        for split, rows in (("train", 100), (fit_split, 10))
    }
    text = " ".join(render_logit_dataset_card(metadata, "alice/sst2-logits", {}).text.split())
    assert "[alice/teacher-sst2](" in text and "validation accuracy 0.9000" in text
    assert ("dev 0.9100" in text) == (dev is not None) and f"`fit_split`: {fit_split}" in text
    # The weights are what the trainer uses (`weighting_scores`), whatever split the fits came from.
    weights_split = "dev" if dev is not None else "validation"
    assert metadata["train"].weighting_split == weights_split
    assert f"{weights_split} scores are the weights" in text and f"fitted on the {fit_split} split" in text
    assert ("nothing is chosen or fitted on the validation rows" in text) == (dev is not None)
