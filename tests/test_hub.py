"""Publishing to the Hub through the real clients, against the session's local test server (conftest).

The recipes publish a teacher, a logit dataset (extracted from that teacher *by its repo id*) and a
student trained from the logit dataset *by its repo id*; each is loaded back with the plain clients.
"""

import sys
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_student, tiny_tokenizer
from hub_server import TEST_TOKEN
from huggingface_hub import DatasetCard, HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distill_trainer import DistillationTrainer, TeacherInfo, attach_teacher_logits, read_metadata
from distill_trainer.card import hub_link
from distill_trainer.study.hub import publish_logit_dataset, publish_student, publish_teacher
from distill_trainer.study.logit_data import LOGIT_METADATA_FILE, load_logit_dataset

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
sys.path.insert(0, str(ROOT / "recipes"))
import distill  # noqa: E402
import extract_logits  # noqa: E402
import train_teacher  # noqa: E402

pytestmark = [pytest.mark.skipif(not GLUE.is_dir(), reason="needs ../shared/data/glue"), pytest.mark.slow]
COMMON = [
    "--task",
    "sst2",
    "--data",
    str(GLUE),
    "--max_train_rows",
    "200",
    "--max_eval_rows",
    "64",
    "--max_length",
    "32",
]
TRAIN = [
    "--report_to",
    "none",
    "--use_cpu",
    "true",
    "--disable_tqdm",
    "true",
    "--save_strategy",
    "no",
    "--per_device_train_batch_size",
    "16",
]


def state_dicts_equal(a, b) -> bool:
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """teacher -> Hub; logits from the Hub teacher + a local TF-IDF teacher -> Hub; student from Hub logits -> Hub."""
    root = tmp_path_factory.mktemp("hub")
    tiny_student().save_pretrained(root / "base")
    tiny_tokenizer().save_pretrained(root / "base")
    teacher = train_teacher.main(
        COMMON
        + TRAIN
        + [
            "--model_name_or_path",
            str(root / "base"),
            "--output_dir",
            str(root / "teacher"),
            "--max_steps",
            "3",
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "alice/tiny-teacher-sst2",
        ]
    )
    train_teacher.main(COMMON + TRAIN + ["--model_name_or_path", "sklearn_tfidf", "--output_dir", str(root / "tfidf")])
    extract_logits.main(
        COMMON
        + [
            "--teachers",
            f"alice/tiny-teacher-sst2,{root / 'tfidf'}",
            "--output_dir",
            str(root / "logits"),
            "--push_to_hub",
            "--hub_dataset_id",
            "alice/sst2-logits",
            "--hub_private",
        ]
    )
    baseline = distill.main(
        COMMON
        + TRAIN
        + [
            "--logit_dataset",
            "alice/sst2-logits",
            "--student_model",
            str(root / "base"),
            "--fusion",
            "none",
            "--max_steps",
            "3",
            "--output_dir",
            str(root / "baseline"),
        ]
    )
    student = distill.main(
        COMMON
        + TRAIN
        + [
            "--logit_dataset",
            "alice/sst2-logits",
            "--student_model",
            str(root / "base"),
            "--fusion",
            "gating",
            "--max_steps",
            "3",
            "--output_dir",
            str(root / "student"),
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "alice/tiny-student-sst2",
            "--hub_private",
            "--baseline_results",
            str(root / "baseline"),
        ]
    )
    return root, teacher, baseline, student


def test_teacher_loads_back_with_plain_from_pretrained(published):
    root, teacher, _, _ = published
    remote = AutoModelForSequenceClassification.from_pretrained("alice/tiny-teacher-sst2")
    assert state_dicts_equal(remote, AutoModelForSequenceClassification.from_pretrained(root / "teacher"))
    assert remote.config.id2label == {0: "negative", 1: "positive"}
    assert AutoTokenizer.from_pretrained("alice/tiny-teacher-sst2").tokenize("good film") == ["good", "film"]
    card = ModelCard.load("alice/tiny-teacher-sst2")
    assert card.data.eval_results is None  # 64 of SST-2's 872 validation rows: not GLUE's score (test_cards)
    assert f"| validation accuracy | {teacher.validation_score:.4f} |\n| validation rows | 64 |" in card.text
    assert {"distillation", "knowledge-distillation", "teacher"} <= set(card.data.tags)
    assert card.data.license == "apache-2.0" and card.data.datasets == ["nyu-mll/glue"]
    files = HfApi().list_repo_files("alice/tiny-teacher-sst2")
    assert "training_args.bin" not in files and "teacher_info.json" in files
    assert "_distill_trainer_run.json" not in files  # the run's own marker (output_dirs) stays local


