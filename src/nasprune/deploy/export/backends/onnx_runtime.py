"""The ONNX Runtime model: an ONNX file with the call shape of a Hugging Face classifier."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from nasprune.errors import NaspruneError, require


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
                 param_shapes: Sequence[Sequence[int]] = (), device: Any = "cpu"):
        import torch

        ort = require("onnxruntime", "onnx")
        providers = execution_providers(device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise NaspruneError(f"cannot open {path} with ONNX Runtime: {exc}") from exc
        self.path = Path(path)
        self.config = config
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._param_shapes = [tuple(s) for s in param_shapes]
        self.device = torch.device("cpu")  # where inputs go: they are fed as numpy arrays
        self.dtype = torch.float32
        self.providers = self.session.get_providers()

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


def execution_providers(device: Any = "cpu") -> list:
    """ONNX Runtime's execution providers for ``device``: the CPU's, or on ``cuda[:N]``
    the CUDA one on that GPU (then the CPU one, for ops it lacks) when this ONNX Runtime
    has it (``pip install onnxruntime-gpu``); refused otherwise."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    ort = require("onnxruntime", "onnx")
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                "CPUExecutionProvider"]
    raise NaspruneError(f"this ONNX Runtime cannot run on {device} (CUDA needs the "
                        "onnxruntime-gpu package); use the PyTorch backend or the CPU")


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
