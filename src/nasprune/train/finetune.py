"""Fine-tuning a model by name: a classifier head for the task's labels, then the loop."""

from __future__ import annotations

from pathlib import Path

from nasprune.config import TrainConfig
from nasprune.core.models import load_pretrained
from nasprune.data.presets import TaskPreset
from nasprune.data.tasks import TaskData
from nasprune.files import write_json
from nasprune.rundir import METRICS
from nasprune.train.loop import set_seed, train


def load_classifier(model_name: str, preset: TaskPreset, seed: int):
    """A sequence classifier with the task's labels (a new head on a plain encoder), in
    fp32 whatever the checkpoint's dtype: transformers 5 would keep an fp16/bf16
    checkpoint's, and training in it (no master weights, no scaler) loses updates;
    ``--precision`` is how a run computes in half precision. The new head's weights come
    from ``seed``, so that a run's seed decides all of its result."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, model_name)
    kwargs = {"num_labels": preset.num_labels, "dtype": torch.float32}
    if preset.is_regression:
        kwargs["problem_type"] = "regression"
    else:
        kwargs["id2label"] = dict(enumerate(preset.label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(preset.label_names)}
    set_seed(seed)
    model = load_pretrained(AutoModelForSequenceClassification, model_name, **kwargs)
    return model, tokenizer


def finetune(model_name: str, data: TaskData, cfg: TrainConfig, out_dir: str | Path) -> dict:
    """Fine-tune ``model_name`` on ``data``; the best checkpoint lands in ``out_dir/model``
    and the record (returned) in ``out_dir/metrics.json`` (a run's fine-tuning stage)."""
    model, tokenizer = load_classifier(model_name, data.preset, cfg.seed)
    result = train(model, tokenizer, data, cfg, out_dir)
    result["model"] = model_name
    write_json(Path(out_dir) / METRICS, result)
    return result
