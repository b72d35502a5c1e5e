"""What a sub-network costs: exact parameters, analytic FLOPs, measured latency.

Parameters and FLOPs are the pure functions of ``subnet`` plus the model's fixed part
(embeddings, pooler, classifier: everything outside the encoder layers), checked once
against the real module tree. Latency is measured on the *extracted* model, because that is
what gets deployed, and cached per (sub-network, batch size).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import nn

from nasprune.core import ANALYTIC_COSTS
from nasprune.core.subnet import Subnet, encoder_flops, encoder_params
from nasprune.core.supernet import Supernet
from nasprune.errors import NaspruneError

METRICS = ANALYTIC_COSTS


def count_params(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def dummy_inputs(model: nn.Module, batch_size: int, seq_len: int,
                 device: torch.device | str | None = None, seed: int = 0) -> dict:
    """Random token ids (no padding) of the given size for timing a model."""
    vocab = int(getattr(model.config, "vocab_size", 1000))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(5, vocab - 1), vocab, (batch_size, seq_len), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    device = device or next(model.parameters()).device
    return {k: v.to(device) for k, v in inputs.items()}


def device_sync(device: torch.device) -> Callable[[], None]:
    """What waits for ``device``'s queued kernels (a GPU runs asynchronously: without it
    a timing measures kernel launches); the device's own index, not the current one."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def measure_latency_ms(model: nn.Module, inputs: dict, *, repeats: int = 10, warmup: int = 2,
                       sync: Callable[[], None] | None = None) -> float:
    """Median wall time of ``model(**inputs)`` in milliseconds (inference mode)."""
    sync = sync or device_sync(inputs["input_ids"].device)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                sync()
                start = time.perf_counter()
                model(**inputs)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return statistics.median(times)


class CostModel:
    """Costs of the sub-networks of one super-network at one sequence length."""

    def __init__(self, supernet: Supernet, seq_len: int = 128, *, repeats: int = 10,
                 warmup: int = 2):
        self.supernet = supernet
        self.shape = supernet.shape
        self.seq_len = seq_len
        self.repeats, self.warmup = repeats, warmup
        with supernet.full_tree():
            total = count_params(supernet.model)
            in_layers = sum(count_params(layer) for layer in supernet.adapter.layers)
        expected = encoder_params(self.shape.full, self.shape)
        if in_layers != expected:
            raise NaspruneError(
                f"encoder layers hold {in_layers} parameters but the layout formula gives "
                f"{expected}; this {supernet.adapter.family} variant is not supported"
            )
        self.fixed_params = total - expected
        self._latency: dict[tuple[Subnet, int], float] = {}

    def encoder_params(self, subnet: Subnet) -> int:
        return encoder_params(subnet.validate(self.shape), self.shape)

    def params(self, subnet: Subnet) -> int:
        """Total parameters of the extracted model (fixed part + encoder layers)."""
        return self.fixed_params + self.encoder_params(subnet)

    def flops(self, subnet: Subnet) -> int:
        """Encoder FLOPs for one sequence of ``seq_len`` tokens."""
        return encoder_flops(subnet.validate(self.shape), self.shape, self.seq_len)

    def fraction(self, subnet: Subnet, metric: str = "params") -> float:
        """``metric(subnet) / metric(full)``; ``params`` is the total, ``flops`` encoder-only."""
        if metric not in METRICS:
            raise NaspruneError(
                f"unknown cost metric {metric!r}; choose one of {', '.join(METRICS)}")
        fn = getattr(self, metric)
        return fn(subnet) / fn(self.shape.full)

    def latency_ms(self, subnet: Subnet, batch_size: int = 1) -> float:
        """Median latency of the extracted sub-network on the super-network's device."""
        key = (subnet.validate(self.shape), int(batch_size))
        if key not in self._latency:
            model = self.supernet.extract(subnet)
            inputs = dummy_inputs(model, batch_size, self.seq_len)
            self._latency[key] = measure_latency_ms(model, inputs, repeats=self.repeats,
                                                    warmup=self.warmup)
            del model
        return self._latency[key]

    def summary(self, subnet: Subnet) -> dict:
        """The analytic costs as one flat JSON-ready dict (latency is measured on demand)."""
        return {
            "params": self.params(subnet),
            "encoder_params": self.encoder_params(subnet),
            "flops": self.flops(subnet),
            "params_fraction": self.fraction(subnet, "params"),
            "flops_fraction": self.fraction(subnet, "flops"),
        }
