"""The ONNX Runtime backend: ``model.onnx`` (``--format onnx``) and ``model.int8.onnx``.

The float graph is written by ``onnx_graph.write_onnx`` (parity-checked, fused for ONNX
Runtime when the fused graph still matches PyTorch) and run by
``onnx_runtime.OnnxClassifier``. int8 is ONNX Runtime's *static* quantization
(``onnxruntime.quantization.quantize_static``, QDQ format) of the weight matrices of the
plain graph, with activation scales calibrated once on training texts: every scale is a
constant of the file, so a text gets the same logits alone and inside any batch (dynamic
quantization computes activation scales per call, over the whole padded batch, so labels
changed with the other texts of a batch).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from nasprune.deploy.export.backends.base import SCRATCH, Backend, Calibration, Written
from nasprune.deploy.export.backends.onnx_graph import write_onnx
from nasprune.deploy.export.backends.onnx_runtime import OnnxClassifier, execution_providers
from nasprune.deploy.export.format import ONNX_FILE, ONNX_INT8_FILE
from nasprune.errors import NaspruneError, require

#: The plain (unfused) graph that ``write`` leaves in the staging directory's scratch folder
#: for ``quantize`` (int8 implies the ONNX format, so ``write`` always runs first).
PLAIN = Path(SCRATCH) / "plain.onnx"
#: ``quantize_onnx`` defaults: per-channel weight scales (on fine-tuned MiniLM per-tensor
#: scales cost about a point of SST-2 accuracy), 7-bit weight range (x86 CPUs without VNNI,
#: i.e. AVX2, multiply u8 x s8 pairs into int16 that saturate with full 8-bit weights).
INT8_PER_CHANNEL = True
INT8_REDUCE_RANGE = True
#: How activation ranges are calibrated: the entropy (KL) threshold of each tensor's
#: histogram. On a fine-tuned MiniLM-L6 (SST-2, 872 validation sentences) it lost 0.3
#: points of accuracy against 1.0 for the 99.99th percentile and 1.7 for min/max, whose
#: ranges a few outliers stretch (docs/export.md).
INT8_CALIBRATION = "entropy"
#: Calibration examples used at most, and the token budget they are cut to: ONNX Runtime's
#: entropy calibrator keeps every calibrated tensor of every example in memory before it
#: builds the histograms (a BERT-base layer's attention scores alone are 0.8 MB per
#: example of 128 tokens), so long texts mean fewer examples.
CALIBRATION_EXAMPLES = 256
CALIBRATION_TOKENS = 8192


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over feeds of one example each."""

    def __init__(self, feeds: Iterable[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # not needed by the calibrators used; kept for the interface
        return None


def _weight_matmuls(path: Path) -> tuple[list[str], list[str]]:
    """(names of MatMul/Gemm nodes with a constant weight, names of the other MatMuls):
    attention's activation x activation products stay float."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output}
    weights, others = [], []
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            (weights if node.input[1] in constants else others).append(node.name)
    return weights, others


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, calibration: Iterable[dict],
                  *, per_channel: bool = INT8_PER_CHANNEL,
                  reduce_range: bool = INT8_REDUCE_RANGE) -> Path:
    """ONNX Runtime static int8 (QDQ) of the weight matrices of the plain graph ``src``.

    ``calibration``: feeds (``{"input_ids": int64 [1, n], ...}``, all of one length n),
    e.g. :func:`calibration_feeds` of training texts. Weights are int8 per output channel,
    activations uint8 with one calibrated scale per tensor, fixed in the file. ONNX
    Runtime's calibrator prints its progress; that goes to stderr, so that stdout (where
    ``nasprune export`` writes metrics.json) stays clean."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = list(calibration)
    if not feeds:
        raise NaspruneError("int8 needs calibration texts (none were given)")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference + ONNX Runtime's graph optimisation; the symbolic shape
        # inference stops at the exporter's shape ops (Incomplete symbolic shape inference)
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        weights, others = _weight_matmuls(prepared)
        quantize_static(str(prepared), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel, reduce_range=reduce_range,
                        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=weights,
                        nodes_to_exclude=others,
                        calibrate_method=CalibrationMethod.Entropy)
    return Path(dst)


def calibration_feeds(encoded, config, pad_id: int = 0,
                      limit: int = CALIBRATION_EXAMPLES) -> list[dict]:
    """One feed per example of ``encoded`` (an ``Encoded``; the first ``limit``, fewer when
    they are long: ``CALIBRATION_TOKENS``), in the graph's input names, each padded to the
    longest of them (the entropy calibrator stacks
    same-shaped tensors; the fixed scales make padding irrelevant at run time)."""
    import numpy as np

    from nasprune.deploy.export.examples import input_names

    names = input_names(config)
    count = min(limit, len(encoded))
    longest = max((len(encoded.input_ids[i]) for i in range(count)), default=0)
    count = min(count, max(32, CALIBRATION_TOKENS // max(1, longest)))
    longest = max((len(encoded.input_ids[i]) for i in range(count)), default=0)
    feeds = []
    for i in range(count):
        ids = np.asarray(encoded.input_ids[i], dtype=np.int64)
        types = (encoded.token_type_ids[i] if encoded.token_type_ids is not None
                 else np.zeros_like(ids))
        pad = longest - len(ids)
        feed = {"input_ids": np.pad(ids, (0, pad), constant_values=pad_id)[None, :],
                "attention_mask": np.pad(np.ones_like(ids), (0, pad))[None, :],
                "token_type_ids": np.pad(np.asarray(types, dtype=np.int64), (0, pad))[None, :]}
        feeds.append({n: feed[n] for n in names})
    return feeds


def _manifest(onnx_report: dict, quantize: str | None, calibrated_on: str | None) -> dict:
    """What the manifest says about the ONNX files: exporter, opset, whether the graph is
    the fused one (it then uses com.microsoft contrib ops) or why not, how int8 was made."""
    out = {k: onnx_report[k] for k in ("exporter", "opset", "optimized") if k in onnx_report}
    if not onnx_report.get("optimized"):
        out["why_not_optimized"] = onnx_report.get("why_not_optimized")
    if quantize == "int8":
        out["int8"] = {"method": "onnxruntime static (QDQ)", "per_channel": INT8_PER_CHANNEL,
                       "reduce_range": INT8_REDUCE_RANGE, "of": "plain graph",
                       "calibration": INT8_CALIBRATION,
                       "calibrated_on": calibrated_on}
    return out


class OnnxBackend(Backend):
    name = "onnx"
    label = "ONNX model"
    quantizations = ("int8",)

    def check(self) -> None:
        require("onnx", "onnx")
        require("onnxruntime", "onnx")
        require("onnxscript", "onnx")

    def available(self, device="cpu") -> bool:
        try:
            execution_providers(device)
        except NaspruneError:  # no onnxruntime, or none for this device
            return False
        return True

    def write(self, model, directory: Path, say) -> Written:
        say("exporting ONNX")
        (directory / PLAIN).parent.mkdir(exist_ok=True)
        report = write_onnx(model, directory / ONNX_FILE, keep_plain=directory / PLAIN)
        if not report["optimized"]:
            say(f"ONNX graph not optimised: {report['why_not_optimized']}")
        return Written({"onnx": ONNX_FILE},
                       lambda: OnnxClassifier(directory / ONNX_FILE, model.config),
                       {"onnx_max_abs_diff": report["max_abs_diff"], "onnx": report})

    def manifest(self, report: dict, quantize: str | None) -> dict:
        return {"onnx": _manifest(report["onnx"], quantize, report.get("int8_calibrated_on"))}

    def quantize(self, model, directory: Path, say, calibration: Calibration) -> Written:
        say("quantizing ONNX to int8 (static, calibrated)")
        feeds = calibration_feeds(calibration.encoded, model.config, calibration.pad_id)
        where = calibration.source
        quantize_onnx(directory / PLAIN, directory / ONNX_INT8_FILE, feeds)
        int8 = OnnxClassifier(directory / ONNX_INT8_FILE, model.config)
        return Written({"onnx_int8": ONNX_INT8_FILE}, lambda: int8,
                       {"int8_backend": "onnxruntime static", "int8_calibrated_on": where,
                        "int8_calibration_examples": len(feeds)})

    def load(self, directory: Path, manifest: dict, config, layout: str, state: dict,
             quantized: bool, threads: int | None, device="cpu"):
        name = manifest["backends"]["onnx_int8" if quantized else "onnx"]
        return OnnxClassifier(directory / name, config, threads=threads,
                              param_shapes=[tuple(t.shape) for t in state.values()],
                              device=device)


BACKEND = OnnxBackend()
