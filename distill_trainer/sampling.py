"""Length-grouped training batches that keep the accuracy of random ones, and evaluation in row order.

Padding is most of the compute when rows of very different lengths share a batch (SST-2: rows of 13
tokens on average, padded to the longest of a random batch). Grouping rows by length removes it, but
transformers' grouping also changes what a batch is a sample of, and reorders `predict`'s output; this
module keeps the speed without either.
"""

from __future__ import annotations

import datasets
import torch
from torch.utils.data import SequentialSampler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import has_length


class ShuffledLengthGroupedSampler(LengthGroupedSampler):
    """Batches of rows of similar length, drawn from small random groups, in random order.

    transformers' `LengthGroupedSampler` sorts groups of up to 50 batches by length, longest first. With
    such large groups every batch holds rows of nearly one length, and on the demo's setting (2,000 SST-2
    rows, single MiniLM teacher, 9 runs against 6) that cost about 1.1 points of validation accuracy against
    a random sampler; groups of `group_batches=8` batches stayed within one seed sd of random batches while
    still removing most of the padding (docs/performance.md). The batches then come in random order, so an
    epoch does not sweep from long rows to short ones group after group.

    Args:
        batch_size: rows per batch.
        lengths: each row's length, in row order.
        group_batches: how many batches one sorted group holds (fewer: closer to random batches, more padding).
        generator: the torch generator that draws groups and batch order (the Trainer's, for reproducibility).
    """

    def __init__(self, batch_size: int, lengths: list[int], group_batches: int = 8, generator=None):
        super().__init__(batch_size, lengths=lengths, generator=generator)
        self.group_batches = group_batches

    def __iter__(self):
        indices = get_length_grouped_indices(self.lengths, self.batch_size, self.group_batches, self.generator)
        batches = [indices[start : start + self.batch_size] for start in range(0, len(indices), self.batch_size)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([index for position in order for index in batches[position]])


class LengthGroupedSamplingMixin:
    """`train_sampling_strategy="group_by_length"` from a precomputed length column, evaluation in row order.

    Mixed into a `Trainer`, it fixes two things the parent does with length grouping. The parent drops
    unused columns (the `length_column_name` column among them) before it builds the sampler, so it
    measures every row's length by reading the whole dataset; here the lengths come from the column of
    the dataset as given (`tokenizer(..., return_length=True)` makes it). The parent also groups
    evaluation batches by length, so `predict` returns predictions in another order than the rows; here
    evaluation keeps the rows' order. Batches come from `ShuffledLengthGroupedSampler` with groups of
    `length_group_batches` batches (set it on a subclass to trade accuracy for less padding).

    Attributes:
        length_group_batches: batches per sorted group of `ShuffledLengthGroupedSampler` (8).
    """

    length_group_batches = 8

    def _get_train_sampler(self, train_dataset=None):
        """A `ShuffledLengthGroupedSampler` over the train set's stored lengths under `group_by_length`, else the
        parent's sampler.

        Args:
            train_dataset: The dataset the loader is built for; one whose length differs from `self.train_dataset`'s
                (not the train set as given) gets the parent's sampler.
        """
        dataset = self.train_dataset
        if (
            self.args.train_sampling_strategy != "group_by_length"
            or not isinstance(dataset, datasets.Dataset)
            or (train_dataset is not None and len(train_dataset) != len(dataset))
        ):
            return super()._get_train_sampler(train_dataset)
        if self.args.length_column_name in dataset.column_names:
            lengths = dataset[self.args.length_column_name][:]
        elif "input_ids" in dataset.column_names:  # one columnar read, not a walk over the rows
            lengths = [len(ids) for ids in dataset["input_ids"][:]]
        else:
            return super()._get_train_sampler(train_dataset)
        return ShuffledLengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths=lengths,
            group_batches=self.length_group_batches,
        )

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation in row order (a `SequentialSampler`); None without a length or with several processes.

        Args:
            eval_dataset: The evaluation split, or None.
        """
        if eval_dataset is None or not has_length(eval_dataset) or self.args.world_size > 1:
            return None  # several processes: accelerate shards in order and the gather restores it
        return SequentialSampler(eval_dataset)