def test_logit_dataset_loads_back_with_its_rows_and_metadata(published):
    root, _, _, _ = published
    local = datasets.load_from_disk(str(root / "logits"))
    remote = datasets.load_dataset("alice/sst2-logits")  # the plain client
    for split in ("train", "validation"):
        assert remote[split]["sentence"][:] == local[split]["sentence"][:]
        np.testing.assert_array_equal(
            np.asarray(remote[split]["teacher_logits"][:]), np.asarray(local[split]["teacher_logits"][:])
        )
    restored = load_logit_dataset("alice/sst2-logits")
    assert read_metadata(restored["train"]) == read_metadata(local["train"])
    assert [t.name for t in read_metadata(restored["train"]).teachers] == [
        "alice/tiny-teacher-sst2",
        "sklearn_tfidf-sst2",
    ]
    card = DatasetCard.load("alice/sst2-logits", repo_type="dataset")
    assert "teacher_logits" in card.text and "[alice/tiny-teacher-sst2](" in card.text
    assert {"logit-dataset", "distillation"} <= set(
        card.data.tags
    ) and card.data.dataset_info  # push_to_hub's YAML kept
    assert LOGIT_METADATA_FILE in HfApi().list_repo_files("alice/sst2-logits", repo_type="dataset")


def test_student_trained_from_hub_logits_is_published_with_its_card(published):
    root, teacher, baseline, student = published
    remote = AutoModelForSequenceClassification.from_pretrained("alice/tiny-student-sst2")
    assert state_dicts_equal(remote, AutoModelForSequenceClassification.from_pretrained(root / "student"))
    files = HfApi().list_repo_files("alice/tiny-student-sst2")
    assert "distill_gate.safetensors" not in files and "eval_results.json" in files
    card = ModelCard.load("alice/tiny-student-sst2")
    assert card.data.eval_results is None and "| validation rows | 64 |" in card.text  # a subset's score
    assert "fusion-gating" in card.data.tags and "alice/sst2-logits" in card.data.datasets
    for expected in (
        "[alice/tiny-teacher-sst2](",
        "`gating`",
        f"{baseline.score:.4f}",
        "| seed | 42 |",
        f"| training rows | {student.train_rows} |",
    ):
        assert expected in card.text
    assert str(root) not in card.text  # no local paths in cards


def test_private_repos_are_invisible_without_the_token(published):
    assert HfApi().model_info("alice/tiny-student-sst2").private and HfApi().dataset_info("alice/sst2-logits").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("alice/tiny-student-sst2")
    assert not HfApi(token=False).model_info("alice/tiny-teacher-sst2").private


def test_publishing_again_updates_and_exist_ok_false_refuses(published):
    root, _, _, _ = published
    api = HfApi()
    before = api.model_info("alice/tiny-teacher-sst2").sha
    (root / "teacher" / "notes.txt").write_text("second upload")
    (root / "teacher" / "README.md").write_text("my own notes")  # was replaced by the card, locally too
    publish_teacher(str(root / "teacher"), "alice/tiny-teacher-sst2", commit_message="Add notes")
    assert api.model_info("alice/tiny-teacher-sst2").sha != before
    assert "notes.txt" in api.list_repo_files("alice/tiny-teacher-sst2")
    assert (root / "teacher" / "README.md").read_text() == "my own notes"
    assert "teacher" in ModelCard.load(hf_hub_download("alice/tiny-teacher-sst2", "README.md")).data.tags
    with pytest.raises(ValueError, match="already exists and --hub_exist_ok is false"):
        publish_teacher(str(root / "teacher"), "alice/tiny-teacher-sst2", exist_ok=False)


