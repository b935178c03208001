"""The parameters of a fusion that learns (the gate, or any registered strategy with parameters): what the
Trainer does for the model, done for them.

A fusion module with parameters lives outside the student, so the Trainer knows nothing of it. Mixed into
`DistillationTrainer`, this puts `self.gate` (the strategy, when it has parameters) in the optimizer (own
group, `gate_learning_rate`), starts every process from rank 0's values and averages its gradients across
processes (DDP only syncs the wrapped model), clips it with the student by `max_grad_norm`, and
saves/restores it in every checkpoint, never in the student's `save_model` folder.
"""

from __future__ import annotations

import os

import torch
from accelerate.utils import broadcast, reduce
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

GATE_WEIGHTS_NAME = "distill_gate.safetensors"


class TrainableFusionMixin:
    """For `DistillationTrainer`: `self.fusion` is the run's `FusionStrategy`; if it has trainable parameters,
    it is handled here as the Trainer handles the model."""

    fusion: torch.nn.Module | None = None

    @property
    def gate(self) -> torch.nn.Module | None:
        """The fusion strategy when it has trainable parameters (the learned gate, or one of yours), else None."""
        return self.fusion if self.fusion is not None and self.fusion.trainable else None

    # ---- the learned gate's parameters ----------------------------------------------------------

    def create_optimizer(self, model=None):
        """The parent's optimizer over the student, plus a parameter group for the gate.

        Args:
            model: Passed on to the parent (the model whose parameters it optimises; None: the trainer's).
        """
        optimizer = super().create_optimizer(model)
        if self.gate is not None:
            gate_params = list(self.gate.parameters())
            already_in = any(p is q for group in optimizer.param_groups for p in group["params"] for q in gate_params)
            if not already_in:
                self._broadcast_gate()
                lr = self.args.learning_rate if self.args.gate_learning_rate is None else self.args.gate_learning_rate
                optimizer.add_param_group({"params": gate_params, "lr": lr, "weight_decay": 0.0})
                # The training loop calls model.zero_grad(), which never reaches the gate's gradients.
                optimizer.register_step_post_hook(lambda *_: self.gate.zero_grad(set_to_none=True))
        return optimizer

    def _broadcast_gate(self) -> None:
        """Start every process from rank 0's gate, as DDP does for the wrapped model."""
        if self.accelerator.num_processes > 1:
            for param in self.gate.parameters():
                param.data.copy_(broadcast(param.data, from_process=0))

    def training_step(self, model, inputs, num_items_in_batch=None):
        """After the micro-batch that ends an accumulation, average the gate's gradients across processes.

        DDP all-reduces only the parameters of the module it wraps; the gate lives outside the student.

        Args:
            model: The student, as the parent's training loop passes it.
            inputs: The collated micro-batch.
            num_items_in_batch: The Trainer's count of labelled items over the accumulated batch, passed on.
        """
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.gate is not None and self.accelerator.sync_gradients and self.accelerator.num_processes > 1:
            grads = [p.grad for p in self.gate.parameters() if p.grad is not None]
            flat = reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
            offset = 0
            for grad in grads:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()
        return loss

    # ---- checkpoints --------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        """Write the gate into the checkpoint folder first, so a checkpoint never lacks it.

        Args:
            model: The student, passed on to the parent.
            trial: The hyperparameter-search trial (None outside a search); it picks the output folder, as in the
                parent.
        """
        if self.gate is not None and self.args.should_save:
            checkpoint_dir = os.path.join(
                self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            os.makedirs(checkpoint_dir, exist_ok=True)
            save_file(
                {k: v.contiguous().cpu() for k, v in self.gate.state_dict().items()},
                os.path.join(checkpoint_dir, GATE_WEIGHTS_NAME),
                metadata={"fusion": self.args.fusion},
            )
        super()._save_checkpoint(model, trial)

    def _clip_grad_norm(self, model):
        """Clip the student's and the gate's gradients together by `max_grad_norm`, as one model's would be.

        Args:
            model: The student (as wrapped for training), whose parameters are clipped with the gate's.
        """
        if self.gate is None:
            return super()._clip_grad_norm(model)
        parameters = [*model.parameters(), *self.gate.parameters()]
        return self.accelerator.clip_grad_norm_(parameters, self.args.max_grad_norm)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """The parent's `train`, with the fusion's weights restored from the checkpoint it resumes (the parent
        restores the model, optimizer and scheduler; the gate is none of them). Resuming with another fusion
        than the checkpoint's is refused before any work.

        Args:
            resume_from_checkpoint: A checkpoint folder, True for the last one in `output_dir`, or None / False: a
                fresh start.
            trial: The hyperparameter-search trial, passed on to the parent.
            **kwargs: Passed on to `Trainer.train`.
        """
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool) and checkpoint:  # as the parent resolves it; None: the parent refuses
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if checkpoint is not None and not isinstance(checkpoint, bool):
            self.load_fusion_weights(os.fspath(checkpoint))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _load_best_model(self) -> None:
        """The parent's `load_best_model_at_end`, then the best checkpoint's gate: evaluating or training on after it
        then uses the student and gate of the kept checkpoint, not that student with the last step's gate."""
        super()._load_best_model()
        if self.gate is not None and os.path.isfile(os.path.join(self.state.best_model_checkpoint, GATE_WEIGHTS_NAME)):
            self.load_fusion_weights(self.state.best_model_checkpoint)  # absent on another node: the parent warned

    def load_fusion_weights(self, checkpoint: str) -> None:
        """Load the gate of a checkpoint folder; refuse a folder that does not match this run's fusion.

        Args:
            checkpoint: The checkpoint folder (with `distill_gate.safetensors` when the run's fusion has parameters).
        """
        path = os.path.join(checkpoint, GATE_WEIGHTS_NAME)
        if self.gate is None and os.path.isfile(path):  # else torch's optimizer refuses with a param-group error
            raise ValueError(
                f"{checkpoint} was saved by a run whose fusion has parameters (it has "
                f"{GATE_WEIGHTS_NAME}); resume it with fusion={saved_fusion(path)!r}, not fusion={self.args.fusion!r}."
            )
        if self.gate is not None:
            if not os.path.isfile(path):
                raise ValueError(
                    f"{checkpoint} has no {GATE_WEIGHTS_NAME}: it was not saved by a fusion={self.args.fusion!r} run."
                )
            self.gate.load_state_dict(load_file(path, device=str(self.args.device)))


def saved_fusion(path: str) -> str:
    """The fusion that wrote a checkpoint's fusion weights (checkpoints from before it was recorded: the gate).

    Args:
        path: The checkpoint's `distill_gate.safetensors` file.
    """
    with safe_open(path, framework="pt") as handle:
        return (handle.metadata() or {}).get("fusion", "gating")
