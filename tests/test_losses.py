"""The distillation loss against hand-computed values: logits, layer outputs, padding masks."""

from __future__ import annotations

import math

import pytest
import torch

from nasprune.core.families.tiny import tiny_model
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.data.io import IGNORE_LABEL
from nasprune.errors import NaspruneError
from nasprune.train.losses import DistillLoss, hidden_loss, labels_loss, layer_outputs, logits_loss


def test_logits_loss_on_hand_made_logits():
    teacher = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, -1.0]])

    def kl(q, p):
        return sum(qi * math.log(qi / pi) for qi, pi in zip(q, p))

    def softmax(xs, t):
        e = [math.exp(x / t) for x in xs]
        return [v / sum(e) for v in e]

    for t in (1.0, 2.0):
        expected = sum(kl(softmax(tr, t), softmax(sr, t))
                       for tr, sr in zip(teacher.tolist(), student.tolist())) / 2 * t * t
        assert float(logits_loss(student, teacher, t)) == pytest.approx(expected, rel=1e-5)
    assert float(logits_loss(teacher, teacher, 3.0)) == pytest.approx(0.0, abs=1e-6)
    # regression: mean squared error between the predictions
    reg = logits_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]]))
    assert float(reg) == pytest.approx((1 + 4) / 2)


def test_logits_loss_treats_the_teacher_as_constant():
    teacher = torch.tensor([[1.0, -1.0]], requires_grad=True)
    student = torch.tensor([[0.0, 0.5]], requires_grad=True)
    logits_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_hidden_loss_by_hand_and_padded_tokens_do_not_count():
    # 1 example, 3 tokens (the last is padding), hidden size 2, two layers
    mask = torch.tensor([[1, 1, 0]])
    teacher = [torch.zeros(1, 3, 2), torch.ones(1, 3, 2)]
    student = [torch.tensor([[[1.0, 1.0], [0.0, 2.0], [99.0, 99.0]]]),
               torch.tensor([[[1.0, 1.0], [1.0, 1.0], [-50.0, 7.0]]])]
    # layer 0: squared errors over real tokens 1+1+0+4 = 6 over 2 tokens x 2 units -> 1.5
    # layer 1: all real tokens equal -> 0; mean over layers -> 0.75
    assert float(hidden_loss(student, teacher, mask)) == pytest.approx(0.75)
    student[0][0, 2] = -1e6  # changing a padded token changes nothing
    assert float(hidden_loss(student, teacher, mask)) == pytest.approx(0.75)


def test_labels_loss_skips_unlabeled_examples():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, IGNORE_LABEL])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert float(labels_loss(logits, labels)) == pytest.approx(expected, rel=1e-5)
    assert float(labels_loss(logits, torch.tensor([IGNORE_LABEL] * 2))) == 0.0
    reg = labels_loss(torch.tensor([[1.0], [5.0]]), torch.tensor([3.0, float("nan")]))
    assert float(reg) == pytest.approx(4.0)


def _batch(n=3, seq=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, seq, dtype=torch.long)
    mask[0, 4:] = 0
    return {"input_ids": torch.randint(5, 60, (n, seq), generator=g), "attention_mask": mask,
            "token_type_ids": torch.zeros(n, seq, dtype=torch.long),
            "labels": torch.tensor([0, 1, IGNORE_LABEL])}


def test_layer_outputs_see_every_layer_also_removed_ones():
    model = tiny_model("bert", layers=3).eval()
    supernet = Supernet(model)
    batch = _batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad(), layer_outputs(model) as full:
        model(**inputs)
    assert len(full) == 3
    dropped = Subnet(((supernet.shape.num_heads, supernet.shape.ffn), (0, 0),
                      (supernet.shape.num_heads, supernet.shape.ffn)))
    with torch.no_grad(), supernet.use(dropped) as m, layer_outputs(m) as sub:
        m(**inputs)
    assert len(sub) == 3
    torch.testing.assert_close(sub[0], full[0])
    torch.testing.assert_close(sub[1], sub[0])  # a removed layer passes its input on


def test_distill_loss_combines_the_terms_and_is_zero_for_the_teacher_itself():
    model = tiny_model("bert", layers=2).eval()
    batch = _batch()
    with_hidden = DistillLoss(temperature=2.0, hidden_weight=0.5)
    targets = with_hidden.targets(model, batch)
    assert len(targets.hidden) == 2
    with torch.no_grad():
        assert float(with_hidden(model, batch, targets)) == pytest.approx(0.0, abs=1e-6)
    student = tiny_model("bert", layers=2, seed=1).eval()
    with torch.no_grad():
        logits_only = float(DistillLoss(temperature=2.0)(student, batch, targets))
        combined = float(with_hidden(student, batch, targets))
        with layer_outputs(student) as hidden:
            out = student(**{k: v for k, v in batch.items() if k != "labels"})
        expected = (logits_loss(out.logits, targets.logits, 2.0)
                    + 0.5 * hidden_loss(list(hidden), targets.hidden, batch["attention_mask"]))
        labelled = float(DistillLoss(temperature=2.0, labels_weight=1.0)(student, batch, targets))
    assert combined == pytest.approx(float(expected), rel=1e-5)
    assert combined > logits_only > 0
    assert labelled == pytest.approx(logits_only + float(labels_loss(out.logits, batch["labels"])),
                                     rel=1e-5)


def test_distill_loss_refuses_bad_weights():
    with pytest.raises(NaspruneError):
        DistillLoss(temperature=0)
    with pytest.raises(NaspruneError):
        DistillLoss(logits_weight=0, hidden_weight=0, labels_weight=0)
