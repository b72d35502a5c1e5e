"""A float PyTorch classifier as an ONNX graph, checked against PyTorch.

``write_onnx`` writes it with dynamic batch and sequence axes, checks its parity, and runs
ONNX Runtime's transformer optimizer on it (``onnx_fusion``), keeping the fused graph only
when it matches PyTorch; ``export_onnx`` is the plain export without the optimizer.

Exporter choice (measured with torch 2.13, onnxruntime 1.32, onnxscript 0.7; the reasons
are in docs/export.md): the graph is traced with the TorchScript exporter, because ONNX
Runtime's optimizer fuses attention only in that graph; the dynamo exporter
(``exporter="dynamo"``, needs ``onnxscript``) works for every family and layout but its
attention stays unfused (``fuse_attention: failed to match mask path``), and ``"auto"``
falls back to it when the TorchScript exporter fails (e.g. once torch removes it). The
deprecation warnings of the kept exporter are silenced by their exact messages only.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

from nasprune.deploy.export.backends.onnx_fusion import optimize_onnx
from nasprune.deploy.export.backends.onnx_runtime import OnnxClassifier
from nasprune.deploy.export.examples import example_inputs, input_names
from nasprune.errors import NaspruneError, require

ONNX_OPSET = 17
#: The dynamo exporter's lowest supported opset.
DYNAMO_OPSET = 18
EXPORTERS = ("auto", "torchscript", "dynamo")
#: Largest logit difference to PyTorch allowed for the plain graph (an export error).
PARITY_TOLERANCE = 1e-3
#: Largest logit difference to PyTorch allowed for the optimised (fused) graph; above it
#: the plain graph is kept.
FUSED_TOLERANCE = 1e-4


class _Logits:
    """Wraps a classifier so that the traced signature is the input tensors -> logits."""

    @staticmethod
    def positional(model, names: Sequence[str]):
        import torch

        class Positional(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return self.model(**dict(zip(names, inputs))).logits

        return Positional().eval()

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


@contextlib.contextmanager
def _eager_attention(model):
    """Trace with transformers' eager attention (the same function as SDPA, written as
    MatMul/Softmax/MatMul, the pattern ONNX Runtime's optimizer fuses); restored after.

    Sets ``_attn_implementation`` on every config of the model (the stock classes share
    one; ``set_attn_implementation`` refuses nasprune's remote classes)."""
    configs = {id(m.config): m.config for m in model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation")}
    before = {key: c._attn_implementation for key, c in configs.items()}
    changed = []
    try:
        for key, config in configs.items():
            if before[key] not in (None, "eager"):
                try:
                    config._attn_implementation = "eager"
                except (AttributeError, ValueError, TypeError):
                    continue
                changed.append(key)
        yield
    finally:
        for key in changed:
            configs[key]._attn_implementation = before[key]


def _torchscript_export(model, names, example, path: Path, opset: int) -> None:
    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        # the exporter itself is deprecated (kept on purpose, see the module docstring);
        # tracing warns on Python branches (the padded example keeps the mask branch)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator",
                                category=UserWarning)
        torch.onnx.export(_Logits.positional(model, names), tuple(example[n] for n in names),
                          str(path), input_names=list(names), output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
                          dynamo=False)


def _dynamo_export(model, names, example, path: Path, opset: int) -> None:
    import torch

    require("onnxscript", "onnx")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=r".*treespec", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"# The axis name", category=UserWarning)
        torch.onnx.export(_Logits.keywords(model, names), (), str(path),
                          kwargs={n: example[n] for n in names}, input_names=list(names),
                          output_names=["logits"],
                          dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                          opset_version=max(opset, DYNAMO_OPSET), dynamo=True, verbose=False,
                          external_data=False)


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
               optimize: bool = True, exporter: str = "auto") -> dict:
    """Write ``model`` (a float PyTorch classifier) as ONNX with dynamic batch/sequence axes.

    The plain graph must match PyTorch within ``PARITY_TOLERANCE`` on inputs of other
    shapes (else :class:`NaspruneError`). With ``optimize``, ONNX Runtime's transformer
    optimizer fuses it (:func:`optimize_onnx`) and the fused graph replaces the plain one
    only when it keeps the inputs and axes and matches PyTorch within ``FUSED_TOLERANCE``
    on right-, left- and un-padded inputs; otherwise the plain graph stays and the reason is
    returned. ``exporter``: ``"torchscript"``, ``"dynamo"`` or ``"auto"`` (TorchScript, the
    dynamo exporter if that fails).

    Returns the report stored in ``metrics.json`` (``onnx``): ``exporter``, ``opset``,
    ``optimized``, ``max_abs_diff`` (of the graph written), ``plain_max_abs_diff``, and
    ``fusions``/``attention_heads``/``fused_max_abs_diff`` or ``why_not_optimized``
    (and ``why_not_torchscript`` when ``auto`` fell back).
    """
    if exporter not in EXPORTERS:
        raise NaspruneError(f"unknown ONNX exporter {exporter!r}; choose from "
                            + ", ".join(EXPORTERS))
    path = Path(path)
    model = model.eval().to("cpu")
    names = input_names(model.config)
    example = example_inputs(model.config, 2, 8, seed=0)
    report: dict[str, Any] = {}
    with _eager_attention(model):
        if exporter in ("auto", "torchscript"):
            try:
                _torchscript_export(model, names, example, path, opset)
                report.update(exporter="torchscript", opset=opset)
            except Exception as exc:  # torch raises many types; the reason is kept
                if exporter == "torchscript":
                    raise NaspruneError(f"TorchScript ONNX export failed: {exc}") from exc
                report["why_not_torchscript"] = f"{type(exc).__name__}: {_first_line(exc)}"
        if "exporter" not in report:
            try:
                _dynamo_export(model, names, example, path, opset)
            except NaspruneError:
                raise
            except Exception as exc:
                raise NaspruneError(f"dynamo ONNX export failed: {type(exc).__name__}: "
                                    f"{_first_line(exc)}") from exc
            report.update(exporter="dynamo", opset=max(opset, DYNAMO_OPSET))
    probes = _probes(model.config)
    plain = _max_diff(path, model, probes)
    if not plain <= PARITY_TOLERANCE:
        raise NaspruneError(f"ONNX export of {path.name} differs from PyTorch by {plain:.3g}")
    report.update(optimized=False, max_abs_diff=plain, plain_max_abs_diff=plain)
    if not optimize:
        report["why_not_optimized"] = "not requested"
        return report
    fused_path = path.with_name(path.stem + ".fused" + path.suffix)
    try:
        found = optimize_onnx(path, fused_path)
        why = _same_interface(fused_path, names)
        fused = _max_diff(fused_path, model, probes) if why is None else float("nan")
        if why is None and not fused <= FUSED_TOLERANCE:
            why = (f"the fused graph differs from PyTorch by {fused:.3g} "
                   f"(> {FUSED_TOLERANCE:g}); fusions {found['fusions']}")
        if why is None:
            os.replace(fused_path, path)
            report.update(optimized=True, max_abs_diff=fused, fused_max_abs_diff=fused, **found)
        else:
            report["why_not_optimized"] = why
    except Exception as exc:  # the optimizer's failures are many; the plain graph stays
        report["why_not_optimized"] = f"optimizer failed: {type(exc).__name__}: {_first_line(exc)}"
    finally:
        fused_path.unlink(missing_ok=True)
    return report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def export_onnx(model, path: str | os.PathLike, *, opset: int = ONNX_OPSET,
                check: bool = True) -> float:
    """Write ``model`` as a plain (unfused) ONNX graph with dynamic batch/sequence axes and
    return the largest logit difference to PyTorch on inputs of other shapes (raises above
    ``PARITY_TOLERANCE``). ``write_onnx`` is the export with the optimizer."""
    return write_onnx(model, path, opset=opset, optimize=False, exporter="torchscript")[
        "max_abs_diff"] if check else _plain_unchecked(model, path, opset)


def _plain_unchecked(model, path, opset: int) -> float:
    model = model.eval().to("cpu")
    names = input_names(model.config)
    with _eager_attention(model):
        _torchscript_export(model, names, example_inputs(model.config, 2, 8, seed=0),
                            Path(path), opset)
    return 0.0
