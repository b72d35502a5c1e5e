"""``--precision``: bf16/fp16 autocast in training, distillation and candidate evaluation,
fp16's gradient scale in checkpoints, and the option in configs and fingerprints."""

from __future__ import annotations

import pytest
import torch
from test_training import toy_data

from nasprune.config import PRECISIONS, RunConfig, TrainConfig
from nasprune.errors import NaspruneError
from nasprune.train.loop import train
from nasprune.train.precision import DTYPES, Precision

from conftest import tiny_bert, tiny_tokenizer


def test_bf16_on_the_cpu_keeps_the_accuracy_of_fp32(tmp_path):
    scores = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, device="cpu",
                          precision=precision, progress=False)
        result = train(tiny_bert(), tiny_tokenizer(), toy_data(), cfg, tmp_path / precision)
        assert result["precision"] == precision
        scores[precision] = result["best"]["accuracy"]
    assert scores["fp32"] > 0.8  # the toy task is learned ...
    assert abs(scores["bf16"] - scores["fp32"]) <= 0.05, scores  # ... in bf16 as well


def test_bf16_computes_matrix_products_in_bf16_and_keeps_fp32_weights():
    model = torch.nn.Linear(4, 4)
    with Precision("bf16", "cpu").autocast():
        out = model(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16 and model.weight.dtype == torch.float32
    with Precision("fp32", "cpu").autocast():
        assert model(torch.ones(2, 4)).dtype == torch.float32


def test_fp16_scales_the_loss_and_its_scale_is_checkpointed(tmp_path):
    from nasprune.train.loop import linear_warmup
    from nasprune.train.resume import load_state, save_state

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = linear_warmup(optimizer, 1, 10)
    amp = Precision("fp16", "cpu")
    with amp.autocast():
        loss = model(torch.ones(3, 4)).float().pow(2).mean()
    amp.backward(loss)
    before = model.weight.detach().clone()
    amp.step(optimizer, model.parameters())
    assert not torch.equal(model.weight, before)  # unscaled, clipped, stepped
    save_state(tmp_path / "s.pt", "k", model, optimizer, schedule, amp, {})
    fresh = Precision("fp16", "cpu")
    load_state(tmp_path / "s.pt", "k", model, optimizer, schedule, fresh)
    assert fresh.state_dict()["scale"] == amp.state_dict()["scale"]


def test_candidate_evaluation_in_bf16_is_close_to_fp32():
    from nasprune.core.spaces import make_space
    from nasprune.core.supernet import Supernet
    from nasprune.data.encode import encode
    from nasprune.data.presets import PRESETS
    from nasprune.search.objective import SubnetEvaluator

    supernet = Supernet(tiny_bert())
    examples = encode(tiny_tokenizer(), toy_data(), "validation", 32)
    subnet = make_space("layerwise", supernet.shape, unit_step=16).smallest()
    errors = [SubnetEvaluator(supernet, examples, PRESETS["sst2"], precision=p)(subnet)["error"]
              for p in ("fp32", "bf16")]
    assert abs(errors[0] - errors[1]) <= 0.05


def test_distillation_recovery_runs_in_bf16():
    from nasprune.core.spaces import make_space
    from nasprune.core.supernet import Supernet
    from nasprune.data.encode import encode
    from nasprune.train.recovery.recover import RecoveryConfig, recover

    supernet = Supernet(tiny_bert())
    small = supernet.extract(make_space("layerwise", supernet.shape, unit_step=16).smallest())
    report = recover(small, supernet.model, encode(tiny_tokenizer(), toy_data(), "train", 16),
                     config=RecoveryConfig(epochs=1, hidden_weight=1.0, precision="bf16"))
    assert report.steps[0]["step"] == "distill"
    assert {p.dtype for p in small.parameters()} == {torch.float32}


def test_precision_is_checked_and_changes_the_fingerprint():
    from nasprune.rundir.fingerprints import fingerprints

    with pytest.raises(NaspruneError, match="unknown precision 'fp8'"):
        TrainConfig(precision="fp8")
    with pytest.raises(NaspruneError, match="unknown precision"):
        Precision("int8")
    assert TrainConfig().precision == "fp32"
    assert tuple(DTYPES) == PRECISIONS  # the config's names without torch, the same
    fp32 = fingerprints(RunConfig())
    bf16 = fingerprints(RunConfig(train=TrainConfig(precision="bf16")))
    assert fp32["finetune"]["hash"] != bf16["finetune"]["hash"]  # bf16 changes the results
    assert bf16["finetune"]["options"]["train.precision"] == "bf16"


def test_precision_is_a_config_file_key(tmp_path):
    from nasprune.cli.config_file import read_config_file

    path = tmp_path / "run.json"
    path.write_text('{"train": {"precision": "bf16", "device": "cpu"}, "data": {}, '
                    '"search": {}}')
    assert read_config_file(path, {"precision": "precision", "device": "device"}) == {
        "precision": "bf16", "device": "cpu"}
