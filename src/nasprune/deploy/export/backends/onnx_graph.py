"""A float PyTorch classifier as an ONNX graph, checked against PyTorch.

``write_onnx`` writes it with dynamic batch and sequence axes using torch's supported
exporter (``torch.onnx.export(..., dynamo=True)``, built on ``torch.export``; needs
``onnxscript``), checks its parity, and fuses it for ONNX Runtime with onnxscript's
rewriter (``onnxscript.rewriter.ort_fusions``: attention into one ``Attention`` or
``MultiHeadAttention`` node per layer, with that layer's own head count read from the
graph, residual + LayerNorm into ``SkipLayerNormalization``, bias + GELU into
``BiasGelu``), keeping the fused graph only when it still matches PyTorch;
``keep_plain`` also leaves the checked plain graph (what int8 quantizes).
"""

from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from nasprune.deploy.export.backends.onnx_runtime import OnnxClassifier
from nasprune.deploy.export.examples import example_inputs, input_names
from nasprune.errors import NaspruneError, require

#: The opset written (the ``torch.export``-based exporter's lowest is 18).
ONNX_OPSET = 18
#: Largest logit difference to PyTorch allowed for the plain graph (an export error).
PARITY_TOLERANCE = 1e-3
#: Largest logit difference to PyTorch allowed for the fused graph; above it the plain
#: graph is kept.
FUSED_TOLERANCE = 1e-4
#: The fused op types counted in the report.
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization",
             "LayerNormalization", "BiasGelu", "FastGelu", "Gelu")


