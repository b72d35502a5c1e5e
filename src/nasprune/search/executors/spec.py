"""What a parallel worker needs to rebuild the search's evaluator, as one picklable value.

A worker builds its evaluator **once** from this spec (the super-network's weights, config
and the tokenised split it scores on) and then evaluates one candidate at a time. Ray ships it
once through the object store (``ray.put``); every actor reads it from there instead of
re-reading checkpoints.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any


@dataclass
class EvaluatorSpec:
    """Everything a worker needs to rebuild a ``SubnetEvaluator``; picklable, no file paths.

    Weights are numpy arrays so that Ray can map them straight from its object store
    (one copy per node, not per actor). Calling the spec builds the evaluator.
    """

    model_class: type
    config: Any  # the model's PretrainedConfig
    weights: dict[str, Any]  # name -> numpy array (or a CPU tensor for dtypes numpy lacks)
    order: dict | None
    examples: Any  # nasprune.data.encode.Encoded: the split the search scores on
    preset: Any  # nasprune.data.presets.TaskPreset
    seq_len: int = 128
    latency_repeats: int = 10
    latency_warmup: int = 2
    batch_size: int = 64
    pad_id: int = 0
    latency: bool = False
    latency_batch_size: int = 1
    seed: int = 0
    masked: bool = False
    device: str = "cpu"  # with its index: workers of a cuda:1 run use cuda:1
    precision: str = "fp32"

    @classmethod
    def from_evaluator(cls, evaluator) -> EvaluatorSpec:
        """The spec of an in-process ``SubnetEvaluator`` (weights copied to CPU)."""
        from nasprune.core.models import model_device

        supernet = evaluator.supernet
        with supernet.full_tree():  # the full module tree, whatever use() block is open
            state = supernet.model.state_dict()
        weights = {}
        for name, tensor in state.items():
            tensor = tensor.detach().to("cpu")
            try:
                weights[name] = tensor.numpy()
            except TypeError:  # bfloat16 and friends: keep the tensor
                weights[name] = tensor.clone()
        return cls(
            model_class=type(supernet.model), config=supernet.model.config, weights=weights,
            order=supernet.order, examples=evaluator.examples, preset=evaluator.preset,
            seq_len=evaluator.cost.seq_len, latency_repeats=evaluator.cost.repeats,
            latency_warmup=evaluator.cost.warmup, batch_size=evaluator.batch_size,
            pad_id=evaluator.pad_id, latency=evaluator.latency,
            latency_batch_size=evaluator.latency_batch_size, seed=evaluator.seed,
            masked=evaluator.masked, device=str(model_device(supernet.model)),
            precision=evaluator.precision)

    def build(self, device: str | None = None):
        """A ``SubnetEvaluator`` over a fresh copy of the super-network on ``device``."""
        import torch

        from nasprune.core.cost import CostModel
        from nasprune.core.supernet import Supernet
        from nasprune.search.objective import SubnetEvaluator

        model = self.model_class(self.config)
        state = {}
        with warnings.catch_warnings():  # object-store arrays are read-only; they are copied
            warnings.simplefilter("ignore", UserWarning)
            for name, value in self.weights.items():
                state[name] = value if torch.is_tensor(value) else torch.from_numpy(value)
        model.load_state_dict(state, strict=True)
        del state
        model.to(device or self.device).eval()
        supernet = Supernet(model)
        supernet.order = self.order
        cost = CostModel(supernet, self.seq_len, repeats=self.latency_repeats,
                         warmup=self.latency_warmup)
        return SubnetEvaluator(
            supernet, self.examples, self.preset, cost=cost, batch_size=self.batch_size,
            pad_id=self.pad_id, latency=self.latency,
            latency_batch_size=self.latency_batch_size, seed=self.seed, masked=self.masked,
            precision=self.precision)

    def __call__(self):
        return self.build()
