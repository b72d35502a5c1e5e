"""The GPU path's defects that show on a CPU: device names checked up front, the device's
own index kept (timing, search workers), every device's random state saved, mixed-device
losses, float64 only on the host, no caller's model moved, serving's device and ONNX
Runtime's execution providers. What needs a GPU to show is in test_cuda.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nasprune.core.models import pick_device
from nasprune.errors import NaspruneError

from conftest import tiny_bert

# ------------------------------------------------------------------ device choice


@pytest.fixture
def one_gpu(monkeypatch):
    """torch as on a machine with one CUDA device (nothing is run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_a_gpu_index_the_machine_lacks_is_refused_in_one_line(one_gpu):
    assert pick_device("cuda:0") == torch.device("cuda:0")
    assert pick_device("auto") == torch.device("cuda")
    with pytest.raises(NaspruneError, match=r"'cuda:1' .* has 1 CUDA device\(s\): cuda:0..cuda:0"):
        pick_device("cuda:1")


def test_mps_without_mps_is_refused(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(NaspruneError, match="MPS is not available"):
        pick_device("mps")
    assert pick_device("cpu") == torch.device("cpu")


def test_timing_waits_for_the_device_it_measures(monkeypatch):
    from nasprune.core.cost import device_sync

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append("mps"))
    device_sync(torch.device("cuda:1"))()
    device_sync(torch.device("mps"))()
    device_sync(torch.device("cpu"))()
    assert waited == [torch.device("cuda:1"), "mps"]  # cuda:1's queue, not the current one's


def test_search_workers_get_the_device_with_its_index(monkeypatch):
    import nasprune.core.models as models
    from nasprune.core.supernet import Supernet
    from nasprune.data.presets import PRESETS
    from nasprune.search.executors.spec import EvaluatorSpec
    from nasprune.search.objective import SubnetEvaluator

    evaluator = SubnetEvaluator(Supernet(tiny_bert()), None, PRESETS["sst2"], precision="bf16")
    monkeypatch.setattr(models, "model_device", lambda model: torch.device("cuda:1"))
    spec = EvaluatorSpec.from_evaluator(evaluator)
    assert (spec.device, spec.precision) == ("cuda:1", "bf16")


def test_the_parents_super_network_leaves_the_gpu_while_workers_run(monkeypatch):
    from nasprune.pipeline import stages

    moves = []
    model = nn.Linear(2, 2)
    model.to = lambda device: moves.append(str(device)) or model
    monkeypatch.setattr(stages, "model_device", lambda m: torch.device("cuda:0"))
    with stages.on_host(model):
        assert moves == ["cpu"]
    assert moves == ["cpu", "cuda:0"]


# ---------------------------------------------------------------- random states


def test_every_devices_random_state_is_saved_and_restored(tmp_path, monkeypatch, one_gpu):
    from nasprune.train.loop import linear_warmup
    from nasprune.train.resume import load_state, save_state

    states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)]
    restored = {}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device: restored.__setitem__(device, state.tolist()))
    model = nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = linear_warmup(optimizer, 1, 10)
    save_state(tmp_path / "s.pt", "k", model, optimizer, schedule, None, {"done": 3})
    assert load_state(tmp_path / "s.pt", "k", model, optimizer, schedule) == {"done": 3}
    assert restored == {0: [1, 2], 1: [3]}  # dropout on each GPU draws as before the stop


# ---------------------------------------------------------------- mixed devices


class Probe(nn.Module):
    """A classifier that refuses inputs that are not on its weights' device (as CUDA does)."""

    def __init__(self, device: str):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, device=device))

    def forward(self, input_ids, attention_mask=None, **_):
        if input_ids.device != self.weight.device:
            raise RuntimeError(f"input on {input_ids.device}, weights on {self.weight.device}")
        return SimpleNamespace(logits=self.weight.expand(input_ids.shape[0], 2) * 1)


def test_distillation_runs_teacher_and_student_each_on_its_own_device():
    from nasprune.train.losses import DistillLoss, hidden_loss

    ids = torch.ones(3, 5, dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    loss = DistillLoss()
    targets = loss.targets(Probe("cpu"), batch)  # the teacher on the CPU ...
    value = loss(Probe("meta"), batch, targets)  # ... the student elsewhere ("meta" here)
    assert value.device.type == "meta" and value.shape == ()
    student = [torch.zeros(3, 5, 4, device="meta")]
    teacher = [torch.ones(3, 5, 4)]
    assert hidden_loss(student, teacher, batch["attention_mask"]).device.type == "meta"


class HostFirst(TorchFunctionMode):
    """Records every conversion to float64 of a tensor that was not moved to the CPU first
    (on a GPU that is an fp64 copy in its memory; MPS has no float64 at all)."""

    def __init__(self):
        super().__init__()
        self.hosted, self.bad = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name == "cpu":
            self.hosted.append(out)  # kept: an id is never reused while recorded
        elif name == "double" and not any(args[0] is t for t in self.hosted):
            self.bad.append(tuple(args[0].shape))
        return out


@pytest.mark.parametrize("method", ["magnitude", "fisher"])
def test_importance_computes_float64_on_the_host_only(method):
    from nasprune.core.supernet import Supernet

    supernet = Supernet(tiny_bert())
    ids = torch.randint(5, 60, (4, 6))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "labels": torch.tensor([0, 1, 0, 1])}]
    with HostFirst() as mode:
        supernet.reorder_by_importance(batches, method=method)
    assert not mode.bad


