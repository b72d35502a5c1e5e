"""ONNX Runtime's transformer optimizer on an exported graph, with each layer's own head count.

The optimizer fuses attention, LayerNorm and GELU; :func:`pin_head_counts` first writes
every attention layer's head count into the graph (a pruned model's layers differ).
Whether a fused graph is kept is decided by ``onnx_graph.write_onnx``, against PyTorch.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import warnings

from nasprune.errors import require

#: The fused op types counted in the report.
FUSED_OPS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization",
             "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "FastGelu", "Gelu")


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
def quiet_onnxruntime_tools():
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
    with quiet_onnxruntime_tools():
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
