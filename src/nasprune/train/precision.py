"""Numeric precision of training, distillation and candidate evaluation (``--precision``).

``fp32`` (the default) computes as before; on CUDA its matrix products may use TF32 (a
10-bit mantissa inside fp32 matmuls, what Ampere and later GPUs are fast at). ``bf16`` and
``fp16`` run forward passes under ``torch.autocast``: matrix products in half precision,
softmax, norms and losses in fp32, while weights and optimiser state stay fp32, so a
checkpoint is the same kind of file. fp16's small range needs a gradient scaler
(``torch.amp.GradScaler``); bf16 has fp32's range and needs none, and runs on CPUs too.
"""

from __future__ import annotations

import contextlib

import torch

from nasprune.errors import NaspruneError

#: Each ``--precision`` and its autocast dtype; ``config.PRECISIONS`` names the same ones
#: without importing torch (tests/test_precision.py checks that they agree).
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check(name: str) -> str:
    if name not in DTYPES:
        raise NaspruneError(f"unknown precision {name!r}; choose one of " + ", ".join(DTYPES))
    return name


def autocast(device: torch.device | str, precision: str = "fp32"):
    """The forward-pass context of ``precision`` on ``device`` (nothing for fp32)."""
    dtype = DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


class Precision:
    """One run's precision on one device: autocast, scaled backward, the optimiser step."""

    def __init__(self, name: str = "fp32", device: torch.device | str = "cpu"):
        self.name, self.device = check(name), torch.device(device)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls
        self.scaler = torch.amp.GradScaler(self.device.type) if name == "fp16" else None

    def autocast(self):
        return autocast(self.device, self.name)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, parameters, max_norm: float = 1.0) -> None:
        """Clip the (unscaled) gradients, then step; fp16 skips a step with inf/nan."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


FP32 = Precision()