def test_republishing_leaves_no_stale_model_files(published, tmp_path):
    """Found by a review: upload_folder only adds, so a student republished with sharded weights (or another
    tokenizer) kept the old model.safetensors (tokenizer.json) beside them, and from_pretrained loaded the old
    model. The repo's top-level model files are now the folder's; a user's own other files stay."""
    import shutil

    root, _, _, _ = published
    api, repo = HfApi(), "alice/republished-student"
    publish_student(str(root / "student"), repo)
    api.upload_file(path_or_fileobj=b"mine", path_in_repo="notes/extra.bin", repo_id=repo)  # the user's own
    shutil.copytree(root / "student", tmp_path / "again")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "again")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    (tmp_path / "again" / "model.safetensors").unlink()
    model.save_pretrained(tmp_path / "again", max_shard_size="20KB")
    (tmp_path / "again" / "tokenizer.json").unlink(missing_ok=True)
    publish_student(str(tmp_path / "again"), repo)
    files = api.list_repo_files(repo)
    assert "model.safetensors" not in files and "model.safetensors.index.json" in files
    assert "notes/extra.bin" in files
    assert ("tokenizer.json" in files) == (tmp_path / "again" / "tokenizer.json").exists()
    assert state_dicts_equal(AutoModelForSequenceClassification.from_pretrained(repo), model)


def test_what_distill_trainer_did_not_publish_is_never_replaced(published, tmp_path):
    """Found by a review, each reproduced first: publishing into someone else's repo replaced its README (a
    dataset's data files were deleted by push_to_hub); a student published over a teacher mixed their records;
    --hub_private left an existing public repo public; a subset of a logit dataset went out under its metadata."""
    root, _, _, _ = published
    api = HfApi()
    api.create_repo("alice/someone-elses", exist_ok=True)
    api.upload_file(path_or_fileobj=b"theirs", path_in_repo="README.md", repo_id="alice/someone-elses")
    api.create_repo("alice/their-data", repo_type="dataset", exist_ok=True)
    api.upload_file(
        path_or_fileobj=b"x", path_in_repo="data/test.parquet", repo_id="alice/their-data", repo_type="dataset"
    )
    before = api.model_info("alice/someone-elses").sha, api.dataset_info("alice/their-data").sha
    with pytest.raises(ValueError, match="did not publish as a teacher \\(no teacher_info.json; it has README.md\\)"):
        publish_teacher(str(root / "teacher"), "alice/someone-elses")
    with pytest.raises(ValueError, match="did not publish as a student \\(no eval_results.json"):
        publish_student(str(root / "student"), "alice/tiny-teacher-sst2")
    with pytest.raises(ValueError, match="did not publish as a logit dataset \\(no distill_trainer_logits.json"):
        publish_logit_dataset(str(root / "logits"), "alice/their-data")
    with pytest.raises(ValueError, match="exists and is public, and --hub_private does not change"):
        publish_teacher(str(root / "teacher"), "alice/tiny-teacher-sst2", private=True)
    subset = datasets.load_from_disk(str(root / "logits"))
    subset["train"] = subset["train"].select(range(100))
    with pytest.raises(ValueError, match="The train split holds 100 rows, and its metadata describes the 200"):
        publish_logit_dataset(subset, "alice/sst2-logits")
    assert (api.model_info("alice/someone-elses").sha, api.dataset_info("alice/their-data").sha) == before
    assert "teacher_info.json" not in api.list_repo_files("alice/tiny-student-sst2")


