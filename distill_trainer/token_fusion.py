"""Fusion per token: the registry's strategies applied to per-token teachers of causal LMs.

Each strategy that supports it gives `[batch, n_teachers, seq]` teacher weights per token (`token_weights`), and
the teachers' distributions are mixed with them: `p(v) = sum_j w_j p_j(v)` over the union of their top-k ids,
`p_j(v) = 0` outside teacher j's, with a tail bucket holding the rest. A mixture of probabilities, not of logits
as for class logits: top-k teachers have no logits for most tokens, and a mixture keeps each teacher's tail.
The per-token forms of the built-in strategies are registered here; `gating` and `fitted` have none (their
`tokens_hint` says what to use).
"""

from __future__ import annotations

import torch

from .fusion import (
    AverageFusion,
    ConfidenceFusion,
    FittedFusion,
    FusionSetup,
    GatingNetwork,
    MinEntropyFusion,
    SingleFusion,
    WeightedFusion,
    fusion_strategy,
)
from .tokens import EMPTY, TokenSignal, next_token_labels


def mix_teachers(signal: TokenSignal, weights: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The mixture `p(v) = sum_j w_j p_j(v)` per position, `p_j(v) = 0` outside teacher j's top-k: `(ids,
    log-probabilities)` `[batch, seq, m]` over the union of the teachers' ids (m = n_teachers * k slots, the
    duplicates' left empty: no host read is needed to size it). The fused tail is `sum_j w_j tail_j`, implied.

    Args:
        signal: the teachers.
        weights: `[batch, n_teachers, seq]`, summing to 1 over teachers.
    """
    with torch.autocast(signal.logprobs.device.type, enabled=False):
        if signal.ids is None:  # full vocabularies: a log-sum-exp over teachers
            log_weights = weights.float().clamp(min=0).log()[..., None]
            return None, torch.logsumexp(signal.logprobs.float() + log_weights, dim=1)
        batch, n_teachers, seq, k = signal.ids.shape
        ids = signal.ids.long().permute(0, 2, 1, 3).reshape(batch, seq, n_teachers * k)
        probs = (signal.logprobs.float().exp() * weights.float()[..., None]).permute(0, 2, 1, 3)
        sorted_ids, order = ids.sort(dim=-1)
        probs = probs.reshape(batch, seq, n_teachers * k).gather(-1, order)
        first = torch.ones_like(sorted_ids, dtype=torch.bool)
        first[..., 1:] = sorted_ids[..., 1:] != sorted_ids[..., :-1]
        slot = first.long().cumsum(dim=-1) - 1  # equal ids share a slot
        fused = torch.zeros_like(probs).scatter_add_(-1, slot, probs)
        return torch.zeros_like(sorted_ids).scatter_(-1, slot, sorted_ids), fused.log()


def uniform_token_weights(signal: TokenSignal) -> torch.Tensor:
    """Equal `[batch, n_teachers, seq]` weights: `average`'s per-token form (and the shape the others fill).

    Args:
        signal: The batch's per-token teachers (their shape and device are used).
    """
    batch, n_teachers, seq = signal.logprobs.shape[:3]
    return signal.logprobs.new_full((batch, n_teachers, seq), 1.0 / n_teachers, dtype=torch.float32)


def token_entropy(signal: TokenSignal) -> torch.Tensor:
    """`[batch, n_teachers, seq]` entropy (nats, T = 1) of each teacher's whole distribution, a top-k's tail spread
    evenly over the tokens outside it (as the loss assumes): a diffuse teacher whose top-k holds little is not
    taken for a confident one.

    Args:
        signal: The batch's per-token teachers: top-k (with a tail, and `vocab_size`) or whole distributions.
    """
    if signal.ids is None:
        log_probs = signal.logprobs.float()
        return -(log_probs.exp() * log_probs).sum(-1)
    buckets, log_outside = signal.tail_buckets("fusion='min_entropy'")
    return -(buckets.exp() * buckets).sum(-1) + buckets[..., -1].exp() * log_outside


def gold_log_probs(signal: TokenSignal, labels: torch.Tensor) -> torch.Tensor:
    """`[batch, n_teachers, seq]` each teacher's log-probability of the gold next token: from its top-k, else its
    tail's spread evenly over the tokens outside the top-k (as the loss assumes); 0 where there is no gold token.

    Args:
        signal: The batch's per-token teachers (top-k ones with `vocab_size`).
        labels: `[batch, seq]` token labels aligned with the input ids (-100: none); shifted to the next token here.
    """
    gold = next_token_labels(labels)
    scored = gold != -100
    gold = gold.masked_fill(~scored, 0).long()[:, None, :, None].expand(-1, signal.n_teachers, -1, 1)
    if signal.ids is None:
        found = signal.logprobs.float().gather(-1, gold).squeeze(-1)
    else:
        buckets, log_outside = signal.tail_buckets("fusion='confidence'")
        hit = (signal.ids.long() == gold) & (signal.logprobs != float("-inf"))  # an empty slot's id is no token
        in_top = buckets[..., :-1].masked_fill(~hit, EMPTY).logsumexp(-1)
        found = torch.where(hit.any(-1), in_top, buckets[..., -1] - log_outside)
    return found.masked_fill(~scored[:, None], 0.0)


def _per_token(strategy_class):
    """Give a built-in strategy its per-token form (`FusionStrategy.token_weights`), declaring it supported.

    Args:
        strategy_class: The `FusionStrategy` subclass whose `token_weights` the decorated function becomes.
    """

    def register(weights_function):
        strategy_class.token_weights = weights_function
        strategy_class.supports_tokens = True
        return weights_function

    return register


@_per_token(AverageFusion)
def _average_weights(self, signal, labels=None):
    """`average` per token: equal weights.

    Args:
        signal: The batch's per-token teachers.
        labels: Unused.
    """
    return uniform_token_weights(signal)


@_per_token(WeightedFusion)
def _fixed_weights(self, signal, labels=None):
    """`weighted` per token: the strategy's weights at every position.

    Args:
        signal: The batch's per-token teachers.
        labels: Unused.
    """
    weights = self.weights.to(signal.logprobs.device)
    return weights[None, :, None].expand(signal.logprobs.shape[0], -1, signal.logprobs.shape[2])


@_per_token(SingleFusion)
def _single_weights(self, signal, labels=None):
    """`single` per token: weight 1 on `teacher_index`, 0 on the others.

    Args:
        signal: The batch's per-token teachers.
        labels: Unused.
    """
    weights = torch.zeros_like(uniform_token_weights(signal))
    weights[:, self.teacher_index] = 1.0
    return weights


@_per_token(MinEntropyFusion)
def _min_entropy_weights(self, signal, labels=None):
    """Per token, the teacher whose distribution has the lowest entropy.

    Args:
        signal: The batch's per-token teachers.
        labels: Unused.
    """
    most_confident = token_entropy(signal).argmin(dim=1)
    weights = torch.zeros_like(uniform_token_weights(signal))  # not one_hot: on CUDA it reads its input
    return weights.scatter_(1, most_confident[:, None], 1.0)


@_per_token(ConfidenceFusion)
def _confidence_weights(self, signal, labels=None):
    """Per token, teachers weighted by their probability of the gold next token; equal weights without one.

    Args:
        signal: The batch's per-token teachers.
        labels: `[batch, seq]` token labels aligned with the input ids; None is refused.
    """
    if labels is None:
        raise ValueError("fusion='confidence' weighs teachers by the gold next token: it needs labels.")
    return torch.softmax(gold_log_probs(signal, labels), dim=1)


FittedFusion.supports_tokens = False
FittedFusion.tokens_hint = "its weights are fitted on validation class logits; use 'weighted' with fusion_weights"
GatingNetwork.tokens_hint = "the gate reads one hidden state per example, not one per token"


def fuse_topk(
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    fusion: str = "average",
    weights=None,
    teacher_index: int | None = None,
    labels: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse per-token top-k teachers `[batch, n_teachers, seq, k]` into one distribution per position: `(ids,
    log-probabilities)` `[batch, seq, m]` over the union of their ids (empty slots: -inf), the tail implied.

    `average` / `weighted` (`weights`, one per teacher): `p(v) = sum_j w_j p_j(v)`, `p_j(v) = 0` outside teacher
    j's top-k, the fused tail `sum_j w_j tail_j`. `min_entropy`: per token, the teacher of lowest entropy.
    `confidence` (`labels`, aligned with the input ids as a causal LM's are): per token, teachers weighted by their
    probability of the gold next token. Both read a tail as spread evenly over the `vocab_size - k` tokens outside
    the top-k, as the loss does, so they need `vocab_size`. `single`: `teacher_index`. A strategy that cannot fuse
    per-token teachers says why.

    Args:
        topk_ids: `[batch, n_teachers, seq, k]` token ids.
        topk_logprobs: `[batch, n_teachers, seq, k]` log-probabilities at T = 1 (-inf: empty slot).
        fusion: a registered strategy that `supports_tokens`.
        weights: one per teacher, for `weighted`.
        teacher_index: the teacher of `single`.
        labels: `[batch, seq]` token labels aligned with the input ids, for `confidence`.
        vocab_size: The vocabulary's size, for `min_entropy` and `confidence`.

    Returns:
        `(ids, log-probabilities)`, each `[batch, seq, m]`: what `sparse_kd_loss` takes as one teacher.

    Raises:
        ValueError: a strategy without a per-token form (`gating`, `fitted`), with a hint.
    """
    signal = TokenSignal(topk_logprobs, topk_ids, vocab_size)
    cls = fusion_strategy(fusion)
    if not cls.supports_tokens:
        raise ValueError(f"fusion={fusion!r} does not fuse per-token teachers: {cls.tokens_hint}.")
    setup = FusionSetup(n_teachers=signal.n_teachers, weights=weights, teacher_index=teacher_index)
    return mix_teachers(signal, cls.from_setup(setup).token_weights(signal, labels))
