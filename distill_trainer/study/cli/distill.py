"""Train one student from a logit dataset: --fusion none|single|average|weighted|min_entropy|confidence|fitted|gating.

    accelerate launch recipes/distill.py --config recipes/configs/sst2.yaml \
        --logit_dataset runs/sst2/logits --student_model runs/sst2/teacher-minilm --student_layers 0,2,4 \
        --fusion average --temperature 6 --alpha 0.7 --seed 42 --output_dir runs/sst2/student-average
    distill-trainer distill takes the same options (or: accelerate launch -m distill_trainer.study.cli distill).
    --logit_dataset also takes a Hub dataset id; add --push_to_hub --hub_model_id you/student-sst2
    [--hub_private] [--baseline_results runs/sst2/student-none] to publish the student with a card.

Causal LMs (a top-k logit dataset from `extract --task causal_lm`, the same data options):

    distill-trainer distill --task causal_lm --data DIR --prompt_column prompt --completion_column completion \
        --logit_dataset runs/lm/logits --student_model SmolLM2-135M-Instruct --student_layers 0,4,8,12,16,20,24,29 \
        --fusion average --temperature 1 --alpha 0.5 --output_dir runs/lm/student-average
"""

from distill_trainer import DistillationConfig
from distill_trainer.study.args import StudentArguments, TaskArguments, parse_recipe_args
from distill_trainer.study.causal_data import CausalLMArguments
from distill_trainer.study.causal_lm import distill_causal_student
from distill_trainer.study.hub import HubArguments, publish_student
from distill_trainer.study.hub_checks import check_baseline, check_publishing, load_baseline
from distill_trainer.study.training import distill_student


def main(argv=None, prog=None):
    """Run `distill-trainer distill`: train one student (GLUE or causal LM) and publish it where `--push_to_hub` asks;
    returns its `StudentResult`.

    Args:
        argv: The command-line options, without the program name (None: `sys.argv[1:]`).
        prog: The program name `--help` shows (None: the script's name; the `distill-trainer` command passes its own).
    """
    task_args, text_args, student_args, hub_args, config = parse_recipe_args(
        (TaskArguments, CausalLMArguments, StudentArguments, HubArguments, DistillationConfig), argv, prog, __doc__
    )
    check_publishing(config.push_to_hub, config.hub_model_id, "--hub_model_id")
    if config.push_to_hub:
        hub_args.check_before_work(
            config.hub_model_id, "student", config.hub_private_repo, config.hub_revision, config.hub_token
        )
        if hub_args.baseline_results:
            check_baseline(load_baseline(hub_args.baseline_results), task=task_args.task)
    if text_args.check(task_args.task):
        results = distill_causal_student(task_args, text_args, student_args, config)
    else:
        results = distill_student(task_args.task_data(), config=config, **student_args.options)
    print(f"student ({results.fusion}): validation {results.metric} = {results.score:.4f}")
    if config.push_to_hub and config.process_index == 0:
        url = publish_student(
            config.output_dir,
            config.hub_model_id,
            baseline=hub_args.baseline_results,
            token=config.hub_token,
            **hub_args.publish_kwargs(config.hub_private_repo, config.hub_revision),
        )
        print(f"published: {url}")
    return results


if __name__ == "__main__":
    main()
