"""What a library user's own script does, with the core alone: import distill_trainer, attach teacher logits, build a
config, train a tiny random student for a few steps, evaluate. Run in a subprocess by tests/test_architecture.py, once
with the study's dependencies blocked (`--block-study-imports`) and once in a fresh virtualenv that has only the core
installed (`pip install <repo>`, no extras). Prints `trained <steps> steps, eval_loss <x>` at the end."""

from __future__ import annotations

import builtins
import os
import sys

STUDY_DEPENDENCIES = {"pandas", "sklearn", "yaml", "tqdm", "matplotlib"}


def block_study_imports() -> None:
    """Make an import statement of a study dependency fail when it runs in the core (a `distill_trainer` module
    outside `distill_trainer.study`), at import time or later while training. The libraries the core uses may import
    them (datasets imports pandas, transformers tqdm and yaml): those come with the core's own requirements."""
    original = builtins.__import__

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__") or ""
        in_core = importer.startswith("distill_trainer") and not importer.startswith("distill_trainer.study")
        if in_core and level == 0 and name.partition(".")[0] in STUDY_DEPENDENCIES:
            raise ModuleNotFoundError(f"the core ({importer}) imports {name}, a dependency of the study layer")
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded


def main() -> None:
    if "--block-study-imports" in sys.argv:
        block_study_imports()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import datasets
    import transformers
    from helpers import make_sentences, teacher_logits_for, tiny_student, tiny_tokenizer

    from distill_trainer import DistillationConfig, DistillationTrainer, attach_teacher_logits

    datasets.disable_progress_bars()
    transformers.set_seed(0)
    sentences, labels = make_sentences(64)
    data = datasets.Dataset.from_dict({"sentence": sentences, "label": labels})
    train = attach_teacher_logits(
        data, teacher_logits_for(labels), ["a", "b", "c"], ["negative", "positive"], ["sentence"]
    )
    tokenizer = tiny_tokenizer()
    train = train.map(lambda batch: tokenizer(batch["sentence"]), batched=True)
    config = DistillationConfig(
        output_dir=sys.argv[1],
        fusion="average",
        temperature=2.0,
        alpha=0.7,
        max_steps=4,
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=tiny_student(), args=config, train_dataset=train, eval_dataset=train, processing_class=tokenizer
    )
    steps = trainer.train().global_step
    loaded = sorted(name for name in STUDY_DEPENDENCIES if name in sys.modules)
    print(f"study dependencies loaded (by the core's own libraries): {loaded}")
    print(f"trained {steps} steps, eval_loss {trainer.evaluate()['eval_loss']:.4f}")


if __name__ == "__main__":
    main()
