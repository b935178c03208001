"""sparse_kd_loss, fuse_topk and the loss registry against independent numpy computations (issue 30)."""

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_student

from distill_trainer import (
    KD_LOSSES,
    DistillationConfig,
    DistillationTrainer,
    fuse_topk,
    kd_loss,
    sparse_kd_loss,
    topk_from_logits,
)
from distill_trainer.kd_losses import build_kd_loss, forward_kl
from distill_trainer.token_fusion import token_entropy
from distill_trainer.tokens import TokenSignal, live_log_probs, next_token_labels, token_kd_terms, token_log_probs

V = 16


def log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def numpy_buckets(log_probs, vocab, T):
    """k + 1 bucket probabilities at T: tokens tempered p^(1/T), the tail as spread over the vocab - k others."""
    p = np.exp(log_probs)
    tail = max(1.0 - p.sum(), 0.0)
    outside = vocab - len(p)
    tempered_tail = outside * (tail / outside) ** (1 / T) if outside else 0.0
    buckets = np.append(p ** (1 / T), tempered_tail)
    return buckets / buckets.sum()


def numpy_sparse_kd(student, ids, logprobs, T, mask):
    """KL(teacher || student) over k + 1 buckets, per position, mean over the mask, times T^2."""
    total = []
    for b, s in zip(*np.nonzero(mask), strict=False):
        student_log_probs = log_softmax(student[b, s])[ids[b, s]]
        teacher = numpy_buckets(logprobs[b, s], student.shape[-1], T)
        learner = numpy_buckets(student_log_probs, student.shape[-1], T)
        kept = teacher > 0
        total.append((teacher[kept] * np.log(teacher[kept] / learner[kept])).sum())
    return np.mean(total) * T**2


