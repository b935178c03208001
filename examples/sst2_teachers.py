"""The quickstart's teachers, prepared off-screen: two scikit-learn TF-IDF classifiers fitted on SST-2 rows that the
student never sees, and their log-probabilities on the student's rows. Any teacher's raw logits would do: the
recipes (`recipes/train_teacher.py`, `recipes/extract_logits.py`) make them from transformers teachers."""

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB


def sst2_rows_and_teacher_logits(glue: str, student_rows: int = 2000, teacher_rows: int = 20000):
    """SST-2's first `student_rows` training rows, its validation rows, and two teachers' logits on the former.

    Args:
        glue: folder with `sst2/train.tsv` and `sst2/validation.tsv` (e.g. `../shared/data/glue`).
        student_rows: rows the student trains on (the first ones).
        teacher_rows: the rows after them, which the teachers learn from (so they are not the student's rows).

    Returns:
        `(train, validation, logits, teacher_names)`: two DataFrames, a `[student_rows, 2, 2]` float array of log
        probabilities (raw logits at T = 1 work the same) and the teachers' names in the logits' order.
    """
    read = lambda split: pd.read_csv(f"{glue}/sst2/{split}.tsv", sep="\t", keep_default_na=False)  # noqa: E731
    train, validation = read("train"), read("validation")
    student, teacher = train[:student_rows], train[student_rows : student_rows + teacher_rows]
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit(teacher.sentence)
    features = tfidf.transform(teacher.sentence)
    models = [m.fit(features, teacher.label) for m in (LogisticRegression(C=4, max_iter=1000), MultinomialNB())]
    probabilities = [model.predict_proba(tfidf.transform(student.sentence)) for model in models]
    logits = np.stack([np.log(np.clip(p, 1e-6, 1)) for p in probabilities], axis=1)
    return student, validation, logits, ["tfidf-logreg", "tfidf-naive-bayes"]
