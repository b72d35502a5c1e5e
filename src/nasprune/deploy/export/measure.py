"""What an export reports about the model it wrote: cost figures and validation metrics."""

from __future__ import annotations

from typing import Any

from nasprune.core.subnet import Subnet, encoder_flops, encoder_params
from nasprune.errors import NaspruneError


def cost_figures(supernet, subnet: Subnet, seq_len: int) -> dict:
    """The analytic costs at ``seq_len`` tokens (``CostModel``; the encoder formulas alone
    when it cannot be built for this model)."""
    try:
        from nasprune.core.cost import CostModel

        figures = CostModel(supernet, seq_len).summary(subnet)
    except (NaspruneError, ImportError, AttributeError):
        shape = supernet.shape
        figures = {
            "encoder_params": encoder_params(subnet, shape),
            "flops": encoder_flops(subnet, shape, seq_len),
            "flops_fraction": encoder_flops(subnet, shape, seq_len)
            / encoder_flops(shape.full, shape, seq_len),
        }
    figures["seq_len"] = seq_len
    return figures


def unpack_validation(validation) -> tuple[Any, Any]:
    """``(encoded, preset)`` of ``export_model(validation=...)``: a pair, a dict or None."""
    if validation is None:
        return None, None
    if isinstance(validation, dict):
        return validation["encoded"], validation["preset"]
    encoded, preset = validation
    return encoded, preset


def measure(model, encoded, preset, pad_id: int, batch_size: int) -> dict:
    """The task metrics of ``model`` (any backend's) on ``encoded``, on the CPU."""
    import torch

    from nasprune.train.evaluation import evaluate

    with torch.inference_mode():
        return {k: float(v) for k, v in evaluate(model, encoded, preset, batch_size,
                                                 device=torch.device("cpu"),
                                                 pad_id=pad_id).items()}
