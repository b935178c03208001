"""Teachers behind one interface: anything that maps a list of texts to `[n, n_labels]` logits.

A teacher's logits always come out in the *task's* label order: a transformers teacher whose
`config.id2label` orders labels differently (common for MNLI checkpoints) is re-mapped by label name.
The scikit-learn TF-IDF + logistic-regression teacher is the "architecturally diverse teacher" the
reference study proposes as its first idea for making multi-teacher distillation work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..card import is_hub_id
from .runs import TeacherRecord

SKLEARN_TEACHER_FILE = "sklearn_teacher.json"  # vocabulary and settings; the arrays go in SKLEARN_WEIGHTS_FILE
SKLEARN_WEIGHTS_FILE = "sklearn_teacher.safetensors"
SKLEARN_TEACHER = "sklearn_tfidf"  # the name that selects the built-in TF-IDF teacher in the recipes


class Teacher(Protocol):
    name: str

    def __call__(self, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
        """`texts[i]` is one example's text fields; returns float32 logits `[len(texts), n_labels]`.

        Args:
            texts: One tuple of text fields per example (one field, or a pair), in the task's column order.
        """


def label_permutation(teacher_labels: Sequence[str], task_labels: Sequence[str], teacher: str) -> list[int]:
    """Indices into the teacher's outputs that give the task's label order; refuse unknown names.

    Default names (`LABEL_0`, ...) carry no information, so such a teacher is taken to be in task order.

    Args:
        teacher_labels: The teacher's label names, in its output order (`config.id2label`).
        task_labels: The task's label names, in task order.
        teacher: The teacher's name, as the errors give it.
    """
    if len(teacher_labels) != len(task_labels):
        raise ValueError(
            f"Teacher {teacher} has {len(teacher_labels)} labels {list(teacher_labels)} but the task has "
            f"{len(task_labels)}: {list(task_labels)}."
        )
    if all(name == f"LABEL_{i}" for i, name in enumerate(teacher_labels)):
        return list(range(len(task_labels)))
    position = {name.lower(): i for i, name in enumerate(teacher_labels)}
    unknown = [name for name in task_labels if name.lower() not in position]
    if unknown:
        raise ValueError(
            f"Teacher {teacher} labels {list(teacher_labels)} do not name the task's labels {unknown}; "
            "fix its config.id2label or re-train it on this task."
        )
    return [position[name.lower()] for name in task_labels]


def load_classifier(model_name_or_path: str, allow_pickle: bool = False, trust_remote_code: bool = False, **kwargs):
    """`AutoModelForSequenceClassification.from_pretrained`, safely by default: safetensors weights only and
    no remote code. Pickle weights (`pytorch_model.bin`) can run code when loaded, so they need `allow_pickle`.

    Args:
        model_name_or_path: A Hub id or a checkpoint folder.
        allow_pickle: Accept checkpoints with pickle weights only (only ones you trust).
        trust_remote_code: Run model code from the checkpoint's repo (only ones you trust).
        **kwargs: Passed to `from_pretrained` (e.g. `revision`).
    """
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    except OSError as error:
        if allow_pickle or "safetensors" not in str(error):
            raise
        raise ValueError(
            f"{model_name_or_path} has no safetensors weights. Pickle checkpoints (pytorch_model.bin) can "
            f"run code when loaded: pass allow_pickle=True (--allow_pickle) only if you trust it."
        ) from error


class TransformersTeacher:
    """An `AutoModelForSequenceClassification` checkpoint run in inference mode with its own tokenizer.

    Batches are grouped by length (longest first) so padding is wasted only within similar lengths;
    outputs are put back in input order.

    Args:
        model_name_or_path: A Hub id or a checkpoint folder.
        task_labels: The task's label names, in task order: the outputs are re-mapped to it by name.
        name: The teacher's name in metadata (None: `model_name_or_path`).
        batch_size: Rows per forward pass.
        max_length: Tokens kept per input.
        device: Where the model runs (None: this process's device under `accelerate`).
        revision: The Hub revision to load (None: the default branch).
        trust_remote_code: Run model and tokenizer code from the checkpoint's repo.
        allow_pickle: Accept checkpoints with pickle weights only.
    """

    def __init__(
        self,
        model_name_or_path: str,
        task_labels: Sequence[str],
        name: str | None = None,
        batch_size: int = 64,
        max_length: int = 128,
        device: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
    ):
        from transformers import AutoTokenizer

        self.name = name or model_name_or_path
        if device is None:  # under `accelerate launch`, each process on its own device
            device = process_state().device
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_name_or_path, revision=revision, trust_remote_code=trust_remote_code
        )
        self.model = (
            load_classifier(model_name_or_path, allow_pickle, trust_remote_code, revision=revision)
            .to(self.device)
            .eval()
        )
        # A Hub teacher is pinned to the commit it was loaded from, so the logit dataset says exactly which.
        self.revision = getattr(self.model.config, "_commit_hash", None) or revision
        id2label = self.model.config.id2label
        teacher_labels = [id2label[i] for i in range(self.model.config.num_labels)]
        self.permutation = label_permutation(teacher_labels, task_labels, self.name)
        self.batch_size, self.max_length = batch_size, max_length

    @torch.inference_mode()
    def __call__(self, texts: Sequence[tuple[str, ...]], progress: bool = True) -> np.ndarray:
        """The task-ordered float32 logits `[len(texts), n_labels]` of `texts`, in input order.

        Args:
            texts: One tuple of text fields per example (one field, or a pair), in the task's column order.
            progress: Show a progress bar.
        """
        encoded = self.tokenizer(
            *[list(column) for column in zip(*texts, strict=False)], truncation=True, max_length=self.max_length
        )
        lengths = np.array([len(ids) for ids in encoded["input_ids"]])
        order = np.argsort(-lengths, kind="stable")
        logits = np.empty((len(texts), len(self.permutation)), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc=f"teacher {self.name}", disable=not progress):
            rows = order[start : start + self.batch_size]
            features = [{key: encoded[key][i] for key in encoded} for i in rows]
            batch = self.tokenizer.pad(features, return_tensors="pt").to(self.device)
            output = self.model(**batch).logits.float().cpu().numpy()
            logits[rows] = output[:, self.permutation]
        return logits


class SklearnTeacher:
    """A fitted scikit-learn model over text: TF-IDF + logistic regression (logits = log-probabilities) or, for
    regression tasks, TF-IDF + ridge regression (the "logits" are its `[n, 1]` predictions).

    Log-probabilities are valid logits: softmax(log p) = p, so fusion and the KD loss treat this teacher
    exactly like a transformer.

    Args:
        pipeline: A fitted scikit-learn `Pipeline`: a `TfidfVectorizer`, then a `LogisticRegression` or `Ridge`.
        name: The teacher's name in metadata.
    """

    def __init__(self, pipeline, name: str = "tfidf-logreg", label_names: Sequence[str] | None = None):
        self.pipeline, self.name, self.revision = pipeline, name, None
        self.label_names = None if label_names is None else list(label_names)

    @staticmethod
    def join(texts: Sequence[tuple[str, ...]]) -> list[str]:
        """Each example's text fields joined with " [SEP] ": one string per example, what the TF-IDF pipeline reads.

        Args:
            texts: One tuple of text fields per example (one field, or a pair), in the task's column order.
        """
        return [" [SEP] ".join(fields) for fields in texts]

    @property
    def is_regression(self) -> bool:
        return not hasattr(self.pipeline.steps[-1][1], "predict_proba")

    @classmethod
    def fit(
        cls,
        texts: Sequence[tuple[str, ...]],
        labels: Sequence[float],
        name: str = "tfidf-logreg",
        C: float = 4.0,
        regression: bool = False,
        label_names: Sequence[str] | None = None,
    ):
        """A TF-IDF (word 1-2 grams) + logistic-regression teacher (ridge regression for a regression task), fitted on
        `texts` and `labels`.

        Args:
            texts: One tuple of text fields per example (one field, or a pair), in the task's column order.
            labels: Class ids (or scores for a regression task), one per example.
            name: The teacher's name in metadata.
            C: The logistic regression's inverse regularization strength (unused for ridge).
            regression: Fit a ridge regression on scores instead of a classifier.
            label_names: The task's labels, in class-id order: saved with the teacher (so that another task's
                labels are refused where it is loaded), and every one must occur in `labels` (a logistic
                regression has a column only for the classes it saw: its logits would have too few columns).
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline

        if label_names is not None and not regression:
            missing = [name for index, name in enumerate(label_names) if index not in set(np.asarray(labels).tolist())]
            if missing:
                raise ValueError(
                    f"The TF-IDF teacher's training rows have no {missing} row: it would have no column for "
                    f"{'them' if len(missing) > 1 else 'it'}. Give more training (or --labelled_rows) rows."
                )
        model = Ridge(alpha=1.0) if regression else LogisticRegression(C=C, max_iter=2000)
        pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), model)
        return cls(pipeline.fit(cls.join(texts), np.asarray(labels)), name, label_names)

    def __call__(self, texts: Sequence[tuple[str, ...]], progress: bool = True) -> np.ndarray:
        """Float32 logits `[len(texts), n_labels]`: the classifier's clipped log-probabilities, or the regression's
        `[len(texts), 1]` predictions.

        Args:
            texts: One tuple of text fields per example (one field, or a pair), in the task's column order.
            progress: Unused (the pipeline runs in one call); accepted for `sharded_logits`.
        """
        if self.is_regression:
            return self.pipeline.predict(self.join(texts)).reshape(-1, 1).astype(np.float32)
        probabilities = self.pipeline.predict_proba(self.join(texts))
        return np.log(np.clip(probabilities, 1e-7, 1.0)).astype(np.float32)

    def save(self, folder: str) -> None:
        """Vocabulary as JSON, IDF and classifier weights as safetensors: no pickle, so a published TF-IDF
        teacher is as safe to load as a transformers one.

        Args:
            folder: Where `sklearn_teacher.json` and `sklearn_teacher.safetensors` go (created if missing).
        """
        from safetensors.numpy import save_file

        vectorizer, classifier = self.pipeline.steps[0][1], self.pipeline.steps[-1][1]
        os.makedirs(folder, exist_ok=True)
        settings = {
            "model": "ridge" if self.is_regression else "logistic_regression",
            "ngram_range": list(vectorizer.ngram_range),
            "sublinear_tf": vectorizer.sublinear_tf,
            "lowercase": vectorizer.lowercase,
            "classes": None if self.is_regression else classifier.classes_.tolist(),
            "label_names": self.label_names,
            "vocabulary": {term: int(index) for term, index in vectorizer.vocabulary_.items()},
        }
        with open(os.path.join(folder, SKLEARN_TEACHER_FILE), "w") as handle:
            json.dump(settings, handle)
        # C order: safetensors writes an array's memory as it lies, and a multi-class `coef_` is Fortran-ordered
        # (scikit-learn's solvers return it so), so without this it reads back transposed and scrambled.
        arrays = {"idf": vectorizer.idf_, "coef": np.atleast_2d(classifier.coef_), "intercept": classifier.intercept_}
        save_file(
            {key: np.ascontiguousarray(np.atleast_1d(array), dtype=np.float64) for key, array in arrays.items()},
            os.path.join(folder, SKLEARN_WEIGHTS_FILE),
        )

    @classmethod
    def load(cls, folder: str, name: str | None = None) -> SklearnTeacher:
        """Rebuild the pipeline written by `save` (same predictions, bit for bit).

        Args:
            folder: A folder `save` wrote.
            name: The teacher's name (None: the folder's name).
        """
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline

        with open(os.path.join(folder, SKLEARN_TEACHER_FILE)) as handle:
            settings = json.load(handle)
        weights = load_file(os.path.join(folder, SKLEARN_WEIGHTS_FILE))
        vectorizer = TfidfVectorizer(
            ngram_range=tuple(settings["ngram_range"]),
            sublinear_tf=settings["sublinear_tf"],
            lowercase=settings["lowercase"],
            vocabulary=settings["vocabulary"],
        )
        vectorizer.idf_ = weights["idf"]
        if settings.get("model") == "ridge":  # files without "model" predate regression: logistic regression
            classifier = Ridge()
            classifier.coef_, classifier.intercept_ = weights["coef"][0], float(weights["intercept"][0])
        else:
            classifier = LogisticRegression()
            classifier.classes_ = np.asarray(settings["classes"])
            classifier.coef_, classifier.intercept_ = weights["coef"], weights["intercept"]
        name = name or os.path.basename(folder.rstrip("/"))
        return cls(make_pipeline(vectorizer, classifier), name, settings.get("label_names"))

    def check_labels(self, task_labels: Sequence[str]) -> None:
        """Refuse a task whose labels are not the ones this teacher was fitted on, in the same order (files from
        before they were saved are not checked): its columns would be read as the task's classes.

        Args:
            task_labels: The task's label names, in class-id order.
        """
        if self.label_names is not None and self.label_names != list(task_labels):
            raise ValueError(
                f"TF-IDF teacher {self.name} was fitted on the labels {self.label_names}, and the task's are "
                f"{list(task_labels)}: its columns would be read as other classes."
            )


