"""Distillation from a fixed teacher: one loss for super-network training and for recovery.

The teacher is the standard fine-tuned model (frozen, eval mode). The student is a
sub-network of it (through ``Supernet.use()``) or an extracted copy. The loss is

    logits_weight * KL(teacher || student) at temperature T, times T^2   (MSE for regression)
  + hidden_weight * mean over layers of the MSE between layer outputs   (real tokens only)
  + labels_weight * the task loss on the labels

The hidden size is never pruned, so layer outputs compare without a projection; a removed
layer passes its input on, so layer ``i`` of the student is compared with layer ``i`` of
the teacher at every position. Layer outputs are captured by forward hooks on the
encoder's layer list (whatever module sits there, including the stand-in of a removed
layer), not through ``output_hidden_states``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nasprune.data.io import IGNORE_LABEL
from nasprune.errors import NaspruneError


def logits_loss(student: torch.Tensor, teacher: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened probabilities, times T^2 (Hinton et
    al. 2015), averaged over examples; for one output (regression) the mean squared error
    between the two predictions. ``teacher`` is treated as a constant."""
    teacher = teacher.detach().to(student.device)
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    if student.shape[-1] == 1:
        return F.mse_loss(student.float(), teacher.float())
    t = float(temperature)
    log_p = F.log_softmax(student.float() / t, dim=-1)
    log_q = F.log_softmax(teacher.float() / t, dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * t * t


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor],
                attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers of the mean squared error per hidden unit at real (unpadded) tokens."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student layers vs {len(teacher)} teacher layers")
    device = student[0].device  # the teacher's layer outputs may be on another device
    mask = attention_mask.to(device, torch.float32).unsqueeze(-1)
    count = mask.sum() * student[0].shape[-1]
    total = torch.zeros((), device=device)
    for s, t in zip(student, teacher):
        total = total + (((s.float() - t.detach().to(device).float()) ** 2) * mask).sum() / count
    return total / len(student)


@contextmanager
def layer_outputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the output hidden states of every encoder layer during the next forward."""
    from nasprune.core.families.base import get_adapter

    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook) for layer in get_adapter(model).layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Targets:
    """What the teacher says about one batch."""

    logits: torch.Tensor
    hidden: list[torch.Tensor] | None = None


@dataclass
class DistillLoss:
    """Weights of the three terms (see the module docstring) and the temperature."""

    temperature: float = 2.0
    logits_weight: float = 1.0
    hidden_weight: float = 0.0
    labels_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise NaspruneError("distillation temperature must be positive")
        weights = (self.logits_weight, self.hidden_weight, self.labels_weight)
        if min(weights) < 0 or not sum(weights) > 0:
            raise NaspruneError("distillation weights must be >= 0 and not all 0")

    @property
    def needs_hidden(self) -> bool:
        return self.hidden_weight > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @torch.no_grad()
    def targets(self, teacher: nn.Module, batch: dict) -> Targets:
        """The frozen teacher's logits (and layer outputs when the loss uses them), on the
        teacher's device."""
        from nasprune.core.models import model_device, model_inputs

        inputs = model_inputs(batch, model_device(teacher))
        if not self.needs_hidden:
            return Targets(teacher(**inputs).logits)
        with layer_outputs(teacher) as hidden:
            logits = teacher(**inputs).logits
        return Targets(logits, list(hidden))

    def __call__(self, student: nn.Module, batch: dict, targets: Targets) -> torch.Tensor:
        """Forward ``student`` on ``batch`` and return the weighted loss (not backpropagated)
        on the student's device, wherever the batch and the targets are."""
        from nasprune.core.models import model_device, model_inputs

        inputs = model_inputs(batch, model_device(student))
        if self.needs_hidden:
            with layer_outputs(student) as hidden:
                out = student(**inputs)
        else:
            out = student(**inputs)
        loss = self.logits_weight * logits_loss(out.logits, targets.logits, self.temperature)
        if self.needs_hidden:
            if targets.hidden is None:
                raise ValueError("the targets hold no layer outputs; make them with this loss")
            loss = loss + self.hidden_weight * hidden_loss(list(hidden), targets.hidden,
                                                           batch["attention_mask"])
        if self.labels_weight:
            loss = loss + self.labels_weight * labels_loss(out.logits, batch["labels"])
        return loss


def labels_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (MSE for one output) over the labelled examples of a batch; 0 when the
    batch holds only unlabeled texts."""
    labels = labels.to(logits.device)
    if logits.shape[-1] == 1:
        valid = ~torch.isnan(labels)
        if not valid.any():
            return logits.new_zeros(())
        return F.mse_loss(logits[valid, 0].float(), labels[valid].float())
    valid = labels != IGNORE_LABEL
    if not valid.any():
        return logits.new_zeros(())
    return F.cross_entropy(logits[valid].float(), labels[valid])
