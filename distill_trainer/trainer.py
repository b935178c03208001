"""`DistillationTrainer`: a `transformers.Trainer` that distils stored teacher logits into the student.

It overrides only what distillation changes: the loss, the columns the Trainer keeps, and, for the
learned gate, where the gate's parameters live (optimizer, DDP gradient sync, checkpoints). Everything
else (evaluation, logging, saving the student, `accelerate launch`) is the parent's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import torch
from transformers import Trainer
from transformers.modeling_outputs import SequenceClassifierOutput

from .card import trainer_card
from .collator import ArrowRowsMixin, DistillationDataCollator
from .config import DistillationConfig
from .fitting import check_fits, temperatures_and_weights
from .fusion import FusionSetup, build_fusion, check_teacher_logits, fusion_strategy
from .kd_losses import build_kd_loss
from .live_teachers import prepare_live_teachers
from .losses import combine_kd_terms, kd_loss_terms
from .monitoring import StepMonitorMixin
from .sampling import LengthGroupedSamplingMixin
from .signals import (
    TeacherSignals,
    check_dense_split,
    check_eval_against_train,
    check_regression,
    check_strategies,
    check_strategy_inputs,
    check_token_split,
    is_causal_lm,
    on_host,
    weights_from_metadata,
)
from .token_fusion import mix_teachers
from .tokens import token_kd_terms
from .trainable_fusion import GATE_WEIGHTS_NAME, TrainableFusionMixin  # noqa: F401 (GATE_WEIGHTS_NAME: public)
from .vocabulary import student_tokenizer

logger = logging.getLogger(__name__)


class DistillationTrainer(StepMonitorMixin, TrainableFusionMixin, ArrowRowsMixin, LengthGroupedSamplingMixin, Trainer):
    """Trains a student on `alpha * KL(fused teachers || student) * T^2 + (1 - alpha) * CE` (for a one-output
    regression student, `alpha * MSE(student, fused teachers) + (1 - alpha) * MSE(student, label)`).

    Batches carry `teacher_logits` (`[batch, n_teachers, n_labels]`, raw logits); any `datasets.Dataset` with such
    a column plus `input_ids`/`attention_mask`/`labels` trains as is, with the default `remove_unused_columns=True`.
    Datasets are checked when the trainer is built (column, shape, finite values, the student's label space), so
    bad data fails before the first step. A step reads nothing from the device beyond what `Trainer` does.
    With `group_by_length` the lengths come from the `length_column_name` column when there is one, and evaluation
    stays in row order (`LengthGroupedSamplingMixin`). Under autocast, fusion, gate and loss run in float32.

    The fusion is a registered `FusionStrategy` (`fusion`, optionally blended toward `curriculum_fusion`); the
    trainer serves what it declares (labels, the student's hidden state, fitted weights). A strategy with
    parameters (`gating`, or yours) trains alongside the student: optimizer, gradients averaged across processes,
    every checkpoint (`distill_gate.safetensors`), `resume_from_checkpoint`; never the `save_model` folder, which
    stays a plain transformers checkpoint. Eval splits without the teacher column are scored on the labels only.

    Args:
        model: the student: an `AutoModelForSequenceClassification` (`num_labels=1`: regression) or an
            `AutoModelForCausalLM`, which distils per token from `attach_teacher_topk`'s columns.
        args: a `DistillationConfig` (a plain `TrainingArguments` is refused: it has no T, alpha or fusion).
        data_collator: default `DistillationDataCollator`, which pads text and carries the teacher columns.
        train_dataset: rows with the teacher column(s) (not needed at `alpha=0` or with `teacher_models`).
        eval_dataset: one split or a dict; with the teacher column `eval_loss` is the training objective (at its
            end values under schedules, `training_progress`). For causal LMs it is the Trainer's mean over rows of
            each eval batch's per-token mean, so it moves slightly with the eval batch size (batches of rows with
            few scored tokens weigh as much per row as others); the exact per-token value is the loss summed over
            every scored token, divided once.
        processing_class: the tokenizer (padding, and the top-k format's vocabulary check).
        teacher_models: live teachers run on each batch instead of stored columns (no gradient, eval mode,
            the student's device): online distillation, e.g. with data augmentation.
        **kwargs: passed to `transformers.Trainer` (`compute_metrics`, `callbacks`, ...).
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
        teacher_models=None,
        **kwargs,
    ):
        if not isinstance(args, DistillationConfig):
            raise TypeError(f"DistillationTrainer needs args=DistillationConfig(...), got {type(args).__name__}.")
        if kwargs.get("compute_loss_func") is not None:  # the Trainer would hand it the loss, never calling it here
            raise ValueError(
                "DistillationTrainer computes its own loss (alpha * KD + (1 - alpha) * CE): compute_loss_func is not "
                "used. Register a KD loss with register_kd_loss and pass kd_loss=<its name> in DistillationConfig."
            )
        if data_collator is None:
            token_labels = is_causal_lm(model) if model is not None else None
            data_collator = DistillationDataCollator(processing_class, args.teacher_logits_column, None, token_labels)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.teacher_column, self.num_labels = args.teacher_logits_column, self.model.config.num_labels
        self.token_level = is_causal_lm(self.model)
        if self.token_level:  # the Trainer counts the scored tokens of the accumulated batch for any causal student
            self.model_accepts_loss_kwargs = self._loss_shifts_labels = True  # (the model never gets loss kwargs)
        tokenizer = student_tokenizer(processing_class, self.data_collator, self.model) if self.token_level else None
        self.student_tokenizer = tokenizer  # its vocabulary must be the top-k columns' and live teachers'
        teachers = prepare_live_teachers(teacher_models, self.model, args.device, self.token_level, tokenizer)
        self.signals = TeacherSignals(self.teacher_column, self.token_level, teachers)
        regression = self.num_labels == 1 and not self.token_level
        self.kd = build_kd_loss(args.kd_loss, args.jsd_beta, tokens=self.token_level, regression=regression)
        n_teachers = self._check_split(train_dataset, "train", required=args.uses_teachers and not teachers)
        eval_sets = eval_dataset.items() if isinstance(eval_dataset, dict) else [("eval", eval_dataset)]
        self.stored_teachers = n_teachers  # the train set's, which an eval split's stored teachers must match
        for name, eval_set in eval_sets:  # every eval set checked now, not at the first evaluation after training
            eval_teachers = self._check_eval_split(eval_set, name, n_teachers)
            n_teachers = n_teachers or eval_teachers
        self.n_teachers = n_teachers = len(teachers) or n_teachers
        self.fusion = self.curriculum = None  # the strategies, built for this data and student
        self.fusion_weights, self.fitted_weights, self.teacher_temperatures = args.fusion_weights, None, None
        if args.uses_teachers:
            self._build_fusion(n_teachers, train_dataset, eval_dataset)
        self._loss_term_sums, self._loss_term_steps, self._first_nonfinite_step = {}, 0, {}  # StepMonitorMixin's

    # ---- data ---------------------------------------------------------------------------------

    def _check_split(self, dataset, split: str, required: bool) -> int | None:
        """A split's labels and teachers, checked up front (`signals.py`); its number of stored teachers or None.

        Args:
            dataset: The split (a `datasets.Dataset`, a streamed one, or None).
            split: Its name (`train`, `eval`, or the eval dict's key), for error messages.
            required: The split must carry stored teachers (the train set when alpha > 0 and no teachers are live).
        """
        if self.token_level:
            return check_token_split(
                dataset, split, self.model, self.student_tokenizer, self.signals.teachers, required
            )
        return check_dense_split(dataset, split, self.teacher_column, self.model, self.label_names, required)

    def _check_eval_split(self, dataset, split: str, n_teachers: int | None) -> int | None:
        """An eval split checked as `_check_split` does, and against the train set where its stored teachers are
        read (`check_eval_against_train`); its number of stored teachers or None.

        Args:
            dataset: The eval split.
            split: Its name, for error messages.
            n_teachers: The train set's number of stored teachers (None: not known).
        """
        eval_teachers = self._check_split(dataset, split, required=False)
        if self.args.uses_teachers and not self.signals.teachers:  # the stored teachers are read
            check_eval_against_train(dataset, split, eval_teachers, n_teachers, self.train_dataset)
        return eval_teachers

    def _build_fusion(self, n_teachers: int, train_dataset, eval_dataset) -> None:
        """Serve what the configured strategies declare they need, then build them. The weights and temperatures
        in use live on the trainer: the user's config is never written to (it may serve another run).

        Args:
            n_teachers: The number of teachers (stored or live).
            train_dataset: The train set, whose metadata gives `weighted`'s default weights and stored fits.
            eval_dataset: One split or a dict, fitted on when the train set's metadata has no fits.
        """
        args = self.args
        names = [name for name in (args.fusion, args.curriculum_fusion) if name]
        classes = [fusion_strategy(name) for name in names]
        check_strategies(classes, self.token_level, bool(self.signals.teachers), args.calibrate_teachers)
        check_strategy_inputs(classes, self.model, self.token_level, train_dataset, self.label_names)
        if "weighted" in names and self.fusion_weights is None:
            if self.signals.teachers:  # the metadata's scores are its stored teachers', not these
                raise ValueError("'weighted' with teacher_models needs fusion_weights (one per live teacher).")
            self.fusion_weights = weights_from_metadata(train_dataset)
        if self.num_labels == 1:  # regression: only what means something for scalar predictions
            check_regression(classes, args)
        fit_weights = any(cls.fits_weights for cls in classes)
        if args.calibrate_teachers or fit_weights:
            self.teacher_temperatures, self.fitted_weights = temperatures_and_weights(
                train_dataset, eval_dataset, self.teacher_column, args.calibrate_teachers, fit_weights
            )
            check_fits(self.teacher_temperatures, self.fitted_weights, n_teachers)
            if self.teacher_temperatures is not None:  # on the device once, not copied there every step
                self.temperature_divisor = torch.tensor(self.teacher_temperatures, device=args.device)[None, :, None]
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

    def _set_signature_columns_if_needed(self):
        """Keep the teacher columns through `remove_unused_columns=True` (the model's forward never sees them);
        with live teachers, stored ones are dropped."""
        super()._set_signature_columns_if_needed()
        for column in [] if self.signals.teachers else self.signals.columns:
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    # ---- loss ---------------------------------------------------------------------------------

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        """Ask the batch's teacher signal, fuse it, apply the loss; CE only when the batch has no teachers.

        Classification: `num_items_in_batch` is not used, the loss is a per-batch mean (see
        `loss_is_scaled_for_ga`). Causal LMs: `compute_token_loss`.

        Args:
            model: The student (wrapped by accelerate where it is).
            inputs: The collated batch: the model's inputs, the labels, and the teacher columns (dense logits,
                per-token top-k), which are taken out before the model sees the batch.
            return_outputs: Also return the student's outputs (evaluation needs its logits).
            num_items_in_batch: The Trainer's count of labelled tokens over the accumulated batch (causal LMs).

        Returns:
            The loss, or `(loss, outputs)` with `return_outputs`.
        """
        inputs = dict(inputs)
        labels = inputs.pop(self.label_names[0] if self.label_names else "labels", None)
        teacher_logits = self.signals.from_batch(inputs)
        scheduled_alpha, temperature = self.current_alpha_and_temperature()
        alpha = scheduled_alpha if teacher_logits is not None else 0.0
        if teacher_logits is None and self.args.uses_teachers and model.training:
            raise ValueError(f"The training batch has no teachers ({self.signals.columns}); distillation needs them.")
        if self.token_level:
            args = (temperature, alpha, scheduled_alpha, return_outputs, num_items_in_batch)
            return self.compute_token_loss(model, inputs, labels, teacher_logits, *args)
        if labels is not None and not model.training and self.num_labels > 1:  # GLUE test rows (-1): not scored
            labels = labels.masked_fill(labels < 0, -100)
        use_hidden = alpha > 0 and any(strategy.needs_hidden_state for strategy in self.built_strategies)
        outputs = model(**inputs, output_hidden_states=True) if use_hidden else model(**inputs)
        student_logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        fused = None
        if alpha > 0:  # fusion checks shape and finiteness; kd_loss checks the label space against the student
            fused = self.fuse_teachers(teacher_logits.to(student_logits.device), outputs, labels)
        terms = kd_loss_terms(
            student_logits, fused, labels, temperature, alpha, self.args.label_smoothing_factor, self.kd.dense
        )
        loss = combine_kd_terms(terms, alpha)
        if model.training:
            self._check_finite(fused, terms)
            self._record_loss_terms(terms)
            self._schedule_in_use = (scheduled_alpha, temperature, self.curriculum_weight())
        if use_hidden:  # don't hand every layer's hidden states to evaluation's prediction gathering
            outputs = SequenceClassifierOutput(logits=student_logits)
        return (loss, outputs) if return_outputs else loss

    def compute_token_loss(self, model, inputs, labels, signal, temperature, alpha, scheduled, return_outputs, count):
        """`alpha * KD + (1 - alpha) * CE` per token, summed over the positions with a next-token label and divided by
        `num_items_in_batch` (their count over the accumulated batch and all processes) where the Trainer passes it,
        so that accumulation and DDP reproduce the big batch; else a per-batch mean (divided by the Trainer).

        Args:
            model: The student causal LM.
            inputs: Its inputs (the teacher columns already taken out).
            labels: Next-token labels `[batch, seq]`, -100 where nothing is learnt (prompts, padding).
            signal: The batch's teachers (`TokenSignal`: stored top-k or live teachers' logits).
            temperature: T at this step; `alpha`: the KD weight at this step (0 without teachers);
                `scheduled`: alpha as scheduled, logged even where the batch has no teachers.
            return_outputs: Also return the student's outputs.
            count: `num_items_in_batch` (None: a per-batch mean).
        """
        outputs = model(**inputs)
        self.loss_is_scaled_for_ga = count is not None
        scale = self.accelerator.num_processes if count is not None and self.args.average_tokens_across_devices else 1
        fused = None
        if alpha > 0:  # a top-k's tail spreads over the student's vocabulary (min_entropy, confidence)
            fused = self.fuse_token_teachers(dataclasses.replace(signal, vocab_size=outputs.logits.shape[-1]), labels)
        args = (temperature, alpha, self.args.label_smoothing_factor, self.kd.divergence, count)
        terms = {name: value * scale for name, value in token_kd_terms(outputs.logits, fused, labels, *args).items()}
        if model.training:  # logged as per-token means (`count` spans the accumulated micro-batches)
            self._check_finite(None, terms)
            steps = self.current_gradient_accumulation_steps if count is not None else 1
            self._record_loss_terms({name: value * steps for name, value in terms.items()})
            self._schedule_in_use = (scheduled, temperature, self.curriculum_weight())
        loss = combine_kd_terms(terms, alpha)
        return (loss, outputs) if return_outputs else loss

    def fuse_token_teachers(self, signal, labels):
        """Per-token teachers -> `(ids or None, log-probabilities)` `[batch, seq, m]`: mixed per token with the
        strategy's `token_weights`, blended toward `curriculum_fusion`'s weights over training.

        Args:
            signal: The batch's teachers (`TokenSignal`).
            labels: Next-token labels, for strategies that weigh teachers by the gold token (`confidence`).
        """
        weights = self.fusion.token_weights(signal, labels)
        if self.curriculum is not None:
            blend = self.curriculum_weight()
            weights = (1.0 - blend) * weights + blend * self.curriculum.token_weights(signal, labels)
        return mix_teachers(signal, weights)

    def fuse_teachers(self, teacher_logits: torch.Tensor, student_outputs, labels=None) -> torch.Tensor:
        """`[batch, n_teachers, n_labels]` -> `[batch, n_labels]`: calibrated teachers (`calibrate_teachers`), fused
        by `fusion`, moved linearly toward `curriculum_fusion`'s target over training when one is set.

        Strategies that read the student's hidden state get its [CLS] state detached: the gate learns which
        teacher to trust for an input, but the student is not pushed to reshape its representation to make the
        gate's choice easier. Fusion runs in float32 even under mixed-precision autocast: fused targets feed
        the loss directly.

        Args:
            teacher_logits: `[batch, n_teachers, n_labels]` raw teacher logits at T = 1.
            student_outputs: The student's outputs (their hidden states feed the gate).
            labels: The batch's labels, for strategies that weigh teachers by the gold class (`confidence`).
        """
        if on_host(teacher_logits):  # checked with the data; a device tensor would cost a sync per step
            check_teacher_logits(teacher_logits)
        with torch.autocast(teacher_logits.device.type, enabled=False):
            teacher_logits = teacher_logits.float()
            if self.teacher_temperatures is not None:
                teacher_logits = teacher_logits / self.temperature_divisor
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
        the interrupted one was. All micro-batches of an accumulated step share it. Evaluation uses the end values:
        its loss then compares across steps (`load_best_model_at_end` and early stopping on `eval_loss`)."""
        if not self.model.training:
            return 1.0
        last = self.state.max_steps - 1
        return min(self.state.global_step / last, 1.0) if last > 0 else 0.0

    @property
    def built_strategies(self) -> list:
        """The fusion strategies this run built: `fusion`, and the curriculum's target where there is one."""
        return [strategy for strategy in (self.fusion, self.curriculum) if strategy is not None]

    def curriculum_weight(self) -> float:
        """How far the fused target has moved from `fusion` to `curriculum_fusion`."""
        return self.training_progress()

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """The parent's `evaluate`; a split given here is checked as the constructor checks its own.

        Args:
            eval_dataset: A split, a dict of them, a key of the trainer's eval dict, or None (the trainer's).
            ignore_keys: Output keys to leave out, as in the parent.
            metric_key_prefix: The metrics' prefix, as in the parent; the split's name in error messages.
        """
        checked = self.eval_dataset.values() if isinstance(self.eval_dataset, dict) else [self.eval_dataset]
        given = eval_dataset is not None and not isinstance(eval_dataset, (str, dict))
        if given and all(eval_dataset is not split for split in checked):  # not one the constructor checked
            self._check_eval_split(eval_dataset, metric_key_prefix, self.stored_teachers or self.n_teachers)
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The parent's prediction step; without labels it calls the model directly, so the teacher columns are
        taken out first (the model would refuse arguments it does not know). Rows without labels still get a loss
        where it needs none: a classifier at alpha = 1 with teachers (KD alone, e.g. an unlabelled transfer set).

        Args:
            model: The student.
            inputs: The collated batch.
            prediction_loss_only: Return the loss only.
            ignore_keys: Output keys to leave out of the logits.
        """
        if any(inputs.get(name) is None for name in self.label_names):
            if self._loss_needs_no_labels(inputs):
                with torch.no_grad(), self.compute_loss_context_manager():
                    loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
                return loss.detach(), None if prediction_loss_only else logits.detach(), None
            inputs = {k: v for k, v in inputs.items() if k not in self.signals.columns}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    def _loss_needs_no_labels(self, inputs) -> bool:
        """Whether an unlabelled batch still has a loss: a classifier at alpha = 1 (KD alone) whose batch has
        teachers and whose fusion does not weigh them by the gold label.

        Args:
            inputs: The collated batch, without labels.
        """
        has_teachers = self.signals.teachers or inputs.get(self.teacher_column) is not None
        needs_labels = self.token_level or any(strategy.needs_labels for strategy in self.built_strategies)
        return bool(has_teachers) and not needs_labels and self.current_alpha_and_temperature()[0] == 1

    def current_alpha_and_temperature(self) -> tuple[float, float]:
        """alpha and T at this step under their schedules (see `training_progress`)."""
        progress = self.training_progress()
        return self.args.alpha_at(progress), self.args.temperature_at(progress)

    # ---- the student's card ------------------------------------------------------------------------

    def create_model_card(self, **card_options) -> None:
        """Write the student's card to `output_dir/README.md`: its teachers (from the logit metadata), fusion,
        T, alpha, seed, the logit dataset (`dataset=`, a Hub id or name), and its last evaluation score.

        `trainer.push_to_hub()` calls this, so a user's own script publishes the card the recipes publish
        (the study adds GLUE's model-index and the baseline).

        Args:
            **card_options: `language` ("en"), `license`, `tags`, `model_name`, `finetuned_from`, `dataset`;
                `Trainer.create_model_card`'s others are ignored.
        """
        if not self.is_world_process_zero():
            return
        card = trainer_card(self, **card_options)
        os.makedirs(self.args.output_dir, exist_ok=True)
        card.save(os.path.join(self.args.output_dir, "README.md"))