def load_teacher(path_or_id: str, task_labels: Sequence[str], **kwargs) -> Teacher:
    """A folder written by `recipes/train_teacher.py` (either kind), or any transformers checkpoint / Hub id.

    A Hub teacher (a published TF-IDF teacher too) is pinned to the commit it resolves to now, and that sha
    is its recorded `revision` (transformers 5 no longer records it in `config._commit_hash`).

    Args:
        path_or_id: A teacher folder or a Hub id.
        task_labels: The task's label names, in task order.
        **kwargs: `TransformersTeacher`'s options (`batch_size`, `max_length`, `revision`, `allow_pickle`,
            `trust_remote_code`, ...); a TF-IDF teacher takes none of them.
    """
    if not os.path.isdir(path_or_id) and is_hub_id(path_or_id):
        from huggingface_hub import HfApi, snapshot_download

        info = HfApi().model_info(path_or_id, revision=kwargs.pop("revision", None))
        if SKLEARN_TEACHER_FILE in {sibling.rfilename for sibling in info.siblings or []}:
            folder = snapshot_download(
                path_or_id, revision=info.sha, allow_patterns=[SKLEARN_TEACHER_FILE, SKLEARN_WEIGHTS_FILE]
            )
            teacher = SklearnTeacher.load(folder, path_or_id)
            teacher.check_labels(task_labels)
        else:
            teacher = TransformersTeacher(path_or_id, task_labels, name=path_or_id, revision=info.sha, **kwargs)
        teacher.revision = info.sha
        return teacher
    name = (
        TeacherRecord.load(path_or_id).name
        if os.path.isfile(os.path.join(path_or_id, TeacherRecord.FILE))
        else path_or_id
    )
    if os.path.isfile(os.path.join(path_or_id, SKLEARN_TEACHER_FILE)):
        teacher = SklearnTeacher.load(path_or_id, name)
        teacher.check_labels(task_labels)
        return teacher
    return TransformersTeacher(path_or_id, task_labels, name=name, **kwargs)


