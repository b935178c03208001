"""Fine-tune a teacher on a GLUE task, or a causal LM on prompt -> completion rows, and save it with its scores.

    accelerate launch recipes/train_teacher.py --config recipes/configs/sst2.yaml \
        --model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --output_dir runs/sst2/teacher-minilm
    distill-trainer train-teacher --task sst2 --data ../shared/data/glue \
        --model_name_or_path sklearn_tfidf --output_dir runs/sst2/teacher-tfidf
    add --push_to_hub --hub_model_id you/minilm-sst2 [--hub_private] [--hub_revision BRANCH] to publish it with a card.

Causal LMs (completion-only loss; early stopping on <data>/dev's per-token NLL where the folder has a dev file;
teacher_info.json holds the dev and validation NLL, perplexity and token likelihood):

    distill-trainer train-teacher --task causal_lm --data data/mnli-lm --prompt_column prompt \
        --completion_column completion --model_name_or_path SmolLM2-135M-Instruct --max_length 128 \
        --num_train_epochs 3 --output_dir runs/lm/teacher-smollm2-mnli
"""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from distill_trainer.study.args import TaskArguments, parse_recipe_args
from distill_trainer.study.causal_data import CAUSAL_LM_TASK, CausalLMArguments
from distill_trainer.study.causal_teacher import train_causal_teacher
from distill_trainer.study.hub import HubArguments, publish_teacher
from distill_trainer.study.hub_checks import check_publishing
from distill_trainer.study.teacher_training import train_teacher


@dataclass
class TeacherArguments:
    model_name_or_path: str = field(
        default=None,
        metadata={
            "help": "Any AutoModelForSequenceClassification checkpoint (Hub id or folder), or 'sklearn_tfidf' for "
            "the built-in TF-IDF + logistic-regression teacher (TF-IDF + ridge regression for stsb); with --task "
            "causal_lm an AutoModelForCausalLM folder or Hub id, SmolLM2-135M-Instruct, or one with --gguf_file."
        },
    )
    teacher_name: str | None = field(
        default=None,
        metadata={"help": "Name recorded in metadata (default: <model>-<task>, without a Hub id's owner)."},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate after every epoch and stop once the dev score (validation without --dev_rows) has not "
            "improved for this many "
            "epochs (--num_train_epochs is then the most); the best epoch is kept and recorded. --task causal_lm: "
            "on the dev split's NLL, always with a dev file (default 1), refused without one."
        },
    )


def main(argv=None, prog=None):
    """Run `distill-trainer train-teacher`: fine-tune one teacher (GLUE or causal LM) and publish it where
    `--push_to_hub` asks; returns its `TeacherRecord`.

    Args:
        argv: The command-line options, without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` shows (None: the script's name; the `distill-trainer` command passes its own).
    """
    task_args, text_args, teacher_args, hub_args, training_args = parse_recipe_args(
        (TaskArguments, CausalLMArguments, TeacherArguments, HubArguments, TrainingArguments), argv, prog, __doc__
    )
    if text_args.check(task_args.task):
        if training_args.push_to_hub:
            raise ValueError(f"--push_to_hub is not supported for --task {CAUSAL_LM_TASK} teachers yet.")
        info = train_causal_teacher(
            task_args,
            text_args,
            teacher_args.model_name_or_path,
            training_args,
            teacher_args.teacher_name,
            teacher_args.early_stopping_patience,
        )
        nll = {key: value for key, value in info.metrics.items() if key.endswith("_nll")}
        print(f"teacher {info.name}: validation {info.metric} = {info.validation_score:.4f}; per-token NLL {nll}")
        return info
    check_publishing(training_args.push_to_hub, training_args.hub_model_id, "--hub_model_id")
    if training_args.push_to_hub:
        hub_args.check_before_work(
            training_args.hub_model_id,
            "teacher",
            training_args.hub_private_repo,
            training_args.hub_revision,
            training_args.hub_token,
        )
    info = train_teacher(
        task_args.task_data(),
        teacher_args.model_name_or_path,
        training_args,
        teacher_args.teacher_name,
        teacher_args.early_stopping_patience,
    )
    if info.collapsed:
        split = "validation" if info.dev_score is None else "dev"
        print(f"warning: {info.name} predicts one class on {info.majority_prediction_share:.0%} of {split} rows")
    print(f"teacher {info.name}: validation {info.metric} = {info.validation_score:.4f}")
    if training_args.push_to_hub and training_args.process_index == 0:
        url = publish_teacher(
            training_args.output_dir,
            training_args.hub_model_id,
            token=training_args.hub_token,
            **hub_args.publish_kwargs(training_args.hub_private_repo, training_args.hub_revision),
        )
        print(f"published: {url}")
    return info


if __name__ == "__main__":
    main()
