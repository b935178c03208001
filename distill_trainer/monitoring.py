"""What `DistillationTrainer` records and checks at each training step: the loss terms it logs (`loss_kd`,
`loss_ce`, alpha, T), and NaN or infinite fused targets or loss terms, which stop training naming the strategy
and the step, without a host-device synchronisation per step on an accelerator."""

from __future__ import annotations

import torch

from .signals import on_host


class StepMonitorMixin:
    """For `DistillationTrainer`: `_check_finite` and `_record_loss_terms` each training step; `log` reads them at
    logging steps. Needs `self.args`, `self.curriculum`, `self.state`, `current_alpha_and_temperature` and
    `curriculum_weight`."""

    _first_nonfinite_step: dict

    def _check_finite(self, fused: torch.Tensor | None, terms: dict[str, torch.Tensor]) -> None:
        """Stop training at a NaN or infinite fused target or loss term, naming the strategy and the step: the next
        optimizer step would make every weight NaN, while the Trainer's logged loss (which filters NaN) reads on.

        On the CPU the check is immediate (no device to wait for). On an accelerator it adds no host-device
        synchronisation: the first bad step is kept in a device tensor and read at the next logging step, where
        the Trainer synchronises anyway (`log`), so training stops there, naming the step it went wrong.

        Args:
            fused: The step's fused teacher target, or None (no teachers, or checked elsewhere).
            terms: The step's loss terms by name (`kd`, `ce`, `mse`).
        """
        strategy = repr(self.args.fusion) + (f" -> {self.args.curriculum_fusion!r}" if self.curriculum else "")
        checks = {f"the fused target of fusion={strategy}": fused}
        checks.update({f"the loss term {name!r} (fusion={strategy})": value for name, value in terms.items()})
        step = self.state.global_step + 1
        for what, value in checks.items():
            if value is None:
                continue
            bad = ~torch.isfinite(value.detach()).all()
            if on_host(bad):
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

    def _record_loss_terms(self, terms: dict[str, torch.Tensor]) -> None:
        """Add this step's loss terms (detached, on their device) to the sums `log` averages at the next logging step.

        Args:
            terms: The step's loss terms by name (`kd`, `ce`, `mse`).
        """
        for name, value in terms.items():
            self._loss_term_sums[name] = self._loss_term_sums.get(name, 0.0) + value.detach()
        self._loss_term_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs get each loss term (`loss_kd`, `loss_ce`: the mean since the last log over every process,
        which under data parallelism is the whole batch's, as the Trainer's `loss` is) and the current `alpha` and
        `temperature`.

        Args:
            logs: The Trainer's values to log; the distillation ones are added in place.
            start_time: Passed on to `Trainer.log`.
        """
        self._raise_on_nonfinite()
        if "loss" in logs:  # the values the last logged step trained with
            in_use = getattr(self, "_schedule_in_use", None) or (
                *self.current_alpha_and_temperature(),
                self.curriculum_weight(),
            )
            logs["alpha"], logs["temperature"] = (round(value, 6) for value in in_use[:2])
            if self.curriculum is not None:
                logs["curriculum_weight"] = round(in_use[2], 6)
            names = sorted(self._loss_term_sums)  # the same on every process (alpha follows the global step)
            if names:
                sums = [torch.as_tensor(self._loss_term_sums[name], dtype=torch.float32) for name in names]
                means = torch.stack(sums).to(self.args.device) / max(self._loss_term_steps, 1)
                if self.args.world_size > 1:  # every process logs: the batch's mean, not process 0's
                    means = self.accelerator.reduce(means, reduction="mean")
                logs.update({f"loss_{name}": round(v, 6) for name, v in zip(names, means.tolist(), strict=True)})
            self._loss_term_sums, self._loss_term_steps = {}, 0
        super().log(logs, start_time)


def non_finite_message(what: str, step: int) -> str:
    """The error that stops training at a non-finite target or loss term, naming it and the optimizer step.

    Args:
        what: The target or loss term that went non-finite, in words.
        step: The (1-based) optimizer step it happened at.
    """
    return (
        f"{what} is NaN or infinite at optimizer step {step}: training stopped before the student's weights "
        "became NaN. Check the strategy's fuse() and the teacher logits (and lower the learning rate if the "
        "student's own logits diverged)."
    )
