"""`DistillationTrainer`: a `transformers.Trainer` that distils stored teacher logits into the student.

It overrides only what distillation changes: the loss, the columns the Trainer keeps, and, for the
learned gate, where the gate's parameters live (optimizer, DDP gradient sync, checkpoints). Everything
else (evaluation, logging, saving the student, `accelerate launch`) is the parent's.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import datasets
import torch
from transformers import Trainer
from transformers.modeling_outputs import SequenceClassifierOutput

from .card import trainer_card
from .collator import DistillationDataCollator
from .config import DistillationConfig
from .fitting import check_fits, temperatures_and_weights, weights_from_metadata
from .fusion import FusionSetup, build_fusion, check_teacher_logits, fusion_strategy
from .labels import check_label_values
from .logits import validate_logit_dataset
from .losses import combine_kd_terms, kd_loss_terms
from .nonfinite import NonFiniteGuardMixin
from .sampling import LengthGroupedSamplingMixin
from .trainable_fusion import GATE_WEIGHTS_NAME, TrainableFusionMixin  # noqa: F401 (GATE_WEIGHTS_NAME: public)

logger = logging.getLogger(__name__)


class DistillationTrainer(NonFiniteGuardMixin, TrainableFusionMixin, LengthGroupedSamplingMixin, Trainer):
    """Trains a student on `alpha * KL(fused teachers || student) * T^2 + (1 - alpha) * CE` (for a one-output
    regression student, `alpha * MSE(student, fused teachers) + (1 - alpha) * MSE(student, label)`).

    Batches carry `teacher_logits` (`[batch, n_teachers, n_labels]`, raw logits); any `datasets.Dataset`
    with such a column plus `input_ids`/`attention_mask`/`labels` trains as is, with the Trainer's default
    `remove_unused_columns=True`. Datasets are checked when the trainer is built (column present, one
    shape, finite values, the student's label space), so bad data fails before the first step.

    With `train_sampling_strategy="group_by_length"` the lengths come from the dataset's
    `length_column_name` column when it has one, and evaluation stays in row order (see
    `LengthGroupedSamplingMixin`). Under bf16/fp16 autocast, fusion, the gate and the loss run in float32.

    The fusion is a registered `FusionStrategy` (`fusion`, optionally blended toward `curriculum_fusion`);
    the trainer serves what it declares it needs (labels, the student's hidden state, weights fitted on
    validation logits). A strategy with parameters (`fusion="gating"`'s `GatingNetwork`, or one of yours)
    trains alongside the student: it is in the optimizer, its gradients are averaged across processes, it
    is saved in every checkpoint (`distill_gate.safetensors`) and restored by `resume_from_checkpoint`, but
    it is never written into the student's `save_model` folder, which stays a plain
    `AutoModelForSequenceClassification` checkpoint. Eval splits without the teacher column are evaluated
    on the labels only.
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
        self.fusion = self.curriculum = None  # the strategies, built for this data and student
        self.fusion_weights, self.fitted_weights, self.teacher_temperatures = args.fusion_weights, None, None
        if args.uses_teachers:
            self._build_fusion(n_teachers, train_dataset, eval_dataset)
        self._loss_term_sums: dict[str, torch.Tensor] = {}
        self._loss_term_steps = 0
        self._first_nonfinite_step: dict[str, torch.Tensor] = {}

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

    def _build_fusion(self, n_teachers: int, train_dataset, eval_dataset) -> None:
        """Serve what the configured strategies declare they need, then build them. The weights and temperatures
        in use live on the trainer: the user's config is never written to (it may serve another run)."""
        args = self.args
        names = [name for name in (args.fusion, args.curriculum_fusion) if name]
        classes = [fusion_strategy(name) for name in names]
        if "weighted" in names and self.fusion_weights is None:
            self.fusion_weights = weights_from_metadata(train_dataset)
        if self.num_labels == 1:  # regression: only what means something for scalar predictions
            self._check_regression(classes)
        needs_labels = [cls.name for cls in classes if cls.needs_labels]
        if needs_labels and isinstance(train_dataset, datasets.Dataset):
            if not {"label", "labels", *(self.label_names or [])} & set(train_dataset.column_names):
                raise ValueError(
                    f"fusion {needs_labels[0]!r} weighs teachers by the gold label: the train set has none."
                )
        fit_weights = any(cls.fits_weights for cls in classes)
        if args.calibrate_teachers or fit_weights:
            self.teacher_temperatures, self.fitted_weights = temperatures_and_weights(
                train_dataset, eval_dataset, self.teacher_column, args.calibrate_teachers, fit_weights
            )
            check_fits(self.teacher_temperatures, self.fitted_weights, n_teachers)
        setup = FusionSetup(
            n_teachers=n_teachers,
            hidden_size=getattr(self.model.config, "hidden_size", None),
            weights=self.fusion_weights,
            teacher_index=args.teacher_index,
            gate_hidden_size=args.gate_hidden_size,
            fitted_weights=self.fitted_weights,
        )
        self.fusion = build_fusion(args.fusion, setup).to(args.device)
        if self.fusion.fits_weights:  # `fusion_weights` reports the weights `fusion` uses
            self.fusion_weights = self.fitted_weights
        if args.curriculum_fusion:
            self.curriculum = build_fusion(args.curriculum_fusion, setup).to(args.device)
            for option, strategy in (("fusion", self.fusion), ("curriculum_fusion", self.curriculum)):
                if any(True for _ in strategy.parameters()):  # the blend is not trained: they would stay as built
                    raise ValueError(
                        f"{option}={strategy.name!r} has parameters, and a curriculum cannot train them; choose a "
                        "strategy without parameters for a curriculum, or train this one on its own."
                    )

    def _check_regression(self, classes) -> None:
        for cls in classes:
            if not cls.supports_regression:
                raise ValueError(
                    f"fusion={cls.name!r} does not apply to regression (num_labels=1): {cls.regression_hint}."
                )
        if self.args.calibrate_teachers:
            raise ValueError(
                "calibrate_teachers does not apply to regression (num_labels=1): temperature scaling calibrates "
                "class probabilities. Use fusion='fitted' to weigh the teachers."
            )
        if self.args.label_smoothing_factor > 0:
            raise ValueError("label_smoothing_factor does not apply to regression (num_labels=1); set it to 0.")

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
        if labels is not None and not model.training and self.num_labels > 1:  # GLUE test rows (-1): not scored
            labels = labels.masked_fill(labels < 0, -100)
        scheduled_alpha, temperature = self.current_alpha_and_temperature()
        alpha = scheduled_alpha if teacher_logits is not None else 0.0
        if teacher_logits is None and self.args.uses_teachers and model.training:
            raise ValueError(f"The training batch has no {self.teacher_column!r}; distillation needs teacher logits.")
        strategies = [strategy for strategy in (self.fusion, self.curriculum) if strategy is not None]
        use_hidden = alpha > 0 and any(strategy.needs_hidden_state for strategy in strategies)
        outputs = model(**inputs, output_hidden_states=True) if use_hidden else model(**inputs)
        student_logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        fused = None
        if alpha > 0:  # fusion checks shape and finiteness; kd_loss checks the label space against the student
            fused = self.fuse_teachers(teacher_logits.to(student_logits.device), outputs, labels)
        terms = kd_loss_terms(student_logits, fused, labels, temperature, alpha, self.args.label_smoothing_factor)
        loss = combine_kd_terms(terms, alpha)
        if model.training:
            self._check_finite(fused, terms)
            self._record_loss_terms(terms)
            self._schedule_in_use = (scheduled_alpha, temperature, self.curriculum_weight())
        if use_hidden:  # don't hand every layer's hidden states to evaluation's prediction gathering
            outputs = SequenceClassifierOutput(logits=student_logits)
        return (loss, outputs) if return_outputs else loss

    def fuse_teachers(self, teacher_logits: torch.Tensor, student_outputs, labels=None) -> torch.Tensor:
        """`[batch, n_teachers, n_labels]` -> `[batch, n_labels]`: calibrated teachers (`calibrate_teachers`), fused
        by `fusion`, moved linearly toward `curriculum_fusion`'s target over training when one is set.

        Strategies that read the student's hidden state get its [CLS] state detached: the gate learns which
        teacher to trust for an input, but the student is not pushed to reshape its representation to make the
        gate's choice easier. Fusion runs in float32 even under mixed-precision autocast: fused targets feed
        the loss directly.
        """
        check_teacher_logits(teacher_logits)
        with torch.autocast(teacher_logits.device.type, enabled=False):
            teacher_logits = teacher_logits.float()
            if self.teacher_temperatures is not None:
                teacher_logits = teacher_logits / teacher_logits.new_tensor(self.teacher_temperatures)[None, :, None]
            hidden = None
            if getattr(student_outputs, "hidden_states", None) is not None:
                hidden = student_outputs.hidden_states[-1][:, 0].detach().float()
            fused = self.fusion.fuse(teacher_logits, labels=labels, hidden_state=hidden)
            if self.curriculum is None:
                return fused
            weight = self.curriculum_weight()
            toward = self.curriculum.fuse(teacher_logits, labels=labels, hidden_state=hidden)
            return (1.0 - weight) * fused + weight * toward

    def training_progress(self) -> float:
        """Where the optimizer step being computed lies between the first (0) and the last (1): what the schedules
        and the curriculum follow, so the first step trains with the start values and the last with exactly the
        end values (`alpha_end`, `temperature_end`, the curriculum's target); a one-step run uses the start values.
        Derived from the global step alone (not from state a resume could lose), so a resumed run continues where
        the interrupted one was. All micro-batches of an accumulated step share it."""
        last = self.state.max_steps - 1
        return min(self.state.global_step / last, 1.0) if last > 0 else 0.0

    def curriculum_weight(self) -> float:
        """How far the fused target has moved from `fusion` to `curriculum_fusion`."""
        return self.training_progress()

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
        """alpha and T at this step under their schedules (see `training_progress`)."""
        progress = self.training_progress()
        return self.args.alpha_at(progress), self.args.temperature_at(progress)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs get each loss term (`loss_kd`, `loss_ce`, this process's mean since the last log) and
        the current `alpha` and `temperature`."""
        self._raise_on_nonfinite()
        if "loss" in logs:  # the values the last logged step trained with
            in_use = getattr(self, "_schedule_in_use", None) or (
                *self.current_alpha_and_temperature(),
                self.curriculum_weight(),
            )
            logs["alpha"], logs["temperature"] = (round(value, 6) for value in in_use[:2])
            if self.curriculum is not None:
                logs["curriculum_weight"] = round(in_use[2], 6)
            for name, total in self._loss_term_sums.items():
                logs[f"loss_{name}"] = round(float(total) / max(self._loss_term_steps, 1), 6)
            self._loss_term_sums, self._loss_term_steps = {}, 0
        super().log(logs, start_time)

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
