"""kd_loss and the fusion strategies against hand-worked numbers and an independent numpy reference."""

import math

import numpy as np
import pytest
import torch

from distill_trainer import GatingNetwork, fuse_logits, kd_loss

LN3 = math.log(3.0)
# student [0, 0] vs teacher [ln 3, 0]: p_t = [3/4, 1/4], p_s = [1/2, 1/2]
KL_HAND = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # = 0.130812...
CE_HAND = math.log(2.0)  # student [0, 0], label 0


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_kd_loss_hand_worked_t1(alpha):
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[LN3, 0.0]])
    loss = kd_loss(student, teacher, torch.tensor([0]), temperature=1.0, alpha=alpha)
    assert loss.item() == pytest.approx(alpha * KL_HAND + (1 - alpha) * CE_HAND, abs=1e-6)


def test_kd_loss_scales_soft_term_by_t_squared():
    # teacher [2 ln 3, 0] at T=2 softens to the same [3/4, 1/4]; the student [0, 0] is unchanged by T.
    loss = kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * LN3, 0.0]]), None, temperature=2.0, alpha=1.0)
    assert loss.item() == pytest.approx(4 * KL_HAND, abs=1e-6)


def numpy_kd(student, teacher, labels, T, alpha):
    def log_softmax(x):
        x = x - x.max(axis=-1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))

    log_ps, log_pt = log_softmax(student / T), log_softmax(teacher / T)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum() / len(student)  # batchmean
    ce = -log_softmax(student)[np.arange(len(labels)), labels].mean()
    return alpha * kl * T**2 + (1 - alpha) * ce


@pytest.mark.parametrize("T", [1.0, 3.0, 6.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.7, 1.0])
def test_kd_loss_matches_numpy_reference(T, alpha):
    rng = np.random.default_rng(1)
    student, teacher = rng.normal(size=(5, 3)) * 3, rng.normal(size=(5, 3)) * 3
    labels = rng.integers(3, size=5)
    loss = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), T, alpha)
    assert loss.item() == pytest.approx(numpy_kd(student, teacher, labels, T, alpha), rel=1e-5)


def test_kd_loss_label_smoothing_and_ignore_index():
    student = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([0, -100])
    # only row 0 counts: (1 - 0.1) * ln 2 + 0.1 * mean(ln 2, ln 2) = ln 2
    assert kd_loss(student, student, labels, 1.0, 0.0, label_smoothing=0.1).item() == pytest.approx(CE_HAND, abs=1e-6)
    student = torch.tensor([[LN3, 0.0]])  # p = [3/4, 1/4], label 0
    expected = 0.9 * -math.log(0.75) + 0.1 * 0.5 * (-math.log(0.75) - math.log(0.25))
    assert kd_loss(student, student, torch.tensor([0]), 1.0, 0.0, label_smoothing=0.1).item() == pytest.approx(
        expected
    )


# Two examples x three teachers x two labels, fused by hand.
TEACHERS = torch.tensor(
    [
        [[1.0, 3.0], [2.0, 2.0], [4.0, 0.0]],
        [[0.0, 5.0], [1.0, 0.0], [0.0, 0.0]],
    ]
)


@pytest.mark.parametrize(
    "strategy, kwargs, expected",
    [
        ("average", {}, [[7 / 3, 5 / 3], [1 / 3, 5 / 3]]),
        ("weighted", {"weights": [1, 1, 2]}, [[2.75, 1.25], [0.25, 1.25]]),
        ("weighted", {"weights": [0.9, 0.0, 0.0]}, [[1.0, 3.0], [0.0, 5.0]]),
        ("min_entropy", {}, [[4.0, 0.0], [0.0, 5.0]]),
        ("single", {"teacher_index": 1}, [[2.0, 2.0], [1.0, 0.0]]),
        ("single", {"teacher_index": -1}, [[4.0, 0.0], [0.0, 0.0]]),
    ],
)
def test_fusion_hand_worked(strategy, kwargs, expected):
    fused = fuse_logits(TEACHERS, strategy, **kwargs)
    torch.testing.assert_close(fused, torch.tensor(expected))


def test_min_entropy_survives_extreme_confidence():
    teachers = torch.tensor([[[0.0, 200.0], [0.0, 50.0]]])  # naive p*log(p) would give NaN here
    torch.testing.assert_close(fuse_logits(teachers, "min_entropy"), torch.tensor([[0.0, 200.0]]))


def test_gate_is_average_at_init_and_weighted_mean_after():
    gate = GatingNetwork(input_size=4, n_teachers=3, hidden_size=8)
    cls = torch.randn(2, 4)
    torch.testing.assert_close(gate(cls, TEACHERS), fuse_logits(TEACHERS, "average"))
    with torch.no_grad():
        gate.mlp[-1].bias.copy_(torch.tensor([0.0, 0.0, math.log(2.0)]))  # weights [1/4, 1/4, 1/2]
    torch.testing.assert_close(gate(cls, TEACHERS), fuse_logits(TEACHERS, "weighted", weights=[1, 1, 2]))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fuse_logits(TEACHERS[0], "average"), "shape"),
        (lambda: fuse_logits(TEACHERS, "weighted"), "fusion_weights"),
        (lambda: fuse_logits(TEACHERS, "weighted", weights=[1, 2]), "3 teachers"),
        (lambda: fuse_logits(TEACHERS, "weighted", weights=[-1, 1, 1]), "non-negative"),
        (lambda: fuse_logits(TEACHERS, "single", teacher_index=3), "out of range"),
        (lambda: fuse_logits(TEACHERS, "single"), "teacher_index"),
        (lambda: fuse_logits(TEACHERS, "median"), "Unknown"),
        (lambda: fuse_logits(TEACHERS, "gating"), "GatingNetwork"),
        (lambda: fuse_logits(TEACHERS * float("nan"), "average"), "NaN"),
        (lambda: fuse_logits(TEACHERS * float("inf"), "average"), "infinite"),
        (lambda: kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), 0.0, 0.5), "temperature"),
        (lambda: kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), 1.0, 1.5), "alpha"),
        (lambda: kd_loss(torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1), 1.0, 0.5), "label space"),
        (lambda: kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), None, 1.0, 0.5), "labels are required"),
    ],
)
def test_bad_fusion_and_loss_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
