"""AdamW as every training stage builds it: PyTorch's fused kernel where the parameters'
device has one.

On a CPU, ``torch.optim.AdamW`` defaults to a Python loop over the parameter tensors
(``_single_tensor_adam``: the foreach kernels are GPU-only), which took a quarter of the
default run's time on two cores (``benchmarks/results/run_time.md``); the fused kernel
updates every tensor in one call, with the same update rule.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices


def adamw(params: Iterable, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over ``params`` (tensors or parameter groups), fused when every tensor is a
    floating-point one on a device with fused kernels (CPU, CUDA, MPS, ...)."""
    params = list(params)
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    fused = bool(tensors) and all(
        t.is_floating_point() and t.device.type in _get_fused_kernels_supported_devices()
        for t in tensors)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
