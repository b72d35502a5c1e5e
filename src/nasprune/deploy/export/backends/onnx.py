"""The ONNX Runtime backend: ``model.onnx`` (``--format onnx``) and ``model.int8.onnx``.

The graph is written by ``onnx_graph.write_onnx`` (parity-checked, fused by ONNX
Runtime's transformer optimizer when the fused graph still matches PyTorch) and run by
``onnx_runtime.OnnxClassifier``. int8 is ONNX Runtime's dynamic quantization of the
weights of MatMul/Gemm and of fused Attention (QAttention) nodes, on the graph written.
"""

from __future__ import annotations

import os
from pathlib import Path

from nasprune.deploy.export.backends.base import Backend, Written
from nasprune.deploy.export.backends.onnx_fusion import quiet_onnxruntime_tools
from nasprune.deploy.export.backends.onnx_graph import write_onnx
from nasprune.deploy.export.backends.onnx_runtime import OnnxClassifier
from nasprune.deploy.export.format import ONNX_FILE, ONNX_INT8_FILE
from nasprune.errors import require

#: ``quantize_onnx`` defaults: per-channel weight scales (on fine-tuned MiniLM per-tensor
#: scales cost about a point of SST-2 accuracy), 7-bit weight range (x86 CPUs without VNNI,
#: i.e. AVX2, multiply u8 x s8 pairs into int16 that saturate with full 8-bit weights;
#: ONNX Runtime's QAttention always uses the reduced range).
INT8_PER_CHANNEL = True
INT8_REDUCE_RANGE = True


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, *,
                  per_channel: bool = INT8_PER_CHANNEL,
                  reduce_range: bool = INT8_REDUCE_RANGE) -> Path:
    """ONNX Runtime dynamic int8 quantization of the weights of MatMul/Gemm and of fused
    Attention (QAttention) nodes; activations are quantized per batch at run time."""
    require("onnxruntime", "onnx")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_onnxruntime_tools():
        # DefaultTensorType: outputs of contrib ops (fused graphs) have no inferred type
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         per_channel=per_channel, reduce_range=reduce_range,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return Path(dst)


def _manifest(onnx_report: dict, quantize: str | None) -> dict:
    """What the manifest says about the ONNX files: exporter, opset, whether the graph is
    ONNX Runtime's fused one (it then uses com.microsoft contrib ops) or why not."""
    out = {k: onnx_report[k] for k in ("exporter", "opset", "optimized") if k in onnx_report}
    if not onnx_report.get("optimized"):
        out["why_not_optimized"] = onnx_report.get("why_not_optimized")
    if quantize == "int8":
        out["int8"] = {"method": "onnxruntime dynamic", "per_channel": INT8_PER_CHANNEL,
                       "reduce_range": INT8_REDUCE_RANGE,
                       "of": "optimised graph" if onnx_report.get("optimized") else "plain graph"}
    return out


class OnnxBackend(Backend):
    name = "onnx"
    label = "ONNX model"

    def check(self) -> None:
        require("onnx", "onnx")
        require("onnxruntime", "onnx")

    def available(self) -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def write(self, model, directory: Path, say) -> Written:
        say("exporting ONNX")
        report = write_onnx(model, directory / ONNX_FILE)
        if not report["optimized"]:
            say(f"ONNX graph not optimised: {report['why_not_optimized']}")
        return Written({"onnx": ONNX_FILE},
                       lambda: OnnxClassifier(directory / ONNX_FILE, model.config),
                       {"onnx_max_abs_diff": report["max_abs_diff"], "onnx": report})

    def manifest(self, report: dict, quantize: str | None) -> dict:
        return {"onnx": _manifest(report["onnx"], quantize)}

    def quantize(self, model, directory: Path, say) -> Written:
        say("quantizing ONNX to int8")
        quantize_onnx(directory / ONNX_FILE, directory / ONNX_INT8_FILE)
        int8 = OnnxClassifier(directory / ONNX_INT8_FILE, model.config)
        return Written({"onnx_int8": ONNX_INT8_FILE}, lambda: int8,
                       {"int8_backend": "onnxruntime"})

    def load(self, directory: Path, manifest: dict, config, layout: str, state: dict,
             quantized: bool, threads: int | None):
        name = manifest["backends"]["onnx_int8" if quantized else "onnx"]
        return OnnxClassifier(directory / name, config, threads=threads,
                              param_shapes=[tuple(t.shape) for t in state.values()])


BACKEND = OnnxBackend()
