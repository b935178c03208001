"""`DistillationTrainer`: a `transformers.Trainer` that distils stored teacher logits into the student.

It overrides only what distillation changes: the loss, the columns the Trainer keeps, and, for the
learned gate, where the gate's parameters live (optimizer, DDP gradient sync, checkpoints). Everything
else (evaluation, logging, saving the student, `accelerate launch`) is the parent's.
"""

from __future__ import annotations

import os
from typing import Any

import datasets
import torch
from accelerate.utils import broadcast, reduce
from safetensors.torch import load_file, save_file
from transformers import Trainer
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .card import trainer_card
from .collator import DistillationDataCollator
from .config import DistillationConfig
from .fusion import GatingNetwork, check_teacher_logits, fuse_logits
from .logits import check_label_values, read_metadata, validate_logit_dataset
from .losses import combine_kd_terms, kd_loss_terms
from .sampling import LengthGroupedSamplingMixin

GATE_WEIGHTS_NAME = "distill_gate.safetensors"


class DistillationTrainer(LengthGroupedSamplingMixin, Trainer):
    """Trains a student on `alpha * KL(fused teachers || student) * T^2 + (1 - alpha) * CE`.

    Batches carry `teacher_logits` (`[batch, n_teachers, n_labels]`, raw logits); any `datasets.Dataset`
    with such a column plus `input_ids`/`attention_mask`/`labels` trains as is, with the Trainer's default
    `remove_unused_columns=True`. Datasets are checked when the trainer is built (column present, one
    shape, finite values, the student's label space), so bad data fails before the first step.

    With `train_sampling_strategy="group_by_length"` the lengths come from the dataset's
    `length_column_name` column when it has one, and evaluation stays in row order (see
    `LengthGroupedSamplingMixin`). Under bf16/fp16 autocast, fusion, the gate and the loss run in float32.

    Eval splits without the teacher column are evaluated with cross-entropy only. With `fusion="gating"`
    a `GatingNetwork` trains alongside the student: it is in the optimizer, its gradients are averaged
    across processes, it is saved in every checkpoint (`distill_gate.safetensors`) and restored by
    `resume_from_checkpoint`, but it is never written into the student's `save_model` folder, which
    stays a plain `AutoModelForSequenceClassification` checkpoint.
    """

    # compute_loss returns a per-batch mean, so the parent divides it by the accumulation steps once.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: DistillationConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        **kwargs,
    ):
        if not isinstance(args, DistillationConfig):
            raise TypeError(f"DistillationTrainer needs args=DistillationConfig(...), got {type(args).__name__}.")
        if data_collator is None:
            data_collator = DistillationDataCollator(processing_class, args.teacher_logits_column)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.teacher_column = args.teacher_logits_column
        self.num_labels = self.model.config.num_labels
        n_teachers = self._check_teacher_data(train_dataset, "train", required=args.uses_teachers)
        eval_sets = eval_dataset.items() if isinstance(eval_dataset, dict) else [("eval", eval_dataset)]
        for name, eval_set in eval_sets:  # every eval set checked now, not at the first evaluation after training
            eval_teachers = self._check_teacher_data(eval_set, name, required=False)
            if n_teachers and eval_teachers and eval_teachers != n_teachers:
                raise ValueError(
                    f"The {name} dataset has {eval_teachers} teachers but the train dataset has {n_teachers}."
                )
            n_teachers = n_teachers or eval_teachers
        # The weights in use live on the trainer: the user's config is never written to (it may serve another run).
        self.fusion_weights = args.fusion_weights
        if args.fusion == "weighted" and self.fusion_weights is None and args.uses_teachers:
            self.fusion_weights = self._weights_from_metadata(train_dataset)
        if n_teachers:
            args.check_teacher_count(n_teachers, self.fusion_weights)
        self.gate = None
        if args.fusion == "gating" and args.uses_teachers:
            if not n_teachers:
                raise ValueError("fusion='gating' needs a dataset with a teacher column to know how many teachers.")
            hidden_size = self.model.config.hidden_size
            self.gate = GatingNetwork(hidden_size, n_teachers, args.gate_hidden_size).to(args.device)
        self._loss_term_sums: dict[str, torch.Tensor] = {}
        self._loss_term_steps = 0

    # ---- data ---------------------------------------------------------------------------------

    def _check_teacher_data(self, dataset, split: str, required: bool) -> int | None:
        """Validate a split's labels and teacher column up front; return its number of teachers (None if absent)."""
        if dataset is None:
            return None
        if isinstance(dataset, datasets.Dataset):
            check_label_values(dataset, self.num_labels, split, self.label_names)
        if isinstance(dataset, datasets.Dataset):
            if self.teacher_column not in dataset.column_names:
                if required:
                    raise ValueError(
                        f"The {split} dataset has no {self.teacher_column!r} column "
                        f"(columns: {dataset.column_names}). "
                        "Distillation with alpha > 0 needs teacher logits; set alpha=0 for plain fine-tuning."
                    )
                return None
            id2label = self.model.config.id2label
            label_names = [id2label[i] for i in range(self.num_labels)] if id2label else None
            validate_logit_dataset(dataset, self.teacher_column, self.num_labels, label_names)
            return len(dataset[0][self.teacher_column])
        # A streaming dataset's [0] is a column lookup, not a row: read its first row by iterating.
        is_stream = isinstance(dataset, (datasets.IterableDataset, torch.utils.data.IterableDataset))
        first_row = next(iter(dataset)) if is_stream or not hasattr(dataset, "__getitem__") else dataset[0]
        if self.teacher_column not in first_row:
            if required:
                raise ValueError(f"The {split} dataset's rows have no {self.teacher_column!r} key.")
            return None
        first = torch.as_tensor(first_row[self.teacher_column], dtype=torch.float32).unsqueeze(0)
        check_teacher_logits(first, self.num_labels)
        return first.shape[1]

    @staticmethod
    def _weights_from_metadata(dataset) -> list[float]:
        """`weighted` fusion without explicit weights uses the teachers' validation scores from the metadata."""
        metadata = read_metadata(dataset) if isinstance(dataset, datasets.Dataset) else None
        scores = metadata.validation_scores if metadata else []
        if not scores or any(score is None for score in scores):
            raise ValueError(
                "fusion='weighted' needs fusion_weights (the train dataset's metadata has no "
                "validation score for every teacher)."
            )
        return scores

    def _set_signature_columns_if_needed(self):
        """Keep the teacher column through `remove_unused_columns=True` (the model's forward never sees it)."""
        super()._set_signature_columns_if_needed()
        if self.teacher_column not in self._signature_columns:
            self._signature_columns.append(self.teacher_column)

    # ---- loss ---------------------------------------------------------------------------------

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        """Fuse the batch's teacher logits and apply `kd_loss`; CE only when the batch has no teachers.

        `num_items_in_batch` is accepted for the parent's signature and not used: the loss is a per-batch
        mean (see `loss_is_scaled_for_ga`).
        """
        inputs = dict(inputs)
        teacher_logits = inputs.pop(self.teacher_column, None)
        labels = inputs.pop(self.label_names[0] if self.label_names else "labels", None)
        if labels is not None and not model.training:  # e.g. GLUE test rows (-1): predicted, not scored
            labels = labels.masked_fill(labels < 0, -100)
        scheduled_alpha, temperature = self.current_alpha_and_temperature()
        alpha = scheduled_alpha if teacher_logits is not None else 0.0
        if teacher_logits is None and self.args.uses_teachers and model.training:
            raise ValueError(f"The training batch has no {self.teacher_column!r}; distillation needs teacher logits.")
        use_gate = self.gate is not None and alpha > 0
        outputs = model(**inputs, output_hidden_states=True) if use_gate else model(**inputs)
        student_logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        fused = None
        if alpha > 0:  # fusion checks shape and finiteness; kd_loss checks the label space against the student
            fused = self.fuse_teachers(teacher_logits.to(student_logits.device), outputs, labels)
        terms = kd_loss_terms(student_logits, fused, labels, temperature, alpha, self.args.label_smoothing_factor)
        loss = combine_kd_terms(terms, alpha)
        if model.training:
            self._record_loss_terms(terms)
            self._schedule_in_use = (scheduled_alpha, temperature)
        if use_gate:  # don't hand every layer's hidden states to evaluation's prediction gathering
            outputs = SequenceClassifierOutput(logits=student_logits)
        return (loss, outputs) if return_outputs else loss

    def fuse_teachers(self, teacher_logits: torch.Tensor, student_outputs, labels=None) -> torch.Tensor:
        """`[batch, n_teachers, n_labels]` -> `[batch, n_labels]` with the configured strategy.

        The gate reads the student's [CLS] state detached: it learns which teacher to trust for an input,
        but the student is not pushed to reshape its representation to make the gate's choice easier.
        Fusion runs in float32 even under mixed-precision autocast: fused targets feed the loss directly.
        """
        with torch.autocast(teacher_logits.device.type, enabled=False):
            teacher_logits = teacher_logits.float()
            if self.args.fusion == "gating":
                cls_hidden = student_outputs.hidden_states[-1][:, 0].detach().float()
                return self.gate(cls_hidden, teacher_logits)
            return fuse_logits(
                teacher_logits, self.args.fusion, self.fusion_weights, self.args.teacher_index, labels=labels
            )

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Without labels the parent calls the model directly, so the teacher column must not reach it."""
        if any(inputs.get(name) is None for name in self.label_names):
            inputs = {k: v for k, v in inputs.items() if k != self.teacher_column}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def _record_loss_terms(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            self._loss_term_sums[name] = self._loss_term_sums.get(name, 0.0) + value.detach()
        self._loss_term_steps += 1

    def current_alpha_and_temperature(self) -> tuple[float, float]:
        """alpha and T at this step under their schedules. Derived from the global step alone (not from state a
        resume could lose), so a resumed run continues the schedule where the interrupted one was."""
        progress = self.state.global_step / self.state.max_steps if self.state.max_steps else 0.0
        return self.args.alpha_at(progress), self.args.temperature_at(progress)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs get each loss term (`loss_kd`, `loss_ce`, this process's mean since the last log) and
        the current `alpha` and `temperature`."""
        if "loss" in logs:  # the values the last logged step trained with
            in_use = getattr(self, "_schedule_in_use", None) or self.current_alpha_and_temperature()
            logs["alpha"], logs["temperature"] = (round(value, 6) for value in in_use)
            for name, total in self._loss_term_sums.items():
                logs[f"loss_{name}"] = round(float(total) / max(self._loss_term_steps, 1), 6)
            self._loss_term_sums, self._loss_term_steps = {}, 0
        super().log(logs, start_time)

    # ---- the learned gate's parameters ----------------------------------------------------------

    def create_optimizer(self, model=None):
        """The parent's optimizer over the student, plus a parameter group for the gate."""
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

    # ---- the student's card ------------------------------------------------------------------------

    def create_model_card(self, **card_options) -> None:
        """Write the student's card to `output_dir/README.md`: its teachers (from the logit metadata), fusion,
        T, alpha, seed, the logit dataset (`dataset=`, a Hub id or name), and its last evaluation score.

        `trainer.push_to_hub()` calls this, so a user's own script publishes the card the recipes publish
        (the study adds GLUE's model-index and the baseline). Options: `language` ("en"), `license`, `tags`,
        `model_name`, `finetuned_from`, `dataset`; `Trainer.create_model_card`'s others are ignored.
        """
        if not self.is_world_process_zero():
            return
        card = trainer_card(self, **card_options)
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(os.path.join(self.args.output_dir, "README.md"))

    # ---- checkpoints --------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        """Write the gate into the checkpoint folder first, so a checkpoint never lacks it."""
        if self.gate is not None and self.args.should_save:
            checkpoint_dir = os.path.join(
                self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            os.makedirs(checkpoint_dir, exist_ok=True)
            save_file(
                {k: v.contiguous().cpu() for k, v in self.gate.state_dict().items()},
                os.path.join(checkpoint_dir, GATE_WEIGHTS_NAME),
            )
        super()._save_checkpoint(model, trial)

    def _clip_grad_norm(self, model):
        """Clip the student's and the gate's gradients together by `max_grad_norm`, as one model's would be."""
        if self.gate is None:
            return super()._clip_grad_norm(model)
        parameters = [*model.parameters(), *self.gate.parameters()]
        return self.accelerator.clip_grad_norm_(parameters, self.args.max_grad_norm)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        path = os.path.join(resume_from_checkpoint, GATE_WEIGHTS_NAME)
        if self.gate is None and os.path.isfile(path):  # else torch's optimizer refuses with a param-group error
            raise ValueError(
                f"{resume_from_checkpoint} was saved by a fusion='gating' run (it has {GATE_WEIGHTS_NAME}); resume "
                f"it with fusion='gating', not fusion={self.args.fusion!r}."
            )
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.gate is not None:
            if not os.path.isfile(path):
                raise ValueError(
                    f"{resume_from_checkpoint} has no {GATE_WEIGHTS_NAME}: it was not saved by a gating run."
                )
            self.gate.load_state_dict(load_file(path, device=str(self.args.device)))