def test_a_baseline_the_card_would_misstate_and_bad_publishing_options_are_refused_before_training(
    published, tmp_path, monkeypatch
):
    """Found by a review, each reproduced first: any record was shown as the no-distillation baseline (another
    fusion, another task), and a missing --baseline_results or no token at all failed only after training."""
    root, _, _, _ = published
    with pytest.raises(ValueError, match="its fusion is 'gating', not 'none'"):
        publish_student(str(root / "student"), "alice/tiny-student-sst2", baseline=str(root / "student"))
    argv = COMMON + TRAIN + ["--logit_dataset", str(root / "logits"), "--student_model", str(root / "base")]
    argv += ["--max_steps", "1", "--output_dir", str(tmp_path / "run"), "--push_to_hub", "--hub_model_id"]
    for options, problem in (
        (["alice/new-student", "--baseline_results", str(tmp_path / "none")], "--baseline_results .*not found"),
        (["alice/new-student", "--baseline_results", str(root / "student")], "its fusion is 'gating'"),
        (["alice/my student"], "--hub_model_id 'alice/my student' is not a Hub repo id"),
    ):
        with pytest.raises(ValueError, match=problem):
            distill.main(argv + options)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ValueError, match="Publishing alice/new-student needs a Hub token with write access"):
        distill.main(argv + ["alice/new-student"])
    assert not (tmp_path / "run").exists()


def test_a_dataset_without_logit_metadata_is_named_as_such(published):
    api = HfApi()
    api.create_repo("alice/plain-data", repo_type="dataset", exist_ok=True)
    datasets.Dataset.from_dict({"text": ["a", "b"]}).push_to_hub("alice/plain-data")
    with pytest.raises(ValueError, match="not a distill-trainer logit dataset: it has no distill_trainer_logits.json"):
        load_logit_dataset("alice/plain-data")


def test_publishing_to_a_branch_leaves_main_alone(published):
    root, _, _, _ = published
    (root / "tfidf" / "branch-only.txt").write_text("dev")
    publish_teacher(str(root / "tfidf"), "alice/tfidf-sst2", revision="dev")
    api = HfApi()
    assert "branch-only.txt" in api.list_repo_files("alice/tfidf-sst2", revision="dev")
    assert "branch-only.txt" not in api.list_repo_files("alice/tfidf-sst2")
    assert "scikit-learn" in ModelCard.load(hf_hub_download("alice/tfidf-sst2", "README.md", revision="dev")).data.tags


def test_a_logit_dataset_published_to_a_branch_is_read_as_owner_name_at_revision(published):
    """Found by a review: --hub_revision published it, and --logit_dataset could only read main."""
    root = published[0]
    publish_logit_dataset(str(root / "logits"), "alice/sst2-logits", revision="v2")
    restored = load_logit_dataset("alice/sst2-logits@v2")
    assert read_metadata(restored["train"]) == read_metadata(datasets.load_from_disk(str(root / "logits"))["train"])
    assert hub_link("alice/sst2-logits@v2", "datasets/").endswith("/datasets/alice/sst2-logits/tree/v2)")


def test_missing_repos_give_the_clients_clear_errors(published, tmp_path):
    with pytest.raises(OSError, match="not a valid model identifier"):
        AutoModelForSequenceClassification.from_pretrained("alice/no-such-student")
    for missing in ("alice/no-such-logits", "alice/sst2-logits@no-such-branch"):
        with pytest.raises(datasets.exceptions.DatasetNotFoundError, match="neither a folder here nor a Hub dataset"):
            load_logit_dataset(missing)


def test_the_token_is_sent_but_never_written(published, hub):
    root, _, _, _ = published
    assert f"Bearer {TEST_TOKEN}" in hub.tokens_seen  # the clients did authenticate
    for path in root.rglob("*"):
        if path.is_file():
            assert TEST_TOKEN.encode() not in path.read_bytes(), path
    for repo in hub.repos.values():
        for files in repo.commits.values():
            assert not any(TEST_TOKEN.encode() in data for data, _ in files.values()), repo.repo_id


def test_the_token_stays_out_of_logs(published, caplog, capfd):
    import logging

    root, _, _, _ = published
    with caplog.at_level(logging.DEBUG):
        publish_teacher(str(root / "teacher"), "alice/tiny-teacher-sst2", commit_message="again")
    captured = capfd.readouterr()
    assert TEST_TOKEN not in caplog.text + captured.out + captured.err