@pytest.mark.parametrize("T", [1.0, 2.0, 6.0, 1e3])
def test_sparse_kd_at_k_equal_to_the_vocabulary_is_the_dense_kl(T):
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 5, V) * 3, torch.randn(3, 5, V) * 3
    ids, logprobs = topk_from_logits(teacher, V, torch.float32)
    dense = kd_loss(student.reshape(-1, V), teacher.reshape(-1, V), None, T, alpha=1.0)
    torch.testing.assert_close(sparse_kd_loss(student, ids, logprobs, T), dense, rtol=1e-5, atol=1e-7)
    mask = torch.rand(3, 5) > 0.4
    dense_masked = kd_loss(student[mask], teacher[mask], None, T, alpha=1.0)
    torch.testing.assert_close(sparse_kd_loss(student, ids, logprobs, T, mask), dense_masked, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("T", [1.0, 2.5, 8.0])
@pytest.mark.parametrize("k", [1, 4, 15])
def test_sparse_kd_matches_a_numpy_reference_with_a_tail(T, k):
    rng = np.random.default_rng(k)
    student, teacher = rng.normal(size=(2, 4, V)) * 2, rng.normal(size=(2, 4, V)) * 2
    ids, logprobs = topk_from_logits(torch.tensor(teacher), k, torch.float32)
    mask = rng.random((2, 4)) > 0.3
    mask[0, 0] = True
    loss = sparse_kd_loss(torch.tensor(student), ids, logprobs, T, torch.tensor(mask))
    expected = numpy_sparse_kd(student, ids.numpy(), logprobs.numpy().astype(np.float64), T, mask)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_a_tail_of_zero_is_handled_and_gradients_stay_finite():
    student = (torch.randn(1, 3, V) * 4).requires_grad_(True)
    teacher_logits = torch.full((1, 3, V), -1e4)
    teacher_logits[..., :3] = torch.tensor([2.0, 1.0, 0.0])  # all mass on 3 tokens: a tail of (numerically) 0
    ids, logprobs = topk_from_logits(teacher_logits, 3, torch.float32)
    for T in (1.0, 4.0):
        loss = sparse_kd_loss(student, ids, logprobs, T)
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(loss) and torch.isfinite(grad).all() and loss > 0
        dense = kd_loss(student.detach()[0], teacher_logits[0], None, T, 1.0)
        expected = numpy_sparse_kd(
            student.detach().numpy(), ids.numpy(), logprobs.double().numpy(), T, np.ones((1, 3))
        )
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        if T == 1.0:  # merging tokens into buckets can only lose divergence (data processing inequality)
            assert loss.item() <= dense.item() + 1e-5
    ids16, logprobs16 = topk_from_logits(torch.randn(2, 4, V), 5)  # float16 storage, empty slots padded with -inf
    logprobs16[0, 1, 3:] = float("-inf")
    learner = torch.randn(2, 4, V, requires_grad=True)
    (grad,) = torch.autograd.grad(sparse_kd_loss(learner, ids16, logprobs16, 2.0), learner)
    assert torch.isfinite(grad).all()


def test_sparse_kd_ignores_masked_positions_and_an_empty_mask_counts_zero():
    student, teacher = torch.randn(2, 3, V), torch.randn(2, 3, V)
    ids, logprobs = topk_from_logits(teacher, 4, torch.float32)
    poisoned = student.clone()
    poisoned[1, 2] = 1e6
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False
    torch.testing.assert_close(
        sparse_kd_loss(student, ids, logprobs, 2.0, mask), sparse_kd_loss(poisoned, ids, logprobs, 2.0, mask)
    )
    assert sparse_kd_loss(student, ids, logprobs, 2.0, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0
    # a batch of prompts only, under accumulation: the Trainer's num_items_in_batch is 0 (it was 0 / 0, NaN, and
    # stopped training; found by the benchmark review with --max_length 32)
    prompts_only = torch.full((2, 3), -100)
    for count in (torch.tensor(0), 0, None):
        terms = token_kd_terms(student, (ids, logprobs), prompts_only, 2.0, 0.5, count=count)
        assert terms == {"kd": 0.0, "ce": 0.0}


def test_next_token_alignment_by_hand():
    labels = torch.tensor([[-100, -100, 7, 8, -100]])  # a 2-token prompt, a 2-token completion, padding
    assert next_token_labels(labels).tolist() == [[-100, 7, 8, -100, -100]]
    # position 1 predicts token 2 (7) and position 2 token 3 (8): the student's logits there, the teachers' there
    student = torch.zeros(1, 5, V)
    ids = torch.tensor([7, 8, 9, 10])[None, None].expand(1, 5, 4)
    logprobs = torch.log(torch.tensor([0.5, 0.2, 0.1, 0.1]))[None, None].expand(1, 5, 4)
    terms = token_kd_terms(student, (ids, logprobs), labels, 1.0, 0.5)
    # teacher buckets [0.5, 0.2, 0.1, 0.1 | 0.1]; student (uniform) [1/16 x 4 | 12/16]
    teacher = np.array([0.5, 0.2, 0.1, 0.1, 0.1])
    learner = np.array([1, 1, 1, 1, 12]) / 16
    assert terms["kd"].item() == pytest.approx((teacher * np.log(teacher / learner)).sum(), rel=1e-6)
    assert terms["ce"].item() == pytest.approx(np.log(V), rel=1e-6)  # two scored positions, each log(16)


# ---- fusion over the union of the teachers' top-k ----------------------------------------------------------


def dense_teacher(ids, logprobs):
    """`[..., V]` probabilities of a top-k teacher: its top-k, 0 elsewhere (empty slots add 0)."""
    dense = np.zeros((int(np.prod(ids.shape[:-1])), V))
    rows = np.repeat(np.arange(len(dense)), ids.shape[-1])
    np.add.at(dense, (rows, ids.reshape(-1)), np.exp(logprobs).reshape(-1))
    return dense.reshape(ids.shape[:-1] + (V,))


def fused_dense(ids, logprobs):
    fused = dense_teacher(ids.numpy(), np.where(np.isneginf(logprobs.numpy()), -np.inf, logprobs.numpy()))
    for b, s in np.ndindex(ids.shape[:2]):  # ids of non-empty slots are unique: each token has one slot
        kept = ids[b, s][~torch.isneginf(logprobs[b, s])].tolist()
        assert len(kept) == len(set(kept))
    return fused


@pytest.fixture
def four_teachers():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(2, 3, 5, V)) * 2)  # [batch, n_teachers, seq, vocab]
    return topk_from_logits(logits, 4, torch.float32)


@pytest.mark.parametrize("fusion, weights", [("average", None), ("weighted", [1.0, 3.0, 0.0]), ("single", None)])
def test_fuse_topk_is_the_mixture_over_the_union(four_teachers, fusion, weights):
    ids, logprobs = four_teachers
    options = {"teacher_index": 1} if fusion == "single" else {"weights": weights}
    fused_ids, fused_logprobs = fuse_topk(ids, logprobs, fusion, **options)
    assert fused_ids.shape == (2, 5, 12)
    w = {"average": np.ones(3) / 3, "weighted": np.array([0.25, 0.75, 0.0]), "single": np.array([0, 1.0, 0])}[fusion]
    teachers = dense_teacher(ids.numpy(), logprobs.numpy().astype(np.float64))  # [2, 3, 5, V]
    expected = np.einsum("t,btsv->bsv", w, teachers)
    np.testing.assert_allclose(fused_dense(fused_ids, fused_logprobs), expected, rtol=1e-5, atol=1e-7)
    tails = 1 - teachers.sum(-1)
    fused_tail = 1 - torch.exp(fused_logprobs).sum(-1).numpy()
    np.testing.assert_allclose(fused_tail, np.einsum("t,bts->bs", w, tails), atol=1e-5)


