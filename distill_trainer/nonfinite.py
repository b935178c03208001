"""Stopping training at a NaN or infinite fused target or loss term, naming the strategy and the step, without a
host-device synchronisation per step on an accelerator."""

from __future__ import annotations

import torch


class NonFiniteGuardMixin:
    """For `DistillationTrainer`: `_check_finite` each training step, `_raise_on_nonfinite` at each logging step
    (`log`). Needs `self.args` (fusion names), `self.curriculum` and `self.state`."""

    _first_nonfinite_step: dict

    def _check_finite(self, fused: torch.Tensor | None, terms: dict[str, torch.Tensor]) -> None:
        """Stop training at a NaN or infinite fused target or loss term, naming the strategy and the step: the next
        optimizer step would make every weight NaN, while the Trainer's logged loss (which filters NaN) reads on.

        On the CPU the check is immediate (no device to wait for). On an accelerator it adds no host-device
        synchronisation: the first bad step is kept in a device tensor and read at the next logging step, where
        the Trainer synchronises anyway (`log`), so training stops there, naming the step it went wrong.
        """
        strategy = repr(self.args.fusion) + (f" -> {self.args.curriculum_fusion!r}" if self.curriculum else "")
        checks = {f"the fused target of fusion={strategy}": fused}
        checks.update({f"the loss term {name!r} (fusion={strategy})": value for name, value in terms.items()})
        step = self.state.global_step + 1
        for what, value in checks.items():
            if value is None:
                continue
            bad = ~torch.isfinite(value.detach()).all()
            if bad.device.type == "cpu":
                if bad:
                    raise ValueError(non_finite_message(what, step))
                continue
            first = self._first_nonfinite_step.get(what, torch.zeros((), dtype=torch.long, device=bad.device))
            self._first_nonfinite_step[what] = torch.where((first == 0) & bad, torch.full_like(first, step), first)

    def _raise_on_nonfinite(self) -> None:
        """Read the accelerator-side flags of `_check_finite` (at logging steps only)."""
        found = {what: int(step) for what, step in self._first_nonfinite_step.items()}
        self._first_nonfinite_step = {}
        for what, step in found.items():
            if step:
                raise ValueError(non_finite_message(what, step))


def non_finite_message(what: str, step: int) -> str:
    return (
        f"{what} is NaN or infinite at optimizer step {step}: training stopped before the student's weights "
        "became NaN. Check the strategy's fuse() and the teacher logits (and lower the learning rate if the "
        "student's own logits diverged)."
    )
