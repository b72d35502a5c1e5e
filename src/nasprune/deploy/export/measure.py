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


def measure(model, encoded, preset, pad_id: int, batch_size: int) -> tuple[dict, Any]:
    """The task metrics of ``model`` (any backend's) on ``encoded``, on the CPU, in padded
    length-sorted batches as ``nasprune serve`` runs it, plus ``batch_1``: how far the
    logits of each example run alone are from those in its batch (``max_abs_diff``) and
    how many predictions differ (``changed``); both 0 means batching never changes an
    answer. Also the predicted labels (None for regression), which ``flips`` compares."""
    import numpy as np
    import torch

    from nasprune.train.evaluation import predict, score

    cpu = torch.device("cpu")
    with torch.inference_mode():
        batched = predict(model, encoded, batch_size, device=cpu, pad_id=pad_id)
        alone = predict(model, encoded, 1, device=cpu, pad_id=pad_id)
    out = {k: float(v) for k, v in score(preset, batched, encoded.labels).items()}
    changed = 0 if preset.is_regression else int((batched.argmax(-1) != alone.argmax(-1)).sum())
    diff = float(np.abs(batched - alone).max()) if len(batched) else 0.0
    out["batch_1"] = {"max_abs_diff": diff, "changed": changed}
    return out, None if preset.is_regression else batched.argmax(-1)


def flips(before, after, labels) -> dict | None:
    """How many predictions changed from ``before`` to ``after`` (e.g. float to int8), and
    which way: a net change of the metric hides how many answers moved."""
    if before is None or after is None:
        return None
    import numpy as np

    labels = np.asarray(labels)
    right_before, right_after = before == labels, after == labels
    return {"changed": int((before != after).sum()),
            "right_to_wrong": int((right_before & ~right_after).sum()),
            "wrong_to_right": int((~right_before & right_after).sum()),
            "examples": int(len(labels))}


#: Batch sizes the export times its float backends at (1: one request; 8: the server's
#: default chunk; 32: a full default batch) and the sequence length.
SPEED_BATCHES = (1, 8, 32)
SPEED_SEQ_LEN = 128


def speed(models: dict, config, *, batches=SPEED_BATCHES, seq_len: int = SPEED_SEQ_LEN,
          rounds: int = 3) -> dict:
    """Median ms per batch of each model (``{"torch": ..., "onnx": ...}``: the graphs
    written, with torch's thread count, as ``nasprune serve`` runs them) at each batch size,
    rounds interleaved so that load from other processes hits all alike; and which is
    faster per batch size (what ``load(backend="auto")`` reads)."""
    import statistics
    import time

    import torch

    from nasprune.deploy.export.examples import example_inputs

    seq = min(seq_len, int(getattr(config, "max_position_embeddings", seq_len) or seq_len) - 2)
    times: dict[str, dict[str, list[float]]] = {str(b): {n: [] for n in models}
                                                for b in batches}
    with torch.inference_mode():
        for b in batches:
            inputs = example_inputs(config, b, seq, seed=0)
            inputs["attention_mask"][:] = 1
            for model in models.values():
                model(**inputs)  # warm-up
            for _ in range(rounds):
                for name, model in models.items():
                    started = time.perf_counter()
                    model(**inputs)
                    times[str(b)][name].append((time.perf_counter() - started) * 1e3)
    ms = {b: {n: statistics.median(v) for n, v in per.items()} for b, per in times.items()}
    return {"threads": torch.get_num_threads(), "seq_len": seq, "ms_per_batch": ms,
            "faster": {b: min(per, key=per.get) for b, per in ms.items()}}