def numpy_buckets_t1(ids, logprobs):
    p = np.exp(logprobs)
    return np.append(p, max(1 - p.sum(), 0.0))


def test_min_entropy_and_confidence_read_a_tail_as_spread_over_the_tokens_outside_the_top_k(four_teachers):
    ids, logprobs = four_teachers
    teachers = dense_teacher(ids.numpy(), logprobs.numpy().astype(np.float64))
    labels = torch.tensor(np.random.default_rng(1).integers(V, size=(2, 5)))
    labels[0, 3] = -100  # position 2 of row 0 has no gold next token
    gold = next_token_labels(labels).numpy()
    min_entropy = np.zeros((2, 5, V))
    confidence = np.zeros((2, 5, V))
    for b, s in np.ndindex(2, 5):
        buckets = [numpy_buckets_t1(ids[b, t, s].numpy(), logprobs[b, t, s].double().numpy()) for t in range(3)]
        spread = [np.append(q[:-1], np.full(V - 4, q[-1] / (V - 4))) for q in buckets]  # the tail over V - k tokens
        entropies = [-(q * np.log(q)).sum() for q in spread]
        min_entropy[b, s] = teachers[b, int(np.argmin(entropies)), s]
        if gold[b, s] == -100:
            w = np.ones(3) / 3
        else:
            hits = [ids[b, t, s].numpy() == gold[b, s] for t in range(3)]
            p_gold = np.array(
                [q[:-1][hit].sum() if hit.any() else q[-1] / (V - 4) for q, hit in zip(buckets, hits, strict=False)]
            )
            w = p_gold / p_gold.sum()
        confidence[b, s] = np.einsum("t,tv->v", w, teachers[b, :, s])
    np.testing.assert_allclose(
        fused_dense(*fuse_topk(ids, logprobs, "min_entropy", vocab_size=V)), min_entropy, atol=1e-6
    )
    fused = fuse_topk(ids, logprobs, "confidence", labels=labels, vocab_size=V)
    np.testing.assert_allclose(fused_dense(*fused), confidence, atol=1e-6)
    for fusion in ("min_entropy", "confidence"):  # without V a tail's spread is unknown: refused, not guessed
        with pytest.raises(ValueError, match=f"fusion='{fusion}' of top-k teachers needs the vocabulary size"):
            fuse_topk(ids, logprobs, fusion, labels=labels)


def test_confidence_does_not_take_an_empty_slot_for_the_gold_token():
    """A teacher with fewer tokens than k (empty slots, whatever id fills them): the gold token outside its tokens
    gets its tail's share, whichever id the empty slots hold (id 0 here is the gold token)."""
    ids = torch.tensor([[5, 0, 7, 8], [5, 6, 0, 0]])[None, :, None].expand(1, 2, 2, 4)
    logprobs = torch.tensor([[0.5, 0.3, 0.1, 0.05], [0.6, 0.3, 0.0, 0.0]]).log()[None, :, None].expand(1, 2, 2, 4)
    labels = torch.tensor([[9, 0]])  # position 0 predicts token 0: teacher 0 holds it at 0.3, teacher 1 does not
    other_fill = ids.clone()
    other_fill[0, 1, :, 2:] = 3
    fused = [fuse_topk(i, logprobs, "confidence", labels=labels, vocab_size=V) for i in (ids, other_fill)]
    weights = np.array([0.3, 0.1 / (V - 2)]) / (0.3 + 0.1 / (V - 2))
    expected = weights[0] * 0.3  # teacher 1 has no probability on token 0
    for fused_ids, fused_logprobs in fused:
        assert fused_dense(fused_ids, fused_logprobs)[0, 0, 0] == pytest.approx(expected, rel=1e-5)


