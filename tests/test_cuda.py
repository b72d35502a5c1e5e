"""The GPU path on a real CUDA device (marked ``cuda``: skipped where torch sees none;
``make gpu-check`` runs them). Each compares with the CPU or checks where tensors live."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch
from test_training import toy_data

from nasprune.config import RunConfig, SearchConfig, TrainConfig
from nasprune.core.families import FAMILIES
from nasprune.core.families.tiny import tiny_model
from nasprune.core.models import pick_device
from nasprune.core.spaces import make_space
from nasprune.core.supernet import Supernet
from nasprune.data.presets import PRESETS
from nasprune.errors import NaspruneError

from conftest import tiny_bert, tiny_tokenizer

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda", 0)


def _batch(device, n=4, length=9):
    ids = torch.randint(5, 90, (n, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def test_device_choice():
    assert pick_device("auto").type == "cuda"
    assert pick_device("cuda") == torch.device("cuda")
    with pytest.raises(NaspruneError, match="CUDA device"):
        pick_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_use_extract_and_masked_equal_the_cpu(family):
    cpu = Supernet(tiny_model(family, layers=3, ffn=48))
    gpu = Supernet(tiny_model(family, layers=3, ffn=48).to(CUDA))
    subnet = make_space("layerwise", cpu.shape, unit_step=16).sample(random.Random(1))
    with torch.inference_mode():
        for view in ("use", "masked"):
            with getattr(cpu, view)(subnet) as a, getattr(gpu, view)(subnet) as b:
                torch.testing.assert_close(b(**_batch(CUDA)).logits.cpu(),
                                           a(**_batch("cpu")).logits, atol=1e-4, rtol=1e-4)
        small = gpu.extract(subnet)
        assert next(small.parameters()).device == CUDA
        with cpu.use(subnet) as a:
            torch.testing.assert_close(small(**_batch(CUDA)).logits.cpu(),
                                       a(**_batch("cpu")).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy", ["standard", "sandwich", "sandwich-kd", "random-linear",
                                      "distill"])
def test_training_keeps_everything_on_the_device(tmp_path, strategy):
    from nasprune.train.loop import train
    from nasprune.train.strategies import make_strategy

    options = {"space": "layerwise", "unit_step": 16} if strategy != "standard" else {}
    chosen = make_strategy(strategy, options)
    model = tiny_bert()
    cfg = TrainConfig(epochs=1, batch_size=16, device="cuda", progress=False,
                      strategy=strategy)
    train(model, tiny_tokenizer(), toy_data(), cfg, tmp_path, strategy=chosen)
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    teacher = getattr(chosen, "teacher", None)
    if teacher is not None:
        assert {p.device.type for p in teacher.parameters()} == {"cuda"}


def test_optimizer_state_lives_on_the_device(tmp_path, monkeypatch):
    from nasprune.train import loop

    seen = []
    original = loop._optimizer
    monkeypatch.setattr(loop, "_optimizer", lambda model, cfg: seen.append(
        original(model, cfg)) or seen[-1])
    loop.train(tiny_bert(), tiny_tokenizer(), toy_data(),
               TrainConfig(epochs=1, batch_size=32, device="cuda", progress=False), tmp_path)
    states = [v for s in seen[0].state.values() for v in s.values() if torch.is_tensor(v)
              and v.dim() > 0]
    assert states and {v.device.type for v in states} == {"cuda"}


def test_resumed_cuda_run_equals_the_uninterrupted_one(tmp_path):
    from test_train_resume import Stop, _stop_after

    from nasprune.train.loop import train

    cfg = TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, device="cuda",
                      progress=False)
    whole = tiny_bert()
    expected = train(whole, tiny_tokenizer(), toy_data(), cfg, tmp_path / "whole")
    with pytest.raises(Stop):
        train(tiny_bert(), tiny_tokenizer(), toy_data(), cfg, tmp_path / "part",
              on_epoch=_stop_after(2))
    resumed_model = tiny_bert()
    resumed = train(resumed_model, tiny_tokenizer(), toy_data(), cfg, tmp_path / "part")
    assert [h["accuracy"] for h in resumed["history"]] == \
        [h["accuracy"] for h in expected["history"]]
    for a, b in zip(whole.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_candidate_evaluation_equals_the_cpu_and_latency_is_finite():
    from nasprune.core.cost import CostModel
    from nasprune.data.encode import encode
    from nasprune.search.objective import SubnetEvaluator

    examples = encode(tiny_tokenizer(), toy_data(), "validation", 32)
    results = []
    for device in ("cpu", CUDA):
        supernet = Supernet(tiny_bert().to(device))
        evaluator = SubnetEvaluator(supernet, examples, PRESETS["sst2"],
                                    cost=CostModel(supernet, 32, repeats=3), latency=True)
        results.append(evaluator(make_space("layerwise", supernet.shape,
                                            unit_step=16).smallest()))
    assert results[0]["error"] == results[1]["error"]
    assert math.isfinite(results[1]["latency"]) and results[1]["latency"] > 0


def test_recovery_with_the_teacher_on_another_device():
    from nasprune.data.encode import encode
    from nasprune.train.recovery.recover import RecoveryConfig, recover

    supernet = Supernet(tiny_bert())  # the teacher stays on the CPU
    small = supernet.extract(make_space("layerwise", supernet.shape, unit_step=16).smallest())
    small.to(CUDA)
    train = encode(tiny_tokenizer(), toy_data(), "train", 16)
    for method, hidden in (("both", 1.0), ("distill", 0.0)):
        report = recover(small, supernet.model, train, config=RecoveryConfig(
            method=method, epochs=1, hidden_weight=hidden, calibration_examples=32))
        assert math.isfinite(report.after["logits_mse"])
    assert next(small.parameters()).device == CUDA


def test_export_of_a_cuda_super_network_loads_and_matches(tmp_path):
    from nasprune.deploy.export.loader import load
    from nasprune.deploy.export.writer import export_model

    supernet = Supernet(tiny_bert().to(CUDA))
    subnet = make_space("layerwise", supernet.shape, unit_step=16).smallest()
    export_model(supernet, subnet, tmp_path / "e", tokenizer=tiny_tokenizer(), metrics={},
                 formats=("hf", "onnx"))
    assert next(supernet.model.parameters()).device == CUDA  # not moved by the export
    loaded = load(tmp_path / "e", backend="torch")
    with torch.inference_mode(), supernet.use(subnet) as model:
        expected = model(**_batch(CUDA)).logits.cpu()
        torch.testing.assert_close(loaded.model(**_batch("cpu")).logits, expected,
                                   atol=1e-4, rtol=1e-4)


def test_a_cuda_run_exports_where_no_gpu_is_visible(tmp_path, toy_glue, tiny_model_dir):
    from nasprune.data.tasks import DataConfig
    from nasprune.pipeline import run

    cfg = RunConfig(model=str(tiny_model_dir),
                    data=DataConfig(task="sst2", data_dir=str(toy_glue)),
                    train=TrainConfig(epochs=1, device="cuda", precision="bf16",
                                      strategy="standard", progress=False),
                    search=SearchConfig(trials=6, calibration_examples=32),
                    pick="params<=0.95", recover="none", force=True)
    run(cfg, tmp_path / "run", progress=False)
    code = ("from nasprune.pipeline.export import export_pick; import sys; "
            "export_pick(sys.argv[1], 'params<=0.95', sys.argv[2])")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"),
                           str(tmp_path / "cpu-export")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "cpu-export" / "metrics.json").read_text())


def test_bf16_keeps_the_accuracy_of_fp32(tmp_path):
    from nasprune.train.loop import train

    scores = {}
    for precision in ("fp32", "bf16", "fp16"):
        cfg = TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, device="cuda",
                          precision=precision, progress=False)
        scores[precision] = train(tiny_bert(), tiny_tokenizer(), toy_data(), cfg,
                                  tmp_path / precision)["best"]["accuracy"]
    assert abs(scores["bf16"] - scores["fp32"]) <= 0.05, scores
    assert abs(scores["fp16"] - scores["fp32"]) <= 0.05, scores
