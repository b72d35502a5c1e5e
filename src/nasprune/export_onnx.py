"""ONNX Runtime and int8 backends of an export.

``export_onnx`` writes a float PyTorch classifier as ONNX with dynamic batch and sequence
axes and checks its parity; ``quantize_onnx`` / ``quantize_torch`` are dynamic int8
quantization of the linear layers; :class:`OnnxClassifier` runs an ONNX file with the call
shape of a Hugging Face sequence classifier.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

from nasprune.errors import NaspruneError, require
from nasprune.models import uses_token_types

ONNX_OPSET = 17


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


def export_onnx(model, path: str | os.PathLike, *, opset: int = ONNX_OPSET,
                check: bool = True) -> float:
    """Write ``model`` (a float PyTorch classifier) as ONNX with dynamic batch/sequence axes.

    Uses the TorchScript exporter (``dynamo=False``), which needs no extra packages in
    torch 2.x and handles the stand-in modules of removed blocks. Returns the largest
    absolute logit difference to PyTorch on a fresh input of another shape (the parity
    check); raises when it exceeds 1e-3.
    """
    import torch

    path = Path(path)
    model = model.eval().to("cpu")
    names = input_names(model.config)
    example = _example_inputs(model.config, 2, 8, seed=0)

    class LogitsOnly(torch.nn.Module):  # the traced signature: positional ids -> logits
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    wrapper = LogitsOnly().eval()
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(example[n] for n in names), str(path),
                          input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    if not check:
        return 0.0
    probe = _example_inputs(model.config, 3, 13, seed=1)
    with torch.no_grad():
        expected = model(**probe).logits
    got = OnnxClassifier(path, model.config, threads=1)(**probe).logits
    diff = float((got - expected).abs().max())
    if not diff <= 1e-3:
        raise NaspruneError(f"ONNX export of {path.name} differs from PyTorch by {diff:.3g}")
    return diff


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """ONNX Runtime dynamic int8 quantization of the MatMul/Gemm weights (per channel:
    on fine-tuned MiniLM per-tensor scales cost about a point of SST-2 accuracy)."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # onnxruntime logs a pre-processing hint on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return Path(dst)


def quantize_torch(model):
    """PyTorch dynamic int8 quantization of the ``nn.Linear`` layers, per output channel
    (a new model; the argument is left as it is)."""
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(copy.deepcopy(model).to("cpu").eval(),
                                {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