def folder_revision(folder: str) -> str | None:
    """A local teacher's revision: `sha256:` and the first 16 hex digits of the hash of its config, weights and
    TF-IDF or GGUF files, which change whenever it is trained again (a Hub teacher's revision is its commit). It lets a
    logit dataset, or a cached teacher's logits, be matched to the teacher that wrote them rather than to a
    retrained one in the same folder. None for a folder without them (a record alone, as a device bundle carries)
    and for anything that is not a folder (a Hub id).

    Args:
        folder: The teacher's folder (or Hub id).
    """
    if not os.path.isdir(folder):
        return None
    digest, files = hashlib.sha256(), 0
    for file in sorted(os.listdir(folder)):
        if (
            file in ("config.json", SKLEARN_TEACHER_FILE)
            or file.endswith((".safetensors", ".gguf"))
            or re.fullmatch(r"pytorch_model.*\.bin", file)
        ):
            digest.update(file.encode())
            with open(os.path.join(folder, file), "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
            files += 1
    return f"sha256:{digest.hexdigest()[:16]}" if files else None


def process_state():
    """The processes of `accelerate launch`, as accelerate's `PartialState`, also on a machine without an accelerator.

    A bare `PartialState()` joins the launch's process group only when it finds an accelerator (accelerate 1.16);
    on a CPU machine every process would think it is alone, do all of the work and write the same files at once.
    Asking for CPU processes where there is no accelerator makes them share the rows as on GPUs.
    """
    from accelerate import PartialState

    accelerator = getattr(torch, "accelerator", torch.cuda)  # torch.accelerator: torch >= 2.6
    return PartialState(cpu=not accelerator.is_available())


def sharded_logits(teacher: Teacher, texts: Sequence[tuple[str, ...]]) -> np.ndarray:
    """`teacher(texts)` with the rows split between the processes of `accelerate launch` (contiguous
    shares); every process gets the whole array back, rows in input order.

    Args:
        teacher: Any `Teacher`.
        texts: One tuple of text fields per example (one field, or a pair), in the task's column order.
    """
    from accelerate.utils import gather_object

    state = process_state()
    if state.num_processes == 1:
        return teacher(texts)
    with state.split_between_processes(list(texts)) as share:
        logits = teacher(share, progress=state.is_main_process)
    return np.concatenate(gather_object([logits]), axis=0)