def test_own_script_push_to_hub_publishes_the_distillation_card_and_no_token(tmp_path, tokenizer, sentiment_data, hub):
    """A user's own script: `DistillationTrainer(...).push_to_hub()` writes the same card the recipes publish
    (teachers, fusion, T, alpha, score) and the token given in the config is not in `training_args.bin`."""
    logits = np.asarray(sentiment_data["teacher_logits"][:], dtype=np.float32)
    infos = [
        TeacherInfo(name=f"alice/teacher-{i}", metric="accuracy", validation_score=0.9 - i / 10) for i in range(3)
    ]
    train = attach_teacher_logits(
        sentiment_data.remove_columns("teacher_logits"),
        logits,
        infos,
        ["negative", "positive"],
        ["sentence"],
        task="toy-sentiment",
    )
    args = tiny_config(
        tmp_path,
        fusion="weighted",
        temperature=3.0,
        alpha=0.6,
        hub_token=TEST_TOKEN,
        hub_model_id="alice/own-script-student",
        save_strategy="no",
    )
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=args,
        train_dataset=train,
        eval_dataset=train,
        processing_class=tokenizer,
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
    )
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    trainer.push_to_hub(blocking=True)
    card = ModelCard.load(hf_hub_download("alice/own-script-student", "README.md"))
    for expected in (
        "[alice/teacher-0](",
        "alice/teacher-2",
        "`weighted`",
        "| temperature T | 3.0 |",
        "| alpha | 0.6 |",
        f"**{accuracy:.4f}**",
        "toy-sentiment",
    ):
        assert expected in card.text, expected
    assert "fusion-weighted" in card.data.tags and str(tmp_path) not in str(card)
    pickled = Path(hf_hub_download("alice/own-script-student", "training_args.bin")).read_bytes()
    assert TEST_TOKEN.encode() not in pickled and trainer.args.hub_token == TEST_TOKEN


@pytest.mark.parametrize("recipe", ["train_teacher", "distill"])
def test_publishing_that_would_fail_is_refused_before_training(published, tmp_path, monkeypatch, recipe):
    root = published[0]
    argv = COMMON + TRAIN + ["--max_steps", "3", "--push_to_hub", "--output_dir", str(tmp_path / "run")]
    argv += (
        ["--model_name_or_path", "sklearn_tfidf"]
        if recipe == "train_teacher"
        else ["--logit_dataset", str(root / "logits"), "--student_model", str(root / "base"), "--fusion", "average"]
    )
    main = {"train_teacher": train_teacher.main, "distill": distill.main}[recipe]
    with pytest.raises(ValueError, match="already exists and --hub_exist_ok is false"):
        main(argv + ["--hub_model_id", "alice/tiny-teacher-sst2", "--hub_exist_ok", "false"])
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ValueError, match="Cannot reach the Hub at http://127.0.0.1:9"):
        main(argv + ["--hub_model_id", "alice/never-trained"])
    assert not (tmp_path / "run").exists()  # refused before any work


def test_hub_teachers_of_either_kind_extract_by_repo_id_pinned_to_their_commit(published, tmp_path):
    train_teacher.main(
        COMMON
        + TRAIN
        + [
            "--model_name_or_path",
            "sklearn_tfidf",
            "--output_dir",
            str(tmp_path / "tfidf"),
            "--push_to_hub",
            "--hub_model_id",
            "alice/tfidf-teacher-by-id",
        ]
    )
    extract_logits.main(
        COMMON
        + ["--teachers", "alice/tiny-teacher-sst2,alice/tfidf-teacher-by-id", "--output_dir", str(tmp_path / "logits")]
    )
    teachers = read_metadata(datasets.load_from_disk(str(tmp_path / "logits"))["train"]).teachers
    api = HfApi()
    assert [t.name for t in teachers] == ["alice/tiny-teacher-sst2", "alice/tfidf-teacher-by-id"]
    assert [t.revision for t in teachers] == [api.model_info(t.name).sha for t in teachers]
    assert all(t.revision for t in teachers)