class _Logits:
    """Wraps a classifier so that the exported signature is the input tensors -> logits."""

    @staticmethod
    def keywords(model, names: Sequence[str]):
        import torch

        class Keywords(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                given = {"input_ids": input_ids, "attention_mask": attention_mask,
                         "token_type_ids": token_type_ids}
                return self.model(**{n: given[n] for n in names}).logits

        return Keywords().eval()


def _export(model, names, example, path: Path, opset: int) -> None:
    """``torch.onnx.export(dynamo=True)`` with named dynamic batch and sequence axes."""
    import torch

    require("onnxscript", "onnx")
    with torch.no_grad():
        torch.onnx.export(_Logits.keywords(model, names), (), str(path),
                          kwargs={n: example[n] for n in names}, input_names=list(names),
                          output_names=["logits"],
                          dynamic_shapes={n: {0: "batch", 1: "sequence"} for n in names},
                          opset_version=opset, dynamo=True, verbose=False,
                          external_data=False)


def fuse_for_onnxruntime(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """onnxscript's ONNX Runtime fusions on the graph at ``src``, written to ``dst``.

    Returns ``{"fusions": {op type: count}, "attention_heads": [per fused layer]}``. Does
    not check the result: :func:`write_onnx` compares it with PyTorch.
    """
    import onnx_ir as ir
    from onnxscript.rewriter import ort_fusions

    model = ir.load(str(src))
    ort_fusions.optimize_for_ort(model)
    ir.save(model, str(dst))
    nodes = list(model.graph)
    counts = collections.Counter(n.op_type for n in nodes)
    heads = [int(n.attributes["num_heads"].value) for n in nodes
             if n.op_type in ("Attention", "MultiHeadAttention") and "num_heads" in n.attributes]
    return {"fusions": {k: counts[k] for k in FUSED_OPS if counts[k]},
            "attention_heads": heads}


def _probes(config) -> list[dict]:
    """Inputs of other shapes than the traced one, with right- and left-padded rows."""
    probes = [example_inputs(config, 3, 13, seed=1), example_inputs(config, 1, 5, seed=2)]
    left = example_inputs(config, 4, 23, seed=3)
    left["attention_mask"][0, :3] = 0  # left padding: a fused mask must stay a real mask
    left["attention_mask"][1, 7:9] = 0  # and holes
    return probes + [left]


def _max_diff(path: Path, model, probes: Sequence[dict]) -> float:
    import torch

    session = OnnxClassifier(path, model.config, threads=1)
    worst = 0.0
    for probe in probes:
        with torch.no_grad():
            expected = model(**probe).logits
        got = session(**probe).logits
        if got.shape != expected.shape:
            return float("inf")
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def _same_interface(path: Path, names: Sequence[str]) -> str | None:
    """Why the graph at ``path`` lost the inputs or dynamic axes of the export, or None."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    got = [i.name for i in graph.input]
    if got != list(names):
        return f"inputs changed from {list(names)} to {got}"
    for value in graph.input:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        if dims != ["batch", "sequence"]:
            return f"input {value.name} has axes {dims}, not ['batch', 'sequence']"
    if [o.name for o in graph.output] != ["logits"]:
        return "the output is no longer 'logits'"
    return None


def write_onnx(model, path: str | os.PathLike, *, opset: int = ONNX_OPSET,
               optimize: bool = True, keep_plain: str | os.PathLike | None = None) -> dict:
    """Write ``model`` (a float PyTorch classifier) as ONNX with dynamic batch/sequence axes.

    The plain graph must match PyTorch within ``PARITY_TOLERANCE`` on inputs of other
    shapes (else :class:`NaspruneError`). With ``optimize``, onnxscript's ONNX Runtime
    fusions rewrite it (:func:`fuse_for_onnxruntime`) and the fused graph replaces the plain
    one only when it keeps the inputs and axes and matches PyTorch within
    ``FUSED_TOLERANCE`` on right-, left- and un-padded inputs; otherwise the plain graph
    stays and the reason is returned. ``keep_plain``: also leave the checked plain graph
    there (what int8 quantizes), so that it need not be exported a second time.

    Returns the report stored in ``metrics.json`` (``onnx``): ``exporter``, ``opset``,
    ``optimized``, ``max_abs_diff`` (of the graph written), ``plain_max_abs_diff``, and
    ``fusions``/``attention_heads``/``fused_max_abs_diff`` or ``why_not_optimized``.
    """
    path = Path(path)
    was_training = model.training
    try:
        return _write_onnx(on_cpu(model.eval()), path, opset, optimize, keep_plain)
    finally:
        model.train(was_training)


def on_cpu(model):
    """``model`` when it is on the CPU, else a CPU copy: the caller's model (a library
    caller's GPU model) stays where it is."""
    import copy

    from nasprune.core.models import model_device

    if model_device(model).type == "cpu":
        return model
    return copy.deepcopy(model).to("cpu")


def _write_onnx(model, path: Path, opset: int, optimize: bool, keep_plain=None) -> dict:
    names = input_names(model.config)
    example = example_inputs(model.config, 2, 8, seed=0)
    try:
        _export(model, names, example, path, opset)
    except NaspruneError:
        raise
    except Exception as exc:  # torch raises many types; the reason is kept
        raise NaspruneError(f"ONNX export failed: {type(exc).__name__}: "
                            f"{_first_line(exc)}") from exc
    report: dict[str, Any] = {"exporter": "torch.onnx.export(dynamo=True)", "opset": opset}
    probes = _probes(model.config)
    plain = _max_diff(path, model, probes)
    if not plain <= PARITY_TOLERANCE:
        raise NaspruneError(f"ONNX export of {path.name} differs from PyTorch by {plain:.3g}")
    report.update(optimized=False, max_abs_diff=plain, plain_max_abs_diff=plain)
    if keep_plain is not None:
        shutil.copyfile(path, keep_plain)
    if not optimize:
        report["why_not_optimized"] = "not requested"
        return report
    fused_path = path.with_name(path.stem + ".fused" + path.suffix)
    try:
        found = fuse_for_onnxruntime(path, fused_path)
        why = _same_interface(fused_path, names)
        fused = _max_diff(fused_path, model, probes) if why is None else float("nan")
        if why is None and not found["fusions"].get("Attention", 0) + found["fusions"].get(
                "MultiHeadAttention", 0):
            why = f"no attention was fused (fusions {found['fusions']})"
        if why is None and not fused <= FUSED_TOLERANCE:
            why = (f"the fused graph differs from PyTorch by {fused:.3g} "
                   f"(> {FUSED_TOLERANCE:g}); fusions {found['fusions']}")
        if why is None:
            os.replace(fused_path, path)
            report.update(optimized=True, max_abs_diff=fused, fused_max_abs_diff=fused, **found)
        else:
            report["why_not_optimized"] = why
    except Exception as exc:  # the rewriter's failures are many; the plain graph stays
        report["why_not_optimized"] = f"fusion failed: {type(exc).__name__}: {_first_line(exc)}"
    finally:
        fused_path.unlink(missing_ok=True)
    return report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
