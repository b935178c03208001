"""Token-level distillation of causal LMs: per-token teacher signals, their fusion, and the sparse KD loss.

Alignment, everywhere here: a causal LM's logits at position t predict token t + 1, and so do the teachers' top-k
at position t (see `topk.py`). The student learns at position t from its own logits at t when
`labels[t + 1] != -100` (`next_token_labels`): prompt tokens and padding are masked by their labels, and the last
position, which predicts no token of the row, never counts. This is the shift Hugging Face's causal-LM loss makes.

A top-k distribution is read as k + 1 buckets: its k ids and one tail bucket holding the rest of the mass. Empty
slots (log-probability -inf, e.g. padding of a fused union) have probability 0. Nothing here reads a device tensor
on the host, so a training step waits for nothing but the Trainer's own synchronisations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kd_losses import forward_kl, precise_dtype

EMPTY = -1e30  # log(0) kept finite, so that 0 * (log 0 - log 0) is 0 and gradients stay free of NaN


@dataclass
class TokenSignal:
    """What per-token teachers say about one batch: `logprobs` at T = 1 with their `ids`, `[batch, n_teachers,
    seq_len, k]`, or, with `ids=None`, log-probabilities over the whole vocabulary `[batch, n_teachers, seq_len,
    vocab]` (live teachers). One type for both, so fusion and the loss need no second code path.

    Args:
        logprobs: `[batch, n_teachers, seq_len, k]` (or `vocab`) log-probabilities at T = 1; -inf: an empty slot.
        ids: `[batch, n_teachers, seq_len, k]` top-k token ids, the shape of `logprobs`; None: full vocabularies.

    Attributes:
        logprobs: the teachers' log-probabilities at T = 1.
        ids: the top-k token ids, or None for full-vocabulary teachers.
    """

    logprobs: torch.Tensor
    ids: torch.Tensor | None = None

    def __post_init__(self):
        if self.logprobs.dim() != 4 or (self.ids is not None and self.ids.shape != self.logprobs.shape):
            ids_shape = None if self.ids is None else tuple(self.ids.shape)
            raise ValueError(
                "per-token teachers must be [batch, n_teachers, seq_len, k] ids and log-probabilities of one shape, "
                f"got {ids_shape} and {tuple(self.logprobs.shape)}."
            )

    @property
    def n_teachers(self) -> int:
        """How many teachers the signal holds (its second dimension)."""
        return self.logprobs.shape[1]


def next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """`[batch, seq]` labels -> the token each position predicts: `labels[:, t + 1]`, -100 at the last position.

    A causal LM's logits at t (and a top-k teacher's row t) are about token t + 1, so the loss and `confidence`
    fusion compare them with the shifted labels; -100 marks positions nothing is learnt from.

    Args:
        labels: `[batch, seq]` token labels aligned with `input_ids` (-100: prompt or padding).
    """
    return F.pad(labels[:, 1:], (0, 1), value=-100)


def bucket_log_probs(
    log_probs: torch.Tensor, empty: torch.Tensor, temperature: float = 1.0, vocab_size: int | None = None
) -> torch.Tensor:
    """Log-probabilities `[..., k]` at T = 1 -> `[..., k + 1]` over the k ids and the tail bucket, at T.

    The tail's mass is `1 - sum(p)` (0 where rounding sums the top-k above 1, which is then renormalised). At
    T != 1 every token is tempered as a softmax tempers it, `p^(1/T)`, and the k + 1 buckets renormalised; how
    the tail's mass r is spread over its tokens is unknown, so it is tempered as if spread evenly over the
    `vocab_size - k` tokens outside the top-k: `(V - k) (r / (V - k))^(1/T)`, the most a tail of mass r can
    weigh at T (empty slots do not count in k). Teacher and student are treated alike, so the loss is smallest
    where the student's k + 1 buckets at T = 1 are the teacher's. With k = V the tail is empty and this is exactly
    `softmax(z / T)` at every T; at T = 1 it is exact for every k, and bounded as T grows, as the dense loss is.

    Args:
        log_probs: under the full softmax at T = 1.
        empty: True at empty slots (probability 0, whatever `log_probs` holds there).
        temperature: T > 0.
        vocab_size: V; needed at T != 1 (how many tokens the tail spreads over).
    """
    log_probs = log_probs.masked_fill(empty, EMPTY)
    log_top = torch.logsumexp(log_probs, dim=-1, keepdim=True).clamp(max=0.0)
    log_tail = torch.log((-torch.expm1(log_top)).clamp(min=torch.finfo(log_top.dtype).tiny))
    if vocab_size is not None:
        outside = vocab_size - (~empty).sum(dim=-1, keepdim=True)
        log_outside = outside.clamp(min=1).to(log_tail.dtype).log()
        tempered_tail = log_outside + (log_tail - log_outside) / temperature
        log_tail = torch.where(outside > 0, tempered_tail, torch.full_like(tempered_tail, EMPTY))
    elif temperature != 1.0:
        raise ValueError("bucket_log_probs needs vocab_size at T != 1 (the tail is tempered over its tokens).")
    buckets = torch.cat([(log_probs / temperature).masked_fill(empty, EMPTY), log_tail], dim=-1)
    return torch.log_softmax(buckets, dim=-1)


def token_log_probs(
    student_logits: torch.Tensor, ids: torch.Tensor | None, logprobs: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) log-probabilities at T per position, over the buckets the teacher defines.

    Sparse (`ids` `[batch, seq, k]`): k + 1 buckets (`bucket_log_probs`), in float64 on `[batch, seq, k]` tensors;
    of the student's `[batch, seq, vocab]` logits only a float32 log-normaliser and the k gathered logits are
    computed. Full vocabulary (`ids=None`): `log_softmax` of both at T, in float32.

    Args:
        student_logits: `[batch, seq, vocab]` raw student logits.
        ids: `[batch, seq, k]` the teacher's token ids, or None for a full-vocabulary teacher.
        logprobs: `[batch, seq, k]` (or `vocab`) the teacher's log-probabilities at T = 1; -inf: empty slot.
        temperature: T > 0, applied to both.
    """
    with torch.autocast(student_logits.device.type, enabled=False):
        if ids is None:
            student = F.log_softmax(student_logits.float() / temperature, dim=-1)
            return F.log_softmax(logprobs.float() / temperature, dim=-1), student
        precise = precise_dtype(student_logits.device)
        log_norm = torch.logsumexp(student_logits.float(), dim=-1, keepdim=True).to(precise)
        student = student_logits.gather(-1, ids.long()).to(precise) - log_norm
        empty, vocab_size = logprobs == float("-inf"), student_logits.shape[-1]
        teacher = bucket_log_probs(logprobs.to(precise), empty, temperature, vocab_size)
        return teacher, bucket_log_probs(student, empty, temperature, vocab_size)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None, count=None) -> torch.Tensor:
    """Sum of `values` where `mask` over `count` (default: the mask's size, at least 1), without a host read.

    Args:
        values: Per-position values, e.g. `[batch, seq]`.
        mask: Bool, the shape of `values`, True where a value counts; None: the plain mean.
        count: The divisor (e.g. a tensor: `num_items_in_batch`); None: the number of True positions, at least 1.
    """
    if mask is None:
        return values.mean()
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / (mask.sum().clamp(min=1) if count is None else count)


