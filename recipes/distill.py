"""Train one student from a logit dataset: --fusion none|single|average|weighted|min_entropy|gating.

    accelerate launch recipes/distill.py --config recipes/configs/sst2.yaml \
        --logit_dataset runs/sst2/logits --student_model runs/sst2/teacher-minilm --student_layers 0,2,4 \
        --fusion average --temperature 6 --alpha 0.7 --seed 42 --output_dir runs/sst2/student-average
"""

from distill_trainer import DistillationConfig
from distill_trainer.pipeline import StudentArguments, TaskArguments, distill_student, parse_recipe_args


def main(argv=None):
    task_args, student_args, config = parse_recipe_args((TaskArguments, StudentArguments, DistillationConfig), argv)
    results = distill_student(task_args, student_args, config)
    print(f"student ({results['fusion']}): validation {results['metric']} = {results['score']:.4f}")
    return results


if __name__ == "__main__":
    main()