def test_reverse_kl_does_not_charge_a_tail_lost_to_rounding_as_a_teacher_that_rules_every_other_token_out():
    """A confident teacher's true tail (1e-9) is below float32 resolution: its stored top-k sums to 1. Read as 0,
    reverse KL would charge the student's tail log(1 / 2.2e-308) = 708 nats a unit; read at the rounding bound, the
    bucketed loss stays below the dense one (the bucketed KL can never exceed it)."""
    teacher = torch.full((1, 1, V), -30.0)
    teacher[..., :3] = torch.tensor([12.0, 2.0, 1.0])
    student = torch.zeros(1, 1, V)
    student[..., 0] = 3.0
    ids, logprobs = topk_from_logits(teacher, 3, torch.float16)
    dense_teacher_log_probs = torch.log_softmax(teacher.double(), -1)
    dense_student_log_probs = torch.log_softmax(student.double(), -1)
    reverse_dense = (dense_student_log_probs.exp() * (dense_student_log_probs - dense_teacher_log_probs)).sum()
    sparse = build_kd_loss("reverse_kl", tokens=True).divergence(*token_log_probs(student, ids, logprobs, 1.0))
    assert 0 < sparse.item() < reverse_dense.item()


def test_fused_targets_feed_the_sparse_loss_and_equal_the_dense_mixture_at_k_equal_to_the_vocabulary():
    torch.manual_seed(1)
    teacher_logits, student = torch.randn(2, 2, 3, V) * 2, torch.randn(2, 3, V)
    ids, logprobs = topk_from_logits(teacher_logits, V, torch.float32)
    fused = fuse_topk(ids, logprobs, "weighted", weights=[1.0, 3.0])
    mixture = torch.logsumexp(
        torch.log_softmax(teacher_logits, -1) + torch.log(torch.tensor([0.25, 0.75]))[:, None, None], dim=1
    )
    dense = kd_loss(student.reshape(-1, V), mixture.reshape(-1, V), None, 3.0, 1.0)
    torch.testing.assert_close(sparse_kd_loss(student, *fused, 3.0), dense, rtol=1e-5, atol=1e-7)


def test_a_strategy_without_a_per_token_form_says_so(four_teachers):
    for fusion, message in [("gating", "one hidden state per example"), ("fitted", "use 'weighted'")]:
        with pytest.raises(ValueError, match=f"fusion='{fusion}' does not fuse per-token teachers: .*{message}"):
            fuse_topk(*four_teachers, fusion)


# ---- the loss registry ---------------------------------------------------------------------------------------


def numpy_divergence(name, student, teacher, T, beta=0.5):
    log_s, log_t = log_softmax(student / T), log_softmax(teacher / T)
    p_s, p_t = np.exp(log_s), np.exp(log_t)
    if name == "forward_kl":
        per_row = (p_t * (log_t - log_s)).sum(-1)
    elif name == "reverse_kl":
        per_row = (p_s * (log_s - log_t)).sum(-1)
    elif name == "jsd":
        m = beta * p_t + (1 - beta) * p_s
        per_row = beta * (p_t * np.log(p_t / m)).sum(-1) + (1 - beta) * (p_s * np.log(p_s / m)).sum(-1)
    else:
        return ((student - teacher) ** 2).mean()
    return per_row.mean() * T**2


@pytest.mark.parametrize("name", KD_LOSSES)
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_registered_losses_match_numpy_on_class_logits(name, T):
    rng = np.random.default_rng(2)
    student, teacher = rng.normal(size=(6, 3)) * 2, rng.normal(size=(6, 3)) * 2
    loss = build_kd_loss(name, jsd_beta=0.3).dense(torch.tensor(student), torch.tensor(teacher), T)
    assert loss.item() == pytest.approx(numpy_divergence(name, student, teacher, T, 0.3), rel=1e-5)


@pytest.mark.parametrize("name", [name for name in KD_LOSSES if name != "mse"])
def test_registered_losses_per_token_equal_their_dense_form_at_k_equal_to_the_vocabulary(name):
    torch.manual_seed(3)
    student, teacher = torch.randn(2, 4, V) * 2, torch.randn(2, 4, V) * 2
    labels = torch.randint(V, (2, 4))
    loss = build_kd_loss(name, jsd_beta=0.3, tokens=True)
    topk = topk_from_logits(teacher, V, torch.float32)
    sparse = token_kd_terms(student, topk, labels, 2.0, 1.0, divergence=loss.divergence)["kd"]
    rows = next_token_labels(labels) != -100
    torch.testing.assert_close(sparse, loss.dense(student[rows], teacher[rows], 2.0), rtol=1e-5, atol=1e-7)


