"""Live teachers (`teacher_models=[...]`): what must hold before a teacher model may teach this student (the same
vocabulary for causal LMs, the same label space for classifiers), checked when the trainer is built."""

from __future__ import annotations

from .signals import is_causal_lm, model_name
from .vocabulary import TokenizerInfo, check_same_vocabulary, saved_tokenizer, tokenizer_info


def prepare_live_teachers(teachers, student, device, token_level: bool, tokenizer=None) -> list:
    """Move live teachers to the student's device, in eval mode without gradients, after refusing teachers that
    cannot teach this student: another vocabulary (causal LMs) or another label space (classification).

    A causal teacher reads the student's input ids, so one of another vocabulary of the same size would read other
    tokens without any error: where the tokenizer saved with the teacher can be found without a download (its
    folder, or the Hub cache), its vocabulary must be the student's tokenizer's; otherwise only the sizes are
    compared.

    Args:
        teachers: The live teacher models (`teacher_models`), or None.
        student: The student, whose vocabulary or label count the teachers must share.
        device: The device to move them to (the student's).
        token_level: The student is a causal LM; the teachers must then be causal LMs too.
        tokenizer: The student's tokenizer (`student_tokenizer`); None: not known, only the sizes are compared.
    """
    teachers = list(teachers or [])
    if token_level and teachers:  # the student's vocabulary, read once for every teacher
        student_vocabulary = tokenizer_info(tokenizer) if tokenizer is not None else None
    for teacher in teachers:
        if is_causal_lm(teacher) != token_level:
            kind = "causal LMs" if token_level else "sequence classifiers"
            raise ValueError(f"Live teacher {model_name(teacher)!r} does not match the student: both must be {kind}.")
        vocabularies = [getattr(m.config.get_text_config(), "vocab_size", None) for m in (teacher, student)]
        if None not in vocabularies and vocabularies[0] != vocabularies[1]:
            raise ValueError(
                f"Live teacher {model_name(teacher)!r} has a vocabulary of {vocabularies[0]} tokens but the student "
                f"{model_name(student)!r} has {vocabularies[1]}: a live teacher reads the student's input ids, so "
                "they must share one tokenizer (cross-tokenizer distillation is not supported)."
            )
        if token_level:
            check_saved_vocabulary(teacher, student_vocabulary)
        if not token_level and teacher.config.num_labels != student.config.num_labels:
            raise ValueError(
                f"Live teacher {model_name(teacher)!r} has {teacher.config.num_labels} labels but the student has "
                f"{student.config.num_labels}."
            )
        names = [named_labels(m) for m in (teacher, student)]
        if not token_level and None not in names and [n.lower() for n in names[0]] != [n.lower() for n in names[1]]:
            raise ValueError(
                f"Live teacher {model_name(teacher)!r} has labels {names[0]} but the student's id2label has "
                f"{names[1]}: its logits would be read in the student's label order. Fix either model's id2label."
            )
        teacher.to(device).eval().requires_grad_(False)
    return teachers


def check_saved_vocabulary(teacher, student_vocabulary: TokenizerInfo | None) -> None:
    """Refuse a live causal teacher whose saved tokenizer's vocabulary is not the student's tokenizer's (a check
    of what can be found without a download; see `prepare_live_teachers`).

    Args:
        teacher: The live teacher.
        student_vocabulary: The student's tokenizer's `tokenizer_info`; None: not known, nothing is compared.
    """
    teacher_tokenizer = saved_tokenizer(teacher) if student_vocabulary is not None else None
    if teacher_tokenizer is not None:
        owner = f"Live teacher {model_name(teacher)!r}"
        check_same_vocabulary(tokenizer_info(teacher_tokenizer), student_vocabulary, "the student", owner)


def named_labels(model) -> list[str] | None:
    """A classifier's label names in id order, or None where they are all transformers' placeholders `LABEL_i`
    (which say nothing about the classes, so no order can be checked).

    Args:
        model: A sequence classifier.
    """
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return None if all(name == f"LABEL_{i}" for i, name in enumerate(names)) else names