def test_recovery_computes_float64_on_the_host_only():
    from test_training import toy_data

    from nasprune.core.spaces import make_space
    from nasprune.core.supernet import Supernet
    from nasprune.data.encode import encode
    from nasprune.train.recovery.recover import RecoveryConfig, recover

    from conftest import tiny_tokenizer

    supernet = Supernet(tiny_bert())
    small = supernet.extract(make_space("layerwise", supernet.shape, unit_step=16).smallest())
    train = encode(tiny_tokenizer(), toy_data(), "train", 16)
    with HostFirst() as mode:
        recover(small, supernet.model, train, config=RecoveryConfig(
            method="least-squares", calibration_examples=16))
    assert not mode.bad


# ---------------------------------------------------------------------- loading


def test_a_half_precision_checkpoint_fine_tunes_in_fp32(tmp_path):
    from nasprune.data.presets import PRESETS
    from nasprune.train.finetune import load_classifier

    from conftest import tiny_tokenizer

    tiny_bert().to(torch.bfloat16).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    model, _ = load_classifier(str(tmp_path), PRESETS["sst2"], seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_onnx_export_leaves_the_callers_model_where_it_was(tmp_path):
    pytest.importorskip("onnxscript")
    from nasprune.deploy.export.backends.onnx_graph import write_onnx

    model = tiny_bert().train()
    moved = []
    original = model.to
    model.to = lambda *a, **k: moved.append(a) or original(*a, **k)
    write_onnx(model, tmp_path / "m.onnx", optimize=False)
    assert not moved  # a GPU model would have been moved to the CPU in place
    assert model.training  # and its mode is the caller's


def test_a_non_cpu_model_is_exported_from_a_copy(monkeypatch):
    import nasprune.core.models as models
    from nasprune.deploy.export.backends import onnx_graph

    model = tiny_bert()
    monkeypatch.setattr(models, "model_device", lambda m: torch.device("cuda:0"))
    assert onnx_graph.on_cpu(model) is not model
    monkeypatch.undo()
    assert onnx_graph.on_cpu(model) is model


# ---------------------------------------------------------------------- serving


def test_onnx_runtime_runs_on_its_cuda_provider_when_it_has_one(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from nasprune.deploy.export.backends.onnx import BACKEND
    from nasprune.deploy.export.backends.onnx_runtime import execution_providers

    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(NaspruneError, match="onnxruntime-gpu"):
        execution_providers("cuda")
    assert not BACKEND.available("cuda")  # auto then serves a GPU with PyTorch
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert execution_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}),
                                             "CPUExecutionProvider"]
    assert BACKEND.available("cuda")


def test_serving_reports_its_device_and_checks_the_name(tiny_model_dir):
    from nasprune.deploy.serve.config import ServeConfig
    from nasprune.deploy.serve.predictor import Predictor

    with pytest.raises(NaspruneError, match="unknown device 'gpu'"):
        ServeConfig(device="gpu")
    predictor = Predictor.from_dir(tiny_model_dir, device="cpu")
    assert predictor.describe()["device"] == "cpu"
    assert predictor.predict([("good movie", None)])[0]["label_name"] in ("negative", "positive")



def test_a_run_made_on_a_gpu_exports_on_a_machine_without_one(tmp_path, toy_glue,
                                                               tiny_model_dir):
    import json

    from nasprune.config import RunConfig, SearchConfig, TrainConfig
    from nasprune.data.tasks import DataConfig
    from nasprune.pipeline import run
    from nasprune.pipeline.export import export_pick

    cfg = RunConfig(model=str(tiny_model_dir),
                    data=DataConfig(task="sst2", data_dir=str(toy_glue)),
                    train=TrainConfig(epochs=1, strategy="standard", progress=False),
                    search=SearchConfig(trials=4, calibration_examples=32),
                    pick="params<=0.95", recover="none", force=True)
    run(cfg, tmp_path / "run", progress=False, until="search")
    config = tmp_path / "run" / "config.json"
    saved = json.loads(config.read_text())
    saved["train"]["device"] = "cuda"  # as recorded on a GPU machine
    config.write_text(json.dumps(saved))
    path = export_pick(tmp_path / "run", "params<=0.95", tmp_path / "export", force=True)
    assert (path / "manifest.json").is_file()
    with pytest.raises(NaspruneError, match="'cuda:7' requested but"):
        export_pick(tmp_path / "run", "params<=0.95", tmp_path / "other", device="cuda:7",
                    force=True)
