"""The bridge between search and model: evaluate one sub-network of a super-network.

``SubnetEvaluator(subnet, fidelity)`` is the ``evaluate`` callable of ``run_search``: the
task metric through ``Supernet.use()`` (cost grows with the sub-network) on all of
``examples`` (in a run, the search split; never the reported validation set) or a fixed
fraction of them, plus the costs the objectives need.
"""

from __future__ import annotations

import math

import torch

from nasprune.core.cost import CostModel
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.data.encode import Encoded, subset
from nasprune.data.presets import TaskPreset
from nasprune.train.evaluation import evaluate


class SubnetEvaluator:
    """Metrics of a sub-network: ``error``, ``metric``, costs; ``latency`` when asked for.

    ``masked=True`` evaluates the tutorial's way (full-size compute with zeroed heads and
    units) — only for baselines in benchmarks.
    """

    def __init__(self, supernet: Supernet, examples: Encoded, preset: TaskPreset, *,
                 cost: CostModel | None = None, batch_size: int = 64, pad_id: int = 0,
                 latency: bool = False, latency_batch_size: int = 1, seed: int = 0,
                 masked: bool = False, precision: str = "fp32"):
        self.supernet = supernet
        self.examples = examples
        self.preset = preset
        self.cost = cost or CostModel(supernet)
        self.batch_size, self.pad_id, self.seed = batch_size, pad_id, seed
        self.latency, self.latency_batch_size = latency, latency_batch_size
        self.masked = masked
        self.precision = precision  # train.precision: autocast of the metric's forwards
        self._subsets: dict[float, Encoded] = {}

    def _split(self, fidelity: float) -> Encoded:
        if fidelity >= 1.0:
            return self.examples
        if fidelity not in self._subsets:
            n = max(1, math.ceil(fidelity * len(self.examples)))
            self._subsets[fidelity] = subset(self.examples, n, self.seed)
        return self._subsets[fidelity]

    def __call__(self, subnet: Subnet, fidelity: float = 1.0) -> dict[str, float]:
        self.supernet.model.eval()
        view = self.supernet.masked if self.masked else self.supernet.use
        with torch.inference_mode(), view(subnet) as model:
            scores = evaluate(model, self._split(fidelity), self.preset, self.batch_size,
                              pad_id=self.pad_id, precision=self.precision)
        out = {
            "error": scores["error"],
            "metric": scores[self.preset.metric],
            **{name: value for name, value in scores.items() if name != "error"},
            "params": float(self.cost.params(subnet)),
            "encoder_params": float(self.cost.encoder_params(subnet)),
            "flops": float(self.cost.flops(subnet)),
        }
        if self.latency:
            out["latency"] = self.cost.latency_ms(subnet, self.latency_batch_size)
        return out
