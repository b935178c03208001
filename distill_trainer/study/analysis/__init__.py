"""The study's analyses as functions over a logit dataset and student predictions (numpy in, tables out).

- `per_example`: teacher confidence, agreement regions, failure categories (one validation split).
- `stats`: gap closed, multi-teacher advantage, multi-seed mean / std / 95% CI, paired bootstrap.
- `plots`: the PNG figures; `report`: collects a study's runs and writes tables, plots and REPORT.md.
"""

from .per_example import (
    AGREEMENT_REGIONS,
    FAILURE_CATEGORIES,
    accuracy_by_region,
    agreement_regions,
    failure_categories,
    failure_table,
    teacher_confidence,
)
from .stats import aggregate_seeds, gap_closed, gap_table, multi_teacher_advantage, paired_bootstrap

__all__ = [
    "AGREEMENT_REGIONS",
    "FAILURE_CATEGORIES",
    "accuracy_by_region",
    "agreement_regions",
    "failure_categories",
    "failure_table",
    "teacher_confidence",
    "aggregate_seeds",
    "gap_closed",
    "gap_table",
    "multi_teacher_advantage",
    "paired_bootstrap",
]