def check_token_shapes(student_logits: torch.Tensor, ids: torch.Tensor | None, logprobs: torch.Tensor) -> None:
    """Shapes only (a Python check, no device read): values are checked when the data is (`topk.py`).

    Args:
        student_logits: `[batch, seq, vocab]` student logits.
        ids: `[batch, seq, k]` teacher token ids, or None (full vocabulary).
        logprobs: `[batch, seq, k]` (or `vocab`) teacher log-probabilities.
    """
    if student_logits.dim() != 3 or logprobs.shape[:2] != student_logits.shape[:2]:
        raise ValueError(
            f"student logits [batch, seq, vocab] {tuple(student_logits.shape)} and teachers [batch, seq, k] "
            f"{tuple(logprobs.shape)} must share batch and sequence length."
        )
    if ids is not None and ids.shape != logprobs.shape:
        raise ValueError(f"teacher ids {tuple(ids.shape)} and log-probabilities {tuple(logprobs.shape)} differ.")


def sparse_kd_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 times the mean over masked positions of KL(teacher || student) over k + 1 buckets: the teacher's k ids
    and one tail bucket (teacher: 1 - the sum of its top-k probabilities; student: 1 - the sum of its probabilities
    on the same ids). With k = vocab it equals the dense `kd_loss` KL term at every T; at T != 1 every bucket is
    tempered as a token is, the tail as if spread evenly over the tokens outside the top-k (`bucket_log_probs`
    says why). A tail of 0 contributes 0. Computed in float64 on `[batch, seq, k]` tensors; float32 result.

    Args:
        student_logits: `[batch, seq, vocab]` raw logits at the positions the teachers' top-k are for.
        topk_ids: `[batch, seq, k]` token ids (any in-range id in empty slots).
        topk_logprobs: `[batch, seq, k]` log-probabilities under the teacher's full softmax at T = 1; -inf: empty.
        temperature: T > 0.
        mask: `[batch, seq]` bool, True where the student learns (e.g. `next_token_labels(labels) != -100`);
            None: every position. A batch without any counts 0.
    """
    check_token_shapes(student_logits, topk_ids, topk_logprobs)
    teacher, student = token_log_probs(student_logits, topk_ids, topk_logprobs, temperature)
    return (masked_mean(forward_kl(teacher, student), mask) * temperature**2).float()


def token_kd_terms(
    student_logits: torch.Tensor,
    teacher: tuple[torch.Tensor | None, torch.Tensor] | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
    divergence=forward_kl,
    count=None,
) -> dict[str, torch.Tensor]:
    """`kd` (T^2 * divergence per position) and `ce` (next-token cross-entropy) summed over the positions with a
    next-token label and divided by `count`: the Trainer's `num_items_in_batch` (those positions over the whole
    accumulated batch, so accumulation reproduces the big batch), else this batch's number of them.

    Args:
        student_logits: `[batch, seq, vocab]`.
        teacher: the fused teachers `(ids or None, log-probabilities)` `[batch, seq, m]`; None when alpha is 0.
        labels: `[batch, seq]`, aligned with the input ids (-100: not learnt from).
        divergence: a registered `KDLoss`'s `divergence` (default forward KL: `sparse_kd_loss`).
    """
    targets = next_token_labels(labels)
    mask = targets != -100
    count = mask.sum().clamp(min=1) if count is None else count
    terms = {}
    if alpha > 0:
        check_token_shapes(student_logits, *teacher)
        log_probs = token_log_probs(student_logits, *teacher, temperature)
        terms["kd"] = (masked_mean(divergence(*log_probs), mask, count) * temperature**2).float()
    if alpha < 1:
        with torch.autocast(student_logits.device.type, enabled=False):
            logits = student_logits.float().flatten(0, 1)  # no copy in float32: the shift is on the labels
            ce = F.cross_entropy(logits, targets.flatten(), reduction="sum", label_smoothing=label_smoothing)
        terms["ce"] = ce / count
    return terms
