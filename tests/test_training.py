import json
import random

import pandas as pd
import pytest
import torch

from nasprune.config import TrainConfig
from nasprune.data.encode import encode
from nasprune.data.presets import PRESETS
from nasprune.data.tasks import DataConfig, TaskData, load_task_data
from nasprune.errors import NaspruneError
from nasprune.train.evaluation import evaluate
from nasprune.train.finetune import finetune
from nasprune.train.loop import train
from nasprune.train.strategies.base import Strategy

from conftest import tiny_bert, tiny_tokenizer


def toy_sentiment(n: int, seed: int) -> pd.DataFrame:
    """A learnable toy task: the label is whether 'good' or 'bad' appears."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        filler = rng.sample(["the", "movie", "was", "very", "plot", "acting", "story"], 3)
        filler.insert(rng.randrange(4), "good" if label else "bad")
        rows.append({"sentence": " ".join(filler), "label": label})
    return pd.DataFrame(rows)


def toy_data() -> TaskData:
    return TaskData(PRESETS["sst2"], toy_sentiment(256, 0), toy_sentiment(64, 1))


class LossLog(Strategy):
    """The standard step, recording each loss: lets the test see the loss fall."""

    name = "log"

    def __init__(self):
        self.losses = []

    def backward(self, model, batch, progress):
        loss = model(**batch).loss
        loss.backward()
        self.losses.append(float(loss.detach()))
        return self.losses[-1]


def test_loss_falls_and_best_checkpoint_is_saved(tmp_path):
    model, tokenizer, strategy = tiny_bert(), tiny_tokenizer(), LossLog()
    cfg = TrainConfig(epochs=4, batch_size=16, learning_rate=3e-3, seed=0, progress=False)
    result = train(model, tokenizer, toy_data(), cfg, tmp_path, strategy=strategy)
    first, last = strategy.losses[:8], strategy.losses[-8:]
    assert sum(last) / 8 < 0.5 * sum(first) / 8
    assert result["best"]["accuracy"] > 0.9
    assert len(result["history"]) == 4
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["best"] == result["best"]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    from transformers import AutoModelForSequenceClassification
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    enc = encode(tokenizer, toy_data(), "validation", cache=False)
    assert evaluate(reloaded, enc, PRESETS["sst2"])["accuracy"] == pytest.approx(
        result["best"]["accuracy"])


def test_gradient_accumulation_and_fractional_epochs(tmp_path):
    cfg = TrainConfig(epochs=0.5, batch_size=8, grad_accum=2, progress=False)
    result = train(tiny_bert(), tiny_tokenizer(), toy_data(), cfg, tmp_path)
    assert len(result["history"]) == 1 and result["examples_per_second"] > 0


def test_regression_task_trains_with_mse(tmp_path):
    frame = toy_sentiment(64, 2).assign(label=lambda f: f["label"] * 4.0 + 0.5)
    data = TaskData(PRESETS["stsb"], frame.assign(sentence2=frame["sentence"]).rename(
        columns={"sentence": "sentence1"}), frame.assign(sentence2=frame["sentence"]).rename(
        columns={"sentence": "sentence1"}))
    model = tiny_bert(num_labels=1)
    result = train(model, tiny_tokenizer(), data, TrainConfig(epochs=1, progress=False), tmp_path)
    assert set(result["best"]) >= {"pearson", "spearman", "error"}


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"epochs": 0}, {"warmup_ratio": 1.5}])
def test_bad_train_config(kwargs):
    with pytest.raises(NaspruneError):
        TrainConfig(**kwargs)


def test_unknown_strategy(tmp_path):
    with pytest.raises(NaspruneError, match="unknown strategy"):
        train(tiny_bert(), tiny_tokenizer(), toy_data(),
              TrainConfig(strategy="nope", progress=False), tmp_path)


@pytest.mark.slow
def test_minilm_reaches_80_percent_on_sst2_subset(tmp_path, shared_data, minilm):
    """Real model, real data: 2,000 SST-2 examples, original validation set."""
    data = load_task_data(DataConfig(task="sst2", data_dir=str(shared_data),
                                     max_train_examples=2000, seed=0))
    cfg = TrainConfig(epochs=2, batch_size=16, learning_rate=5e-5, seed=0, progress=False)
    result = finetune("minilm-l6", data, cfg, tmp_path)  # the packaged name of `minilm`
    assert result["validation_examples"] == 872
    assert result["best"]["accuracy"] >= 0.80


def test_best_epoch_is_chosen_on_the_search_split_and_validation_only_reported(tmp_path):
    data = TaskData(PRESETS["sst2"], toy_sentiment(256, 0), toy_sentiment(64, 1),
                    search=toy_sentiment(48, 2))
    cfg = TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, progress=False)
    result = train(tiny_bert(), tiny_tokenizer(), data, cfg, tmp_path)
    assert result["selected_on"] == "search" and result["search_examples"] == 48
    history = result["history"]
    assert all({"accuracy", "search"} <= set(h) for h in history)
    errors = [h["search"]["error"] for h in history]
    assert result["best"]["epoch"] == history[errors.index(min(errors))]["epoch"]


def test_the_new_head_comes_from_the_seed(tmp_path):
    """A plain encoder gets a new classifier head: the run's seed decides its weights, so
    two runs with one seed are the same run (the head used to differ per process)."""
    from nasprune.train.finetune import load_classifier

    tiny_bert().bert.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)

    def head(seed: int) -> torch.Tensor:
        torch.manual_seed(1000 + seed)  # whatever the process drew before
        model, _ = load_classifier(str(tmp_path), PRESETS["sst2"], seed=seed)
        return model.classifier.weight.detach().clone()

    assert torch.equal(head(0), head(0))
    assert not torch.equal(head(0), head(1))


def test_adamw_is_fused_on_the_cpu_with_the_same_update():
    """The fused kernel (one call for every tensor) instead of torch's per-tensor Python
    loop on a CPU, a quarter of the default run's time before (run_time.md)."""
    from nasprune.train.optim import adamw

    torch.manual_seed(0)
    model = tiny_bert()
    copy = tiny_bert()
    copy.load_state_dict(model.state_dict())
    model.eval(), copy.eval()  # no dropout: both see the same gradients
    fused = adamw([{"params": list(model.parameters()), "weight_decay": 0.01}], lr=1e-3)
    loop = torch.optim.AdamW(copy.parameters(), lr=1e-3, weight_decay=0.01)
    assert fused.defaults["fused"] is True and not loop.defaults["fused"]
    batch = {"input_ids": torch.randint(5, 60, (4, 9)), "labels": torch.tensor([0, 1, 1, 0])}
    for _ in range(3):
        for net, optimizer in ((model, fused), (copy, loop)):
            net(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(model.parameters(), copy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
