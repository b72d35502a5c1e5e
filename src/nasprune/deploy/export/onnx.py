"""ONNX Runtime and int8 backends of an export.

``write_onnx`` writes a float PyTorch classifier as ONNX with dynamic batch and sequence
axes, checks its parity, and runs ONNX Runtime's transformer optimizer on it (attention,
LayerNorm and GELU fusion, with each layer's own head count), keeping the fused graph only
when it matches PyTorch; ``export_onnx`` is the plain export without the optimizer.
``quantize_onnx`` / ``quantize_torch`` are dynamic int8 quantization of the linear layers;
:class:`OnnxClassifier` runs an ONNX file with the call shape of a Hugging Face sequence
classifier.

Exporter and quantizer choices (measured with torch 2.13, onnxruntime 1.32, onnxscript
0.7, torchao 0.18; the reasons are in docs/export.md):

- the graph is traced with the TorchScript exporter, because ONNX Runtime's optimizer
  fuses attention only in that graph; the dynamo exporter (``exporter="dynamo"``, needs
  ``onnxscript``) works for every family and layout but its attention stays unfused
  (``fuse_attention: failed to match mask path``), and ``"auto"`` falls back to it when the
  TorchScript exporter fails (e.g. once torch removes it);
- PyTorch int8 stays on ``torch.ao.quantization.quantize_dynamic``: torchao's
  ``Int8DynamicActivationInt8WeightConfig`` runs about 30x slower in eager mode on CPU.

The deprecation warnings of these two kept APIs are silenced by their exact messages only.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

from nasprune.core.models import uses_token_types
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
#: The fused op types counted in the report.
FUSED_OPS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization",
             "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "FastGelu", "Gelu")


def input_names(config) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if uses_token_types(config) else names


def _example_inputs(config, batch: int, seq: int, seed: int) -> dict:
    """Random ids with the last row padded, so tracing keeps the attention mask."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vocab = int(getattr(config, "vocab_size", 100))
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, max(1, seq // 2):] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if uses_token_types(config):
        types_ = torch.zeros_like(ids)
        types_[:, seq // 2:] = 1
        out["token_type_ids"] = types_
    return out


# ------------------------------------------------------------------------- ONNX Runtime


class OnnxClassifier:
    """An ONNX Runtime session with the call shape of a HF sequence classifier.

    ``model(input_ids=..., attention_mask=..., token_type_ids=...).logits`` is a float
    torch tensor on the CPU, and ``config``/``device``/``eval()``/``parameters()`` exist, so
    code written for the PyTorch model (``nasprune serve``, ``training.evaluate``) runs
    either backend. ``parameters()`` yields meta tensors with the exported weight shapes
    (for counting only). Inference only.
    """

    training = False

    def __init__(self, path: str | os.PathLike, config, *, threads: int | None = None,
                 param_shapes: Sequence[Sequence[int]] = ()):
        import torch

        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise NaspruneError(f"cannot open {path} with ONNX Runtime: {exc}") from exc
        self.path = Path(path)
        self.config = config
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._param_shapes = [tuple(s) for s in param_shapes]
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, **_: Any):
        import numpy as np
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutput

        if input_ids is None:
            raise NaspruneError("the ONNX model needs input_ids")
        ids = _numpy(input_ids)
        given = {"input_ids": ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}
        feeds = {}
        for name in self.input_names:
            value = given.get(name)
            feeds[name] = (np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids)
                           ) if value is None else _numpy(value)
        logits = self.session.run(["logits"], feeds)[0]
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))

    forward = __call__

    def eval(self) -> OnnxClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxClassifier:
        if mode:
            raise NaspruneError("an ONNX Runtime model is inference-only")
        return self

    def to(self, device=None, *args: Any, **kwargs: Any) -> OnnxClassifier:
        if device is not None and str(device) != "cpu":
            raise NaspruneError(f"the ONNX Runtime backend runs on the CPU, not {device}")
        return self

    def parameters(self) -> Iterator:
        import torch

        return iter([torch.empty(s, device="meta") for s in self._param_shapes])

    def num_parameters(self) -> int:
        return sum(int(_prod(s)) for s in self._param_shapes)

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.path.name}, inputs={self.input_names})"


def _numpy(value):
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.int64)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


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
    probes = [_example_inputs(config, 3, 13, seed=1), _example_inputs(config, 1, 5, seed=2)]
    left = _example_inputs(config, 4, 23, seed=3)
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