def test_losses_are_refused_where_they_do_not_apply(tmp_path, sentiment_data, tokenizer):
    with pytest.raises(ValueError, match="kd_loss='mse' does not apply to per-token teachers of causal LMs: top-k"):
        build_kd_loss("mse", tokens=True)
    with pytest.raises(ValueError, match="kd_loss='jsd' does not apply to regression .*use kd_loss='mse'"):
        build_kd_loss("jsd", regression=True)
    for beta in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="jsd_beta must be in \\(0, 1\\)"):
            DistillationConfig(output_dir=str(tmp_path), kd_loss="jsd", jsd_beta=beta)
    with pytest.raises(ValueError, match="Unknown kd_loss 'kl'; choose one of"):
        DistillationConfig(output_dir=str(tmp_path), kd_loss="kl")
    trainer = DistillationTrainer(
        model=tiny_student(),
        args=tiny_config(tmp_path, kd_loss="reverse_kl"),
        train_dataset=sentiment_data,
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = trainer.compute_loss(trainer.model, batch)
    fused = batch["teacher_logits"].mean(1).numpy().astype(np.float64)
    expected = 0.7 * numpy_divergence("reverse_kl", logits.double().numpy(), fused, 2.0)
    expected += 0.3 * -log_softmax(logits.double().numpy())[np.arange(16), batch["labels"].numpy()].mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_a_live_teacher_that_rules_a_token_out_gives_a_finite_loss_and_entropy():
    """A live teacher's -inf logit (a masked token) reads as the smallest positive float, not as a NaN."""
    teacher_logits, student = torch.randn(1, 3, V), torch.randn(1, 3, V)
    teacher_logits[..., -1] = float("-inf")
    teacher = live_log_probs(teacher_logits)
    labels = torch.tensor([[1, 2, 3]])
    for kd in ("forward_kl", "reverse_kl", "jsd"):
        divergence = build_kd_loss(kd, tokens=True).divergence
        assert torch.isfinite(token_kd_terms(student, (None, teacher), labels, 2.0, 0.5, divergence=divergence)["kd"])
    assert torch.isfinite(token_entropy(TokenSignal(teacher[:, None]))).all()


@pytest.mark.parametrize("shift", [2.0, 14.0, 22.0])
def test_a_confident_students_tail_and_its_gradient_are_exact(shift):
    """The student's tail is summed apart from its top-k share (`StudentNormalisers`): as 1 - that share over a
    float32 normaliser, a tail of 3e-8 read as 1.6e-6 and its logits' gradient came out 55 times too small. Checked
    against float64 autograd over the full vocabulary, with an empty slot (its filler id a tail token) in the top-k."""
    vocab, k = 1000, 8
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(1, 2, vocab, generator=generator)
    teacher[..., :k] += 6.0  # a teacher tail of about 0.4
    logprobs, ids = torch.log_softmax(teacher, -1).topk(k, -1)
    logprobs[0, 1, -1], ids[0, 1, -1] = float("-inf"), 500  # an empty slot whose filler id is a tail token
    student = torch.randn(1, 2, vocab, generator=generator) * 0.5 + 10.0
    student.scatter_add_(-1, ids, torch.full(ids.shape, shift))
    student = student.requires_grad_(True)
    loss = forward_kl(*token_log_probs(student, ids, logprobs, 1.0)).sum()
    (grad,) = torch.autograd.grad(loss, student)

    reference = student.detach().double().requires_grad_(True)
    log_probs = torch.log_softmax(reference, -1)
    empty = logprobs == float("-inf")
    inside = torch.zeros_like(log_probs).scatter_add_(-1, ids, (~empty).double()) > 0  # the top-k's real tokens
    student_buckets = torch.cat(
        [log_probs.gather(-1, ids), log_probs.masked_fill(inside, -torch.inf).logsumexp(-1)[..., None]], -1
    )
    student_buckets[..., :-1] = student_buckets[..., :-1].masked_fill(empty, -1e30)
    teacher_top = logprobs.double().masked_fill(empty, -1e30)
    teacher_buckets = torch.cat([teacher_top, torch.log1p(-teacher_top.exp().sum(-1, keepdim=True))], -1)
    expected = forward_kl(teacher_buckets, student_buckets).sum()
    (expected_grad,) = torch.autograd.grad(expected, reference)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-9)
    beyond_float32 = student.detach().scatter_add(-1, ids, torch.full(ids.shape, 1e3)).requires_grad_(True)
    loss = forward_kl(*token_log_probs(beyond_float32, ids, logprobs, 2.0)).sum()  # its tail underflows to 0
    assert torch.isfinite(loss) and torch.isfinite(torch.autograd.grad(loss, beyond_float32)[0]).all()
