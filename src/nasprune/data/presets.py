"""Task presets: the text columns, labels and metrics of each GLUE task.

Light on purpose (no pandas): the CLI lists the task names in its help.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskPreset:
    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] = ()  # empty for regression
    metrics: tuple[str, ...] = ("accuracy",)  # the first one is the task's headline metric
    label_column: str = "label"
    validation_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def metric(self) -> str:
        return self.metrics[0]


_NLI = ("entailment", "not_entailment")
PRESETS: dict[str, TaskPreset] = {
    p.name: p
    for p in [
        TaskPreset("rte", ("sentence1", "sentence2"), _NLI),
        TaskPreset("sst2", ("sentence",), ("negative", "positive")),
        TaskPreset("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                   ("f1", "accuracy")),
        TaskPreset("cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews",)),
        TaskPreset("stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman")),
        TaskPreset("qnli", ("question", "sentence"), _NLI),
        TaskPreset("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
                   ("f1", "accuracy")),
        TaskPreset("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                   validation_split="validation_matched"),
        TaskPreset("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
    ]
}
