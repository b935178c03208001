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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kd_losses import forward_kl, precise_dtype

EMPTY = -1e30  # log(0) kept finite, so that 0 * (log 0 - log 0) is 0 and gradients stay free of NaN
# The smallest teacher tail bucket read: a float32 log-softmax of logits up to +-32 resolves each log-probability to
# about 2^-19, so a top-k's total (and with it a tail below this) is known no better. Float16 storage adds up to
# 2^-11 of each log-probability: a tail below that reads low, but no lower than this.
ROUNDING_TAIL = 2.0**-19


@dataclass
class TokenSignal:
    """What per-token teachers say about one batch: `logprobs` at T = 1 with their `ids`, `[batch, n_teachers,
    seq_len, k]`, or, with `ids=None`, log-probabilities over the whole vocabulary `[batch, n_teachers, seq_len,
    vocab]` (live teachers). One type for both, so fusion and the loss need no second code path.

    Args:
        logprobs: `[batch, n_teachers, seq_len, k]` (or `vocab`) log-probabilities at T = 1; -inf: an empty slot.
        ids: `[batch, n_teachers, seq_len, k]` top-k token ids, the shape of `logprobs`; None: full vocabularies.
        vocab_size: The vocabulary's size V. `min_entropy` and `confidence` need it for top-k teachers: a tail's mass
            is spread over the V - k tokens outside the top-k, as the loss assumes (the trainer sets it).

    Attributes:
        logprobs: the teachers' log-probabilities at T = 1.
        ids: the top-k token ids, or None for full-vocabulary teachers.
        vocab_size: V, or None where it was not given.
    """

    logprobs: torch.Tensor
    ids: torch.Tensor | None = None
    vocab_size: int | None = None

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

    def tail_buckets(self, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k teachers' `teacher_buckets` at T = 1 `[batch, n_teachers, seq, k + 1]` and the log of how many
        tokens each tail spreads over `[batch, n_teachers, seq]` (for a token of the tail: its log-probability is
        the tail's minus that).

        Args:
            what: What needs it, named in the error where `vocab_size` is missing.
        """
        if self.vocab_size is None:
            raise ValueError(
                f"{what} of top-k teachers needs the vocabulary size (TokenSignal.vocab_size, fuse_topk's "
                "vocab_size): a tail's mass is spread over the tokens outside the top-k."
            )
        log_probs = self.logprobs.float()
        empty = log_probs == float("-inf")
        return teacher_buckets(log_probs, 1.0, self.vocab_size), log_outside(empty, self.vocab_size).squeeze(-1)


def live_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """A live teacher's log-probabilities over its whole vocabulary, float32: a token its logits rule out (-inf)
    reads as the smallest positive float (as `reverse_kl` documents), not as a NaN in the loss and in fusion.

    Args:
        logits: `[..., vocab]` the teacher's raw logits.
    """
    return torch.log_softmax(logits.float(), dim=-1).clamp(min=math.log(torch.finfo(torch.float32).tiny))


def next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """`[batch, seq]` labels -> the token each position predicts: `labels[:, t + 1]`, -100 at the last position.

    A causal LM's logits at t (and a top-k teacher's row t) are about token t + 1, so the loss and `confidence`
    fusion compare them with the shifted labels; -100 marks positions nothing is learnt from.

    Args:
        labels: `[batch, seq]` token labels aligned with `input_ids` (-100: prompt or padding).
    """
    return F.pad(labels[:, 1:], (0, 1), value=-100)


def log_outside(empty: torch.Tensor, vocab_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`[..., 1]` the log of how many tokens lie outside a top-k (`vocab_size` minus its non-empty slots; 0 where
    none do, and the tail is then empty).

    Args:
        empty: `[..., k]` True at empty slots.
        vocab_size: V.
        dtype: The result's (float64 where the loss is computed in it).
    """
    outside = vocab_size - (~empty).sum(dim=-1, keepdim=True)
    return outside.clamp(min=1).to(dtype).log()


def bucket_log_probs(
    log_probs: torch.Tensor,
    empty: torch.Tensor,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    min_tail: float = 0.0,
    log_tail: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probabilities `[..., k]` at T = 1 -> `[..., k + 1]` over the k ids and the tail bucket, at T.

    The tail's mass is `1 - sum(p)` (0 where rounding sums the top-k above 1, which is then renormalised). At
    T != 1 every token is tempered as a softmax tempers it, `p^(1/T)`, and the k + 1 buckets renormalised; how the
    tail's mass r is spread over its tokens is unknown, so it is tempered as if spread evenly over the `vocab_size -
    k` tokens outside the top-k: `(V - k) (r / (V - k))^(1/T)`, the most a tail of mass r can weigh at T > 1 and
    the least at T < 1 (empty slots do not count in k). Teacher and student are treated alike, so the loss is
    smallest where the student's k + 1 buckets at T = 1 are the teacher's. With k = V the tail is empty and this is
    exactly `softmax(z / T)` at every T; at T = 1 it is exact for every k (for tails above `min_tail`), and bounded
    as T grows, as the dense loss is.

    Args:
        log_probs: under the full softmax at T = 1.
        empty: True at empty slots (probability 0, whatever `log_probs` holds there).
        temperature: T > 0.
        vocab_size: V; needed at T != 1 (how many tokens the tail spreads over).
        min_tail: The smallest tail bucket to read, at T, before renormalising (`ROUNDING_TAIL` for a teacher's
            top-k); 0: any.
        log_tail: `[..., 1]` the tail's log-mass at T = 1 where it is known better than as `1 - sum(p)` (a
            student's, from its logits: `StudentNormalisers`); None: `1 - sum(p)`.
    """
    log_probs = log_probs.masked_fill(empty, EMPTY)
    tiny = torch.finfo(log_probs.dtype).tiny
    if log_tail is None:
        log_top = torch.logsumexp(log_probs, dim=-1, keepdim=True).clamp(max=0.0)
        log_tail = torch.log((-torch.expm1(log_top)).clamp(min=tiny))
    else:
        log_tail = log_tail.clamp(min=math.log(tiny))
    if vocab_size is not None:
        outside = log_outside(empty, vocab_size, log_tail.dtype)
        log_tail = outside + (log_tail - outside) / temperature
    elif temperature != 1.0:
        raise ValueError("bucket_log_probs needs vocab_size at T != 1 (the tail is tempered over its tokens).")
    if min_tail > 0:
        log_tail = log_tail.clamp(min=math.log(min_tail))
    if vocab_size is not None:  # k = V: no token outside, no tail
        log_tail = torch.where((~empty).sum(-1, keepdim=True) < vocab_size, log_tail, EMPTY)
    buckets = torch.cat([(log_probs / temperature).masked_fill(empty, EMPTY), log_tail], dim=-1)
    return torch.log_softmax(buckets, dim=-1)


def teacher_buckets(log_probs: torch.Tensor, temperature: float, vocab_size: int) -> torch.Tensor:
    """A stored (or fused) top-k teacher's k + 1 buckets at T (`bucket_log_probs`), its tail never read below what
    rounding can hide (`ROUNDING_TAIL`): a confident teacher whose top-k sums to 1 in floating point is not taken
    for one that rules out every other token, which `reverse_kl` would charge the student 708 nats a unit of tail
    for.

    Args:
        log_probs: `[..., k]` at T = 1; -inf: empty slot.
        temperature: T > 0.
        vocab_size: V.
    """
    return bucket_log_probs(log_probs, log_probs == float("-inf"), temperature, vocab_size, ROUNDING_TAIL)


class StudentNormalisers(torch.autograd.Function):
    """`(log Z, log Z_outside)` `[batch, seq, 1]` of a student's `[batch, seq, vocab]` float32 logits: over the whole
    vocabulary, and over the tokens outside the teacher's `ids`, each summed on its own, so a confident student's
    tail keeps float32's relative precision (as `1 - sum(p)` over the whole normaliser it was lost below about
    1e-6, and its gradient with it). Like `logsumexp`, only the logits are kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, logits, ids, empty):
        """The two log-normalisers, float32.

        Args:
            logits: `[batch, seq, vocab]` float32 student logits.
            ids: `[batch, seq, k]` int64 teacher ids; `empty`: True at empty slots (not tokens of the top-k).
        """
        first_real = ids.gather(-1, (~empty).long().argmax(-1, keepdim=True))
        inside = torch.where(empty, first_real, ids)  # an empty slot's filler id is no token of the top-k
        shift = logits.amax(-1, keepdim=True)
        terms = (logits - shift).exp_()
        log_norm = shift + terms.sum(-1, keepdim=True).log()
        log_outside = shift + terms.scatter_(-1, inside, 0.0).sum(-1, keepdim=True).log()
        ctx.save_for_backward(logits, inside, log_norm, log_outside)
        return log_norm, log_outside

    @staticmethod
    def backward(ctx, grad_norm, grad_outside):
        """`softmax(z) * grad_norm`, plus, outside the top-k, the softmax over those tokens times `grad_outside`:
        one exponential, `exp(z - log Z_outside) * (grad_norm * Z_outside / Z + grad_outside)` outside, the top-k's
        written over it.

        Args:
            grad_norm: `[batch, seq, 1]` the loss's gradient with respect to log Z; `grad_outside`: to log Z_outside.
        """
        logits, inside, log_norm, log_outside = ctx.saved_tensors
        outside_share = (log_outside - log_norm).exp()
        grad = (logits - log_outside).clamp_(max=0.0).exp_().mul_(grad_norm * outside_share + grad_outside)
        inside_grad = (logits.gather(-1, inside) - log_norm).exp_().mul_(grad_norm)
        return grad.scatter_(-1, inside, inside_grad), None, None


def token_log_probs(
    student_logits: torch.Tensor, ids: torch.Tensor | None, logprobs: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) log-probabilities at T per position, over the buckets the teacher defines.

    Sparse (`ids` `[batch, seq, k]`): k + 1 buckets (`bucket_log_probs`), in float64 on `[batch, seq, k]` tensors;
    of the student's `[batch, seq, vocab]` logits only two log-normalisers (`StudentNormalisers`) and the k gathered
    logits are computed. Full vocabulary (`ids=None`): `log_softmax` of both at T, in float32.

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
        precise, ids = precise_dtype(student_logits.device), ids.long()
        empty, vocab_size = logprobs == float("-inf"), student_logits.shape[-1]
        log_norm, log_outside = (x.to(precise) for x in StudentNormalisers.apply(student_logits.float(), ids, empty))
        student = student_logits.gather(-1, ids).to(precise) - log_norm
        teacher = teacher_buckets(logprobs.to(precise), temperature, vocab_size)
        return teacher, bucket_log_probs(student, empty, temperature, vocab_size, log_tail=log_outside - log_norm)


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
    and one tail bucket (teacher: 1 - the sum of its top-k probabilities, at least `ROUNDING_TAIL`; student: its
    probability outside those ids, `StudentNormalisers`). With k = vocab it equals the dense `kd_loss` KL term at
    every T; at T != 1 every bucket is tempered as a token is, the tail as if spread evenly over the tokens outside
    the top-k (`bucket_log_probs` says why). A tail of 0 contributes 0. Computed in float64 on `[batch, seq, k]`
    tensors; float32 result.

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
    count = mask.sum() if count is None else count  # an accumulated batch of prompts only counts 0: sums are 0 too
    count = count.clamp(min=1) if torch.is_tensor(count) else max(count, 1)
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
