"""The optimised ONNX graph: the torch.export-based exporter with onnxscript's ONNX Runtime
fusions keeps every layer's own head count and matches PyTorch (1e-4) for uniform,
layer-dropped, non-uniform and block-removed sub-networks of BERT, and for one sub-network
with all of these at once of every other family; a fused graph that does not match is not
kept; int8 is static (QDQ) quantization of the plain graph; no deprecated API is used; the
session options of ``OnnxClassifier``."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import onnx
import pytest
import torch
from cases.exports import make_supernet

import nasprune
from nasprune.core.families import FAMILIES
from nasprune.core.models import uses_token_types
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.data.encode import Encoded
from nasprune.data.presets import TaskPreset
from nasprune.deploy.export.backends import onnx_graph as xo
from nasprune.deploy.export.backends.onnx import calibration_feeds, quantize_onnx
from nasprune.deploy.export.backends.onnx_runtime import OnnxClassifier
from nasprune.deploy.export.examples import input_names
from nasprune.deploy.export.writer import export_model

SUBNETS = {  # 4 layers of 4 heads / 64 units
    "uniform": Subnet(((2, 32),) * 4),  # fewer heads: the remote class
    "layer-dropped": Subnet(((4, 64), (4, 64), (0, 0), (0, 0))),  # the stock class
    "non-uniform": Subnet(((2, 32), (4, 48), (3, 16), (1, 64))),
    "blocks-removed": Subnet(((3, 32), (0, 48), (2, 0), (0, 0))),
    # the two above in one graph: 2, 4 and 1 heads, an attention and an FFN block removed
    "mixed": Subnet(((2, 32), (0, 48), (4, 0), (1, 64))),
}
SST2 = TaskPreset("sst2", ("sentence",), ("negative", "positive"))


def inputs(config, rows: int, seq: int, seed: int, left_pad: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (rows, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, seq // 2:] = 0  # right padding
    if left_pad:
        mask[0, :3] = 0  # left padding: the fused graph must keep a real 0/1 mask
    out = {"input_ids": ids, "attention_mask": mask}
    if uses_token_types(config):
        out["token_type_ids"] = (torch.arange(seq) >= seq // 3).long().expand(rows, -1)
    return out


def reference(sn: Supernet, subnet: Subnet, batch: dict) -> torch.Tensor:
    with torch.no_grad(), sn.use(subnet) as model:
        return model(**batch).logits


def op_counts(path) -> dict:
    counts: dict = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


#: BERT: each kind of sub-network on its own; every other family: the mixed one, which
#: has all that the family's graph can differ in (each export is ~7 s of torch.export)
CASES = [("bert", kind) for kind in SUBNETS if kind != "mixed"] + [
    (family, "mixed") for family in FAMILIES if family != "bert"]


@pytest.mark.parametrize("family,kind", CASES)
def test_fused_graph_matches_pytorch_per_layer_heads(family, kind, tmp_path):
    sn = make_supernet(family)
    subnet = SUBNETS[kind]
    out = export_model(sn, subnet, tmp_path / kind, formats=("onnx",))
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    report = metrics["onnx"]
    attended = [h for h, _ in subnet.layers if h > 0]
    assert report["exporter"] == "torch.onnx.export(dynamo=True)"
    assert report["max_abs_diff"] <= 1e-4 and metrics["onnx_max_abs_diff"] <= 1e-4
    counts = op_counts(out / "model.onnx")
    if family == "mpnet":  # the rewriter's attention patterns have no position-bias input
        assert not report["optimized"] and manifest["onnx"]["optimized"] is False
        assert "no attention was fused" in report["why_not_optimized"]
        assert counts["Softmax"] == len(attended)  # the plain graph, one per attended layer
    else:
        assert report["optimized"], (family, kind, report.get("why_not_optimized"))
        assert manifest["onnx"]["optimized"] is True
        # one fused attention node per layer with heads, each with that layer's head count
        fused = report["fusions"].get("Attention", 0) + report["fusions"].get(
            "MultiHeadAttention", 0)
        assert fused == len(attended), (family, kind)
        assert report["attention_heads"] == attended, (family, kind)
        assert report["fusions"]["SkipLayerNormalization"] >= 1
        assert report["fusions"].get("BiasGelu", 0) == sum(u > 0 for _, u in subnet.layers)
        assert "Softmax" not in counts
    model = nasprune.load(out, backend="onnx").model
    assert isinstance(model, OnnxClassifier)
    assert [i.name for i in model.session.get_inputs()] == input_names(sn.model.config)
    assert all(i.shape == ["batch", "sequence"] for i in model.session.get_inputs())
    for rows, seq, left in ((1, 5, False), (4, 23, True), (2, 40, True)):
        batch = inputs(sn.model.config, rows, seq, seed=rows + seq, left_pad=left)
        torch.testing.assert_close(model(**batch).logits, reference(sn, subnet, batch),
                                   rtol=0, atol=1e-4)


def test_a_fused_graph_that_does_not_match_is_not_kept(tmp_path, monkeypatch):
    real = xo.fuse_for_onnxruntime

    def off_by_a_bit(src, dst):  # a valid graph that computes something else
        found = real(src, dst)
        proto = onnx.load(str(dst))
        for init in proto.graph.initializer:
            if init.name.endswith("classifier.weight"):
                values = onnx.numpy_helper.to_array(init) + np.float32(1e-3)
                init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
        onnx.save(proto, str(dst))
        return found

    monkeypatch.setattr(xo, "fuse_for_onnxruntime", off_by_a_bit)
    sn = make_supernet("bert")
    subnet = SUBNETS["non-uniform"]
    out = export_model(sn, subnet, tmp_path / "out", formats=("onnx",), quantize="int8",
                       validation=(tiny_validation(), SST2))
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert metrics["onnx"]["optimized"] is False
    assert "differs from PyTorch by" in metrics["onnx"]["why_not_optimized"]
    assert manifest["onnx"]["optimized"] is False
    assert "differs from PyTorch" in manifest["onnx"]["why_not_optimized"]
    assert manifest["onnx"]["int8"]["of"] == "plain graph"
    assert "Attention" not in op_counts(out / "model.onnx")  # the plain graph was kept
    assert not any(p.name.endswith(".fused.onnx") for p in out.iterdir())
    batch = inputs(sn.model.config, 3, 17, seed=3, left_pad=True)
    got = nasprune.load(out, backend="onnx", quantized=False).model(**batch).logits
    torch.testing.assert_close(got, reference(sn, subnet, batch), rtol=0, atol=1e-4)


def test_optimizer_failure_keeps_the_plain_graph(tmp_path, monkeypatch):
    def broken(src, dst):
        raise RuntimeError("no fusion today")

    monkeypatch.setattr(xo, "fuse_for_onnxruntime", broken)
    report = xo.write_onnx(make_supernet("roberta").extract(SUBNETS["uniform"]),
                           tmp_path / "m.onnx")
    assert report["optimized"] is False
    assert report["why_not_optimized"] == "fusion failed: RuntimeError: no fusion today"
    assert report["max_abs_diff"] <= 1e-3


def tiny_validation(n: int = 48, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    ids = [np.concatenate([[2], rng.integers(5, 60, rng.integers(3, 12)), [3]]).astype(np.int32)
           for _ in range(n)]
    return Encoded(ids, [np.zeros(len(x), np.int8) for x in ids], rng.integers(0, 2, n))


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_int8_is_static_quantization_of_the_weights(family, tmp_path, monkeypatch):
    sn = make_supernet(family)
    subnet = SUBNETS["non-uniform"]
    traced, export = [], xo._export
    monkeypatch.setattr(xo, "_export", lambda *a: traced.append(a[3]) or export(*a))
    out = export_model(sn, subnet, tmp_path / "out", formats=("onnx",), quantize="int8",
                       validation=(tiny_validation(), SST2),
                       calibration=tiny_validation(seed=5))
    metrics = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    # int8 quantizes the float step's plain graph: the model is exported once, and what
    # the steps handed over is gone
    assert len(traced) == 1 and not (out / ".scratch").exists()
    assert manifest["onnx"]["int8"] == {
        "method": "onnxruntime static (QDQ)", "per_channel": True, "reduce_range": True,
        "of": "plain graph", "calibration": "entropy", "calibrated_on": "training texts"}
    counts = op_counts(out / "model.int8.onnx")
    assert counts["QuantizeLinear"] >= 4 * 2 and counts["DequantizeLinear"] >= 4 * 2
    assert "DynamicQuantizeLinear" not in counts  # no scale is computed at run time
    # correctness on a tiny random model (real accuracy: benchmarks/export_speed.py)
    assert abs(metrics["int8_change"]) <= 0.05
    batch = inputs(sn.model.config, 4, 19, seed=9, left_pad=True)
    got = nasprune.load(out).model(**batch).logits
    expected = reference(sn, subnet, batch)
    assert (got - expected).abs().max() < 0.05
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_int8_needs_calibration_texts(tmp_path):
    with pytest.raises(nasprune.NaspruneError, match="int8 needs calibration texts"):
        export_model(make_supernet("bert"), SUBNETS["uniform"], tmp_path / "o",
                     quantize="int8")
    assert not (tmp_path / "o").exists()


def test_session_options(tmp_path):
    import onnxruntime as ort

    sn = make_supernet("bert")
    path = tmp_path / "m.onnx"
    xo.write_onnx(sn.model, path, optimize=False)  # the options are not the graph's
    model = OnnxClassifier(path, sn.model.config, threads=1)
    options = model.session.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    default = OnnxClassifier(path, sn.model.config)
    assert default.session.get_session_options().intra_op_num_threads == torch.get_num_threads()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_no_deprecated_export_or_quantization_path(tmp_path):
    """The supported paths only: torch.export-based ONNX export, ONNX Runtime quantization;
    nothing is silenced, and none of the deprecated paths' warnings appears."""
    sn = make_supernet("bert")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xo.write_onnx(sn.model, tmp_path / "m.onnx", keep_plain=tmp_path / "plain.onnx")
        quantize_onnx(tmp_path / "plain.onnx", tmp_path / "q.onnx",
                      calibration_feeds(tiny_validation(8), sn.model.config))
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    for old in ("TorchScript", "torch.ao.quantization", "quantize_per_tensor", "TracerWarning",
                "dynamo=False"):
        assert not [m for m in messages if old in m], messages
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    ours = [w for w in caught if "/nasprune/" in w.filename.replace("\\", "/")]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
