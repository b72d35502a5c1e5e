"""Example inputs of an exported classifier: for tracing it, and for checking parity."""

from __future__ import annotations

from nasprune.core.models import uses_token_types


def input_names(config) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if uses_token_types(config) else names


def example_inputs(config, batch: int, seq: int, seed: int) -> dict:
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