def _constant(graph_index: dict, name: str):
    from onnx import numpy_helper

    init = graph_index["init"].get(name)
    if init is not None:
        return numpy_helper.to_array(init)
    node = graph_index["prod"].get(name)
    if node is not None and node.op_type == "Constant" and node.attribute:
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def pin_head_counts(model_proto) -> list[int]:
    """Write each attention layer's own head count into its graph, in place.

    transformers 5 splits heads with ``view(batch, seq, -1, head_dim)``, so the graph's
    Reshape targets say ``-1`` heads and ONNX Runtime's optimizer cannot tell a layer's
    head count (it would take ``num_heads`` from its arguments, one for all layers, wrong
    for pruned layers). For every Reshape of a projection ``MatMul(x, W) + b`` to ``(.., -1,
    d)`` this replaces ``-1`` by ``W.shape[1] / d``: the value the ``-1`` resolves to, so the
    graph computes the same. Returns the head counts written (one per Q, K, V reshape).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    index = {"init": {i.name: i for i in graph.initializer},
             "prod": {o: n for n in graph.node for o in n.output}}
    pinned: list[int] = []
    new_nodes = []
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        concat = index["prod"].get(node.input[1])
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
            continue
        heads, size = _constant(index, concat.input[2]), _constant(index, concat.input[3])
        if heads is None or size is None or heads.size != 1 or size.size != 1:
            continue
        if int(heads.ravel()[0]) != -1 or int(size.ravel()[0]) <= 0:
            continue
        add = index["prod"].get(node.input[0])
        weight = None
        if add is not None and add.op_type == "Add":
            for name in add.input:
                matmul = index["prod"].get(name)
                if matmul is not None and matmul.op_type == "MatMul":
                    weight = _constant(index, matmul.input[1])
        if weight is None or weight.ndim != 2 or weight.shape[1] % int(size.ravel()[0]):
            continue
        count = int(weight.shape[1]) // int(size.ravel()[0])
        base = f"{node.name or node.output[0]}/nasprune_heads"
        graph.initializer.append(numpy_helper.from_array(
            np.array([count], dtype=heads.dtype).reshape(heads.shape), base))
        new_nodes.append(helper.make_node(  # a Concat of its own: others may share the old one
            "Concat", [concat.input[0], concat.input[1], base, concat.input[3]],
            [base + "/shape"], name=base + "/concat", axis=0))
        node.input[1] = base + "/shape"
        pinned.append(count)
    graph.node.extend(new_nodes)
    if new_nodes:  # keep the graph topologically sorted: the new Concats before their use
        _topological_sort(graph)
    return pinned


def _topological_sort(graph) -> None:
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progress = False
        rest = []
        for node in pending:
            if all(i in produced for i in node.input):
                ordered.append(node)
                produced.update(node.output)
                progress = True
            else:
                rest.append(node)
        if not progress:  # leave anything unusual as it was (the optimizer sorts too)
            ordered.extend(rest)
            break
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


@contextlib.contextmanager
def _quiet_onnxruntime_tools():
    """ONNX Runtime's Python tools log hints and warnings on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    module=r"onnxruntime|onnx\b")
            yield
    finally:
        root.setLevel(level)


def optimize_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """ONNX Runtime's transformer optimizer on ``src`` (written to ``dst``), after
    :func:`pin_head_counts`; the mask stays a raw 0/1 attention mask (any padding side).

    Returns ``{"fusions": {op type: count}, "attention_heads": [per fused layer]}``. Does
    not check the result: :func:`write_onnx` compares it with PyTorch.
    """
    require("onnxruntime", "onnx")
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    proto = onnx.load(str(src))
    pin_head_counts(proto)
    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    with _quiet_onnxruntime_tools():
        # num_heads=0/hidden_size=0: read per layer from the (pinned) graph
        optimized = optimize_model(proto, model_type="bert", num_heads=0, hidden_size=0,
                                   optimization_options=options, opt_level=0)
        optimized.save_model_to_file(str(dst))
    nodes = optimized.model.graph.node
    counts = collections.Counter(n.op_type for n in nodes)
    heads = [next((a.i for a in n.attribute if a.name == "num_heads"), 0) for n in nodes
             if n.op_type in ("Attention", "MultiHeadAttention")]
    return {"fusions": {k: counts[k] for k in FUSED_OPS if counts[k]},
            "attention_heads": heads}


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
    example = _example_inputs(model.config, 2, 8, seed=0)
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
        _torchscript_export(model, names, _example_inputs(model.config, 2, 8, seed=0),
                            Path(path), opset)
    return 0.0


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

    with _quiet_onnxruntime_tools():
        # DefaultTensorType: outputs of contrib ops (fused graphs) have no inferred type
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         per_channel=per_channel, reduce_range=reduce_range,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return Path(dst)


def quantize_torch(model):
    """PyTorch dynamic int8 quantization of the ``nn.Linear`` layers, per output channel
    (a new model; the argument is left as it is).

    Uses ``torch.ao.quantization.quantize_dynamic`` (deprecated, still in torch 2.13; its
    replacement torchao is ~30x slower for this in eager mode on CPU: docs/export.md). When
    a torch no longer has it, this says so instead of failing somewhere else."""
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated",
                                category=UserWarning)
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError as exc:
            raise NaspruneError(
                f"PyTorch int8 needs torch.ao.quantization.quantize_dynamic, which torch "
                f"{torch.__version__} does not have; export with --format onnx --quantize "
                "int8 for ONNX Runtime int8") from exc
        return quantize_dynamic(copy.deepcopy(model).to("cpu").eval(),
                                {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
